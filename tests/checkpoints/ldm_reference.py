"""LDM's and taming-transformers' VQ autoencoder written down from their code, independently of diffusers and
of vaetrain's converter: the state dict an LDM `ddconfig` builds (names and shapes, as
`ldm/modules/diffusionmodules/model.py`'s Encoder/Decoder and `VQModel` register them) and its forward
pass computed on that state dict alone (GroupNorm of 32 groups with eps 1e-6, swish, Downsample padding
(0, 1, 0, 1) then a stride-2 convolution, nearest upsampling, single-head AttnBlock with 1x1 convolutions;
an attention after every residual block of a level whose resolution is in `attn_resolutions`).

The configs below keep the released models' structure (ch_mult, num_res_blocks, attn_resolutions at the
same resolution, hence the same level; z_channels, embed_dim, n_embed) with `ch` 128 -> 32 so that the
tests run in a second on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# models/first_stage_models/vq-f4/config.yaml, vq-f8/config.yaml, vq-f16/config.yaml (CompVis/latent-diffusion) and
# configs/imagenet_vqgan.yaml (CompVis/taming-transformers, the 1024-code ImageNet VQGAN)
VQ_F4 = dict(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=(), resolution=256, z_channels=3, embed_dim=3, n_embed=8192)
VQ_F8 = dict(ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(32,), resolution=256, z_channels=4, embed_dim=4, n_embed=16384)
VQ_F16 = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), resolution=256, z_channels=8, embed_dim=8, n_embed=16384)
TAMING_IMAGENET_1024 = dict(
    ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), resolution=256, z_channels=256, embed_dim=256, n_embed=1024
)
SMALL = dict(ch=32)  # the tests' width: LDM's GroupNorm of 32 groups needs multiples of 32
CODEBOOK = "quantize.embedding.weight"


def _resnet(shapes: dict, name: str, c_in: int, c_out: int) -> None:
    shapes |= {f"{name}.norm1.weight": (c_in,), f"{name}.norm1.bias": (c_in,), f"{name}.conv1.weight": (c_out, c_in, 3, 3), f"{name}.conv1.bias": (c_out,)}
    shapes |= {f"{name}.norm2.weight": (c_out,), f"{name}.norm2.bias": (c_out,), f"{name}.conv2.weight": (c_out, c_out, 3, 3), f"{name}.conv2.bias": (c_out,)}
    if c_in != c_out:
        shapes |= {f"{name}.nin_shortcut.weight": (c_out, c_in, 1, 1), f"{name}.nin_shortcut.bias": (c_out,)}


def _attention(shapes: dict, name: str, c: int) -> None:
    shapes |= {f"{name}.norm.weight": (c,), f"{name}.norm.bias": (c,)}
    for part in ("q", "k", "v", "proj_out"):
        shapes |= {f"{name}.{part}.weight": (c, c, 1, 1), f"{name}.{part}.bias": (c,)}


def _conv(shapes: dict, name: str, c_out: int, c_in: int, kernel: int) -> None:
    shapes |= {f"{name}.weight": (c_out, c_in, kernel, kernel), f"{name}.bias": (c_out,)}


def ldm_vq_shapes(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels, embed_dim, n_embed, in_channels=3, out_ch=3) -> dict:
    """Name -> shape of every tensor of LDM's / taming's VQModel with this ddconfig."""
    shapes: dict = {}
    levels = len(ch_mult)
    _conv(shapes, "encoder.conv_in", ch, in_channels, 3)
    block_in, size = ch, resolution
    for level in range(levels):
        for block in range(num_res_blocks):
            _resnet(shapes, f"encoder.down.{level}.block.{block}", block_in, ch * ch_mult[level])
            block_in = ch * ch_mult[level]
            if size in attn_resolutions:
                _attention(shapes, f"encoder.down.{level}.attn.{block}", block_in)
        if level != levels - 1:
            _conv(shapes, f"encoder.down.{level}.downsample.conv", block_in, block_in, 3)
            size //= 2
    for half in ("encoder", "decoder"):
        c = ch * ch_mult[-1]
        _resnet(shapes, f"{half}.mid.block_1", c, c)
        _attention(shapes, f"{half}.mid.attn_1", c)
        _resnet(shapes, f"{half}.mid.block_2", c, c)
    shapes |= {"encoder.norm_out.weight": (block_in,), "encoder.norm_out.bias": (block_in,)}
    _conv(shapes, "encoder.conv_out", z_channels, block_in, 3)
    _conv(shapes, "quant_conv", embed_dim, z_channels, 1)
    shapes[CODEBOOK] = (n_embed, embed_dim)
    _conv(shapes, "post_quant_conv", z_channels, embed_dim, 1)
    block_in = ch * ch_mult[-1]
    _conv(shapes, "decoder.conv_in", block_in, z_channels, 3)
    for level in reversed(range(levels)):
        for block in range(num_res_blocks + 1):
            _resnet(shapes, f"decoder.up.{level}.block.{block}", block_in, ch * ch_mult[level])
            block_in = ch * ch_mult[level]
            if size in attn_resolutions:
                _attention(shapes, f"decoder.up.{level}.attn.{block}", block_in)
        if level != 0:
            _conv(shapes, f"decoder.up.{level}.upsample.conv", block_in, block_in, 3)
            size *= 2
    shapes |= {"decoder.norm_out.weight": (block_in,), "decoder.norm_out.bias": (block_in,)}
    _conv(shapes, "decoder.conv_out", out_ch, block_in, 3)
    return shapes


def random_ldm_vq(ddconfig: dict, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Random tensors for every name: convolutions scaled by their fan-in, norms around 1, biases and the
    codebook random too (so that a tensor under a wrong name changes the outputs)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in ldm_vq_shapes(**ddconfig).items():
        value = torch.randn(shape, generator=generator, dtype=dtype)
        if name == CODEBOOK:
            tensors[name] = value
        elif len(shape) == 4:
            tensors[name] = value / (shape[1] * shape[2] * shape[3]) ** 0.5
        else:
            tensors[name] = 0.1 * value + (1.0 if ".norm" in name and name.endswith("weight") else 0.0)
    return tensors


def _group_norm(sd, name, x):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def _conv2d(sd, name, x, stride=1, padding=1):
    return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], stride=stride, padding=padding)


def _resnet_forward(sd, name, x):
    h = _conv2d(sd, f"{name}.conv1", F.silu(_group_norm(sd, f"{name}.norm1", x)))
    h = _conv2d(sd, f"{name}.conv2", F.silu(_group_norm(sd, f"{name}.norm2", h)))
    shortcut = _conv2d(sd, f"{name}.nin_shortcut", x, padding=0) if f"{name}.nin_shortcut.weight" in sd else x
    return shortcut + h


def _attention_forward(sd, name, x):
    b, c, height, width = x.shape
    h = _group_norm(sd, f"{name}.norm", x)
    q, k, v = (_conv2d(sd, f"{name}.{part}", h, padding=0).reshape(b, c, height * width) for part in ("q", "k", "v"))
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * c**-0.5, dim=2)  # [query position, key position]
    attended = torch.einsum("bcj,bij->bci", v, weights).reshape(b, c, height, width)
    return x + _conv2d(sd, f"{name}.proj_out", attended, padding=0)


def _mid(sd, half, h):
    h = _resnet_forward(sd, f"{half}.mid.block_1", h)
    return _resnet_forward(sd, f"{half}.mid.block_2", _attention_forward(sd, f"{half}.mid.attn_1", h))


def _level_blocks(sd, prefix):
    return sorted({int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)})


def ldm_encode(sd: dict, images: torch.Tensor) -> torch.Tensor:
    """quant_conv(encoder(images)): the latent before quantisation."""
    levels = len({k.split(".")[2] for k in sd if k.startswith("encoder.down.")})
    h = _conv2d(sd, "encoder.conv_in", images)
    for level in range(levels):
        for block in _level_blocks(sd, f"encoder.down.{level}.block."):
            h = _resnet_forward(sd, f"encoder.down.{level}.block.{block}", h)
            if f"encoder.down.{level}.attn.{block}.q.weight" in sd:
                h = _attention_forward(sd, f"encoder.down.{level}.attn.{block}", h)
        if level != levels - 1:
            h = _conv2d(sd, f"encoder.down.{level}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, padding=0)
    h = _conv2d(sd, "encoder.conv_out", F.silu(_group_norm(sd, "encoder.norm_out", _mid(sd, "encoder", h))))
    return _conv2d(sd, "quant_conv", h, padding=0)


def ldm_quantize(sd: dict, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """taming's VectorQuantizer2: the nearest code of every position (indices, quantised latents)."""
    codebook = sd[CODEBOOK]
    flat = latents.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
    indices = torch.cdist(flat, codebook).argmin(dim=1)
    b, _, height, width = latents.shape
    return indices.reshape(b, height, width), codebook[indices].reshape(b, height, width, -1).permute(0, 3, 1, 2)


def ldm_decode(sd: dict, quantized: torch.Tensor) -> torch.Tensor:
    """decoder(post_quant_conv(quantized))."""
    levels = len({k.split(".")[2] for k in sd if k.startswith("decoder.up.")})
    h = _conv2d(sd, "decoder.conv_in", _conv2d(sd, "post_quant_conv", quantized, padding=0))
    h = _mid(sd, "decoder", h)
    for level in reversed(range(levels)):
        for block in _level_blocks(sd, f"decoder.up.{level}.block."):
            h = _resnet_forward(sd, f"decoder.up.{level}.block.{block}", h)
            if f"decoder.up.{level}.attn.{block}.q.weight" in sd:
                h = _attention_forward(sd, f"decoder.up.{level}.attn.{block}", h)
        if level != 0:
            h = _conv2d(sd, f"decoder.up.{level}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return _conv2d(sd, "decoder.conv_out", F.silu(_group_norm(sd, "decoder.norm_out", h)))

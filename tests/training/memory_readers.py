"""Memory readers for CPU tests of the memory budget (named on the command line as
`--memory.reader tests.training.memory_readers.LocalParameterBytes`)."""

from torch.distributed.tensor import DTensor

from vaetrain.training.memory_budget import MemoryReader


class LocalParameterBytes(MemoryReader):
    """The bytes of this process's own share of the trained networks' parameters (autoencoder,
    discriminator, EMA): half of them, roughly, when two processes shard the model with FSDP2."""

    def start(self, module) -> None:
        self.module = module

    def peak_bytes(self) -> int:
        networks = (self.module.autoencoder, self.module.discriminator, self.module.ema)
        local = [p.to_local() if isinstance(p, DTensor) else p for network in networks for p in network.parameters()]
        return sum(t.numel() * t.element_size() for t in local)


class InputSizeReader(MemoryReader):
    """A stand-in for CUDA's peak on CPU: `bytes_per_value` x the largest batch (values) the encoder was
    given since `start`, so larger images and micro-batches need proportionally more "memory"."""

    def __init__(self, bytes_per_value: int) -> None:
        self.bytes_per_value = bytes_per_value
        self.largest = 0
        self.hook = None

    def start(self, module) -> None:
        self.largest = 0
        if self.hook is not None:
            self.hook.remove()
        self.hook = module.autoencoder.encoder.register_forward_pre_hook(self._record)

    def _record(self, encoder, inputs) -> None:
        self.largest = max(self.largest, inputs[0].numel())

    def peak_bytes(self) -> int:
        return self.bytes_per_value * self.largest

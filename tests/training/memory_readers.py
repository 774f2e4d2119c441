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

"""The training state of a `vq` family's codebook (`Codebook`): what keeps its codes alive (EMA updates,
k-means initialisation, dead-code restarts) and the use counts the diagnostics read, applied once per
generator step after a finite update (see `models.quantizer`'s docstring for the references)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vaetrain.models.quantizer.config import QuantizerConfig
from vaetrain.models.quantizer.lookup import assign, full
from vaetrain.models.quantizer.reservoir import Reservoir


def kmeans(samples: torch.Tensor, clusters: int, iterations: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means from `clusters` samples drawn with replacement (lucidrains' `kmeans`: empty clusters
    keep their previous centre)."""
    picks = torch.randint(len(samples), (clusters,), generator=generator).to(samples.device)
    centres = samples[picks].clone()
    for _ in range(iterations):
        assign = torch.argmin(torch.cdist(samples, centres), dim=1)
        counts = torch.bincount(assign, minlength=clusters).float()
        sums = torch.zeros_like(centres).index_add_(0, assign, samples)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    return centres


def statistics(flat: torch.Tensor, indices: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each code's count (size,) and the sum of its encoder outputs (size, d)."""
    counts = torch.bincount(indices, minlength=size).float()
    return counts, torch.zeros(size, flat.shape[1], device=flat.device).index_add_(0, indices, flat)


class Codebook(nn.Module):
    """The training state of a `vq` family's codebook: EMA statistics (checkpointed buffers) and what the
    current accumulated batch contributes (pending, dropped after a skipped update). `observe` runs per
    micro-batch; `commit` once per generator step after a finite update; `discard` after a skipped one.

    `usage` is each code's uses per generator step, an EMA (`usage_decay`) that starts at the first commit's
    counts, as lucidrains' `EuclideanCodebook.init_embed_` starts `cluster_size` at the cluster sizes of the
    batch it initialised on: a code never used is 0, dead from the start (`ALIVE_USE`, the diagnostics), and
    restarted by the first commit at any `restart_threshold` (as Jukebox's first `update_k` after `init_k`
    restarts, at its threshold of 1, every code the batch left unused). A restarted code's use is set to the
    threshold (lucidrains' `replace`, `reset_cluster_size`'s default), so it is restarted again while it is
    used less.

    k-means and restarts draw from `reservoir` encoder outputs of the window, sampled alike whatever the
    accumulation and the number of processes (`reservoir`; `place` says which process this is)."""

    def __init__(self, config: QuantizerConfig, dim: int, reservoir: int = 4096) -> None:
        super().__init__()
        self.config, self.reservoir = config, reservoir
        size = config.size
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_avg", torch.zeros(size, dim))
        self.register_buffer("usage", torch.zeros(size))  # EMA of each code's uses per step: 0 (dead) until used
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("commits", torch.tensor(0))
        self.rank, self.processes = 0, 1
        self._pending: dict[str, Any] = {}

    def place(self, rank: int, processes: int) -> None:
        """This process's rank among the data-parallel processes (the samples' image numbers depend on it)."""
        self.rank, self.processes = rank, processes

    @property
    def kmeans_due(self) -> bool:
        """The next commit initialises the codebook by k-means."""
        return self.config.kind == "vq" and self.config.kmeans_init and not bool(self.initialised)

    @property
    def draws(self) -> bool:
        """The next commit draws samples (k-means or restarts)."""
        return self.kmeans_due or self.config.restart_threshold > 0

    @torch.no_grad()
    def observe(self, flat: torch.Tensor, indices: torch.Tensor, images: int | None = None) -> None:
        """One micro-batch's encoder outputs (N, d) and their codes (the lookup's, against the codebook of
        the step before), `images` images' rows in raster order (None: each row an image). Until k-means has
        run, the outputs themselves are kept too: the commit assigns them again, to the k-means codebook."""
        flat = flat.float()
        counts, sums = statistics(flat, indices, self.config.size)
        pending = self._pending
        if pending:
            counts, sums = pending["counts"] + counts, pending["sums"] + sums
        self._pending = {"counts": counts, "sums": sums}
        if self.draws:
            reservoir = pending.get("reservoir") or Reservoir(self.reservoir, int(self.commits), self.rank, self.processes)
            reservoir.add(flat, images or len(flat))
            self._pending["reservoir"] = reservoir
        if self.kmeans_due:
            self._pending["rows"] = flat if not pending else torch.cat([pending["rows"], flat])

    @torch.no_grad()
    def commit(self, weight: torch.Tensor, reduce_sum: Callable | None = None, gather: Callable | None = None) -> None:
        """After a finite update, in the references' order (Jukebox's `forward`: `init_k`, then `quantise`, then
        `update_k`; lucidrains' `EuclideanCodebook.forward`: `init_embed_` before the distances): k-means
        initialisation (first time), then the accumulated batch assigned to that codebook, then the EMA codebook
        update, the use counts and dead-code restarts. With several processes, `reduce_sum` sums the counts
        and sums over them, and `gather` (each process's tensor stacked) merges their samples."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        counts, sums = pending["counts"], pending["sums"]
        samples = pending["reservoir"].samples(gather) if self.draws else None
        config = self.config
        generator = torch.Generator().manual_seed(int(self.commits))  # the same draws on every process, and on resume
        if not bool(self.initialised) and config.kind == "vq":
            if self.kmeans_due:
                centres = kmeans(samples, config.size, config.kmeans_iters, generator)
                assign(weight, centres)
                rows = pending["rows"]  # this batch's codes are those of the k-means codebook, not of the one it replaced
                counts, sums = statistics(rows, torch.argmin(torch.cdist(rows, centres), dim=1), config.size)
            self.embed_avg.copy_(full(weight).float())  # Jukebox's `init_k` start: each code counted once, at itself
            self.cluster_size.fill_(1.0)
            self.initialised.fill_(True)
        if reduce_sum is not None:
            counts, sums = reduce_sum(counts), reduce_sum(sums)
        if config.ema_decay is not None:  # rosinality/vq-vae-2-pytorch `Quantize.forward`, eps 1e-5
            decay, eps = config.ema_decay, 1e-5
            self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
            self.embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + eps) / (total + config.size * eps) * total
            assign(weight, self.embed_avg / smoothed[:, None])
        if int(self.commits) == 0:
            self.usage.copy_(counts)
        else:
            self.usage.mul_(config.usage_decay).add_(counts, alpha=1 - config.usage_decay)
        if config.restart_threshold > 0:  # Jukebox `update_k`: dead codes <- random recent encoder outputs
            dead = self.usage < config.restart_threshold
            if bool(dead.any()):
                picks = samples[torch.randint(len(samples), (int(dead.sum()),), generator=generator).to(samples.device)]
                assign(weight, picks, dead)
                self.embed_avg[dead] = picks
                self.cluster_size[dead] = 1.0
                self.usage[dead] = config.restart_threshold
        self.commits += 1

    def discard(self) -> None:
        self._pending = {}

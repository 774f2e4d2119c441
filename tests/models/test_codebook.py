"""The vq family's codebook state (`models.quantizer.Codebook`): the references' order in one commit
(initialise, assign, update), codes never used counted dead, and the samples drawn for k-means and restarts
independent of accumulation and of the number of processes."""

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch

from vaetrain.models.quantizer import ALIVE_USE, Codebook, QuantizerConfig, lookup
from vaetrain.training.diagnostics import DiagnosticsMonitor
from vaetrain.training.features.codebook import CodebookFeature

SIZE, DIM = 64, 4


def _clusters(per_cluster: int = 32, seed: int = 0) -> torch.Tensor:
    """SIZE well separated clusters of encoder outputs (rows), shuffled."""
    generator = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(SIZE, DIM, generator=generator)
    rows = centres[:, None] + 0.1 * torch.randn(SIZE, per_cluster, DIM, generator=generator)
    return rows.reshape(-1, DIM)[torch.randperm(SIZE * per_cluster, generator=generator)]


def _start() -> torch.Tensor:
    """diffusers' `VectorQuantizer` initialisation: uniform in +-1/codes."""
    return torch.empty(SIZE, DIM).uniform_(-1 / SIZE, 1 / SIZE, generator=torch.Generator().manual_seed(1))


def _indices(weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return lookup(weight, rows.T.reshape(1, DIM, 1, -1)).indices


def _error(weight: torch.Tensor, rows: torch.Tensor) -> float:
    return torch.mean((rows - weight[_indices(weight, rows)]) ** 2).item()


def _first_commit(rows: torch.Tensor, **quantizer) -> tuple[torch.Tensor, Codebook]:
    weight, codebook = _start(), Codebook(QuantizerConfig(codebook_size=SIZE, kmeans_init=True, **quantizer), DIM)
    torch.manual_seed(0)
    codebook.observe(rows, _indices(weight, rows))  # looked up against the codebook before k-means, as the forward does
    codebook.commit(weight)
    return weight, codebook


def test_restarts_keep_the_kmeans_codebook_they_are_committed_with():
    """k-means initialises, then the batch is assigned to the k-means codebook, then restarts read that
    assignment (Jukebox: `init_k`, `quantise`, `update_k`): no code the k-means codebook uses is restarted,
    and the quantisation error stays k-means'."""
    rows = _clusters()
    centres, _ = _first_commit(rows)
    used = torch.bincount(_indices(centres, rows), minlength=SIZE) > 0
    restarted, _ = _first_commit(rows, restart_threshold=1.0)
    assert int(used.sum()) >= SIZE - 4  # k-means from samples drawn with replacement may leave a few codes empty
    assert torch.equal(restarted[used], centres[used])
    assert _error(restarted, rows) <= _error(centres, rows) + 1e-7


def test_the_first_ema_update_moves_the_kmeans_codebook_by_the_batch_assigned_to_it():
    """k-means, then rosinality's `Quantize.forward` EMA update (by hand) with the counts and sums of the
    batch assigned to the k-means codebook, from the start each code counted once at its k-means centre."""
    rows = _clusters()
    centres, _ = _first_commit(rows)
    updated, _ = _first_commit(rows, ema_decay=0.9)
    assigned = _indices(centres, rows)
    counts = torch.bincount(assigned, minlength=SIZE).float()
    sums = torch.zeros(SIZE, DIM).index_add_(0, assigned, rows)
    decay, eps = 0.9, 1e-5
    cluster_size = decay * torch.ones(SIZE) + (1 - decay) * counts
    embed_avg = decay * centres + (1 - decay) * sums
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + SIZE * eps) * n
    torch.testing.assert_close(updated, embed_avg / smoothed[:, None], rtol=1e-5, atol=1e-6)


def test_a_code_never_used_is_dead_from_the_first_step_and_a_collapse_warns_within_a_short_run():
    """Every step's encoder outputs take codes 0-2 of 64: after one commit only those 3 are alive, and
    the diagnostics' collapse warning fires after its patience (200 steps), inside vq-tiny's 300."""
    config = QuantizerConfig(codebook_size=SIZE)
    codebook, monitor, warnings = Codebook(config, DIM), DiagnosticsMonitor(alarms=CodebookFeature.alarms), []
    rows, indices = torch.randn(30, DIM), torch.arange(30) % 3
    for step in range(300):
        codebook.observe(rows, indices)
        codebook.commit(torch.zeros(SIZE, DIM))
        alive = codebook.usage > ALIVE_USE
        if step == 0:
            assert alive.nonzero().flatten().tolist() == [0, 1, 2]
        warnings += monitor.update(step + 1, {"train/codebook_alive": alive.float().mean().item()}, gan_active=False)
    assert len(warnings) == 1 and "of the codebook stayed in use" in warnings[0]


def test_the_samples_come_from_every_micro_batch_alike_at_accumulation_1_and_2():
    """A reservoir of 64 rows, a window of two micro-batches of 64: every code restarted draws from both
    micro-batches, and the codebook is the one a single micro-batch of all 128 rows gives."""
    rows, indices = torch.randn(128, DIM, generator=torch.Generator().manual_seed(2)), torch.zeros(128, dtype=torch.long)
    config = QuantizerConfig(codebook_size=SIZE, restart_threshold=1e9)  # every code restarted at every commit
    whole, halves = Codebook(config, DIM, reservoir=64), Codebook(config, DIM, reservoir=64)
    one, two = torch.zeros(SIZE, DIM), torch.zeros(SIZE, DIM)
    whole.observe(rows, indices)
    whole.commit(one)
    halves.observe(rows[:64], indices[:64])
    halves.observe(rows[64:], indices[64:])
    halves.commit(two)
    assert torch.equal(one, two)
    first = (two[:, None] == rows[None, :64]).all(dim=2).any(dim=1)
    second = (two[:, None] == rows[None, 64:]).all(dim=2).any(dim=1)
    assert bool((first | second).all()) and 16 <= int(first.sum()) <= 48


class _Threads:
    """Threads standing in for processes: `gather` stacks every thread's tensor, a collective."""

    def __init__(self, count: int) -> None:
        self.count, self.slots, self.barrier = count, [None] * count, threading.Barrier(count, timeout=60)

    def gather(self, rank: int, tensor: torch.Tensor) -> torch.Tensor:
        self.slots[rank] = tensor
        self.barrier.wait()
        stacked = torch.stack(self.slots)
        self.barrier.wait()
        return stacked


def _train(layout: list[list[list[int]]], windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """`layout[rank][micro_batch]`: the images (of each window's 8) that process reads in that micro-batch.
    Two windows with k-means, EMA updates and restarts, a reservoir smaller than a window; rank 0's state."""
    config = QuantizerConfig(codebook_size=SIZE, ema_decay=0.9, kmeans_init=True, restart_threshold=1.0)
    threads, results = _Threads(len(layout)), {}

    def run(rank: int) -> None:
        weight, codebook = _start(), Codebook(config, DIM, reservoir=48)
        codebook.place(rank, len(layout))
        gather = partial(threads.gather, rank) if len(layout) > 1 else None
        for window in windows:
            for images in layout[rank]:
                flat = window[images].reshape(-1, DIM)
                codebook.observe(flat, _indices(weight, flat), images=len(images))
            codebook.commit(weight, gather and (lambda t: gather(t).sum(dim=0)), gather)
        results[rank] = {"weight": weight} | codebook.state_dict()

    with ThreadPoolExecutor(len(layout)) as pool:
        for done in [pool.submit(run, rank) for rank in range(len(layout))]:
            done.result()
    return results[0]


def test_kmeans_and_restarts_are_the_same_at_accumulation_1_and_2_and_on_2_or_4_processes():
    """The training stream's layout (image i of a process's micro-batch m is global image (m * B + i) *
    processes + rank): 1 process x 1 or 2 micro-batches, 2 processes x 1 or 2, 4 processes x 1."""
    windows = _clusters(per_cluster=4).reshape(2, 8, 16, DIM)  # 2 windows of 8 images of 16 rows (4x4 tokens)
    one = _train([[list(range(8))]], windows)
    layouts = {
        "k=2": [[[0, 1, 2, 3], [4, 5, 6, 7]]],
        "2 processes": [[[r, r + 2, r + 4, r + 6]] for r in range(2)],
        "2 processes, k=2": [[[r, r + 2], [r + 4, r + 6]] for r in range(2)],
        "4 processes": [[[r, r + 4]] for r in range(4)],
    }
    assert int(one["commits"]) == 2 and not torch.equal(one["weight"], _start())
    for name, layout in layouts.items():
        other = _train(layout, windows)
        for key, value in one.items():
            torch.testing.assert_close(other[key], value, rtol=1e-6, atol=1e-6, msg=f"{name}: {key}")

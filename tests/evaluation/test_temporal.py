"""PSNR by latent chunk and the temporal drift, on hand-made clips whose per-frame errors are known: a
reconstruction that is the original plus a constant e in every pixel has MSE e^2, so PSNR -20 log10(e) dB
(e = 0.1: 20 dB, 0.01: 40 dB, 0.001: 60 dB)."""

import pytest
import torch

from vaetrain.evaluation.metrics import ReconstructionMetrics
from vaetrain.evaluation.temporal import ChunkPSNR, chunk_index, temporal_drift


def _clip_with_errors(errors: list[float], side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(original, reconstruction) in [0, 1], (1, 3, T, side, side): frame t off by errors[t] everywhere."""
    original = torch.full((1, 3, len(errors), side, side), 0.5, dtype=torch.float64)
    offset = torch.tensor(errors, dtype=torch.float64).view(1, 1, -1, 1, 1)
    return original, original + offset


def test_chunk_index_is_the_first_frame_then_chunks_of_four():
    assert chunk_index(10).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert chunk_index(1).tolist() == [0]
    assert chunk_index(7, chunk=2).tolist() == [0, 1, 1, 2, 2, 3, 3]


def test_psnr_by_chunk_and_drift_of_a_nine_frame_clip():
    """Frame 1: 40 dB; frames 2-5: 20 dB; frames 6-9: 20, 20, 40, 40 -> chunks [40, 20, 30]; drift 30 - 20 = +10."""
    metric = ChunkPSNR()
    metric.update(*_clip_with_errors([0.01, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01]))
    chunks = metric.compute()
    assert chunks == pytest.approx([40.0, 20.0, 30.0], abs=1e-6)
    assert temporal_drift(chunks) == pytest.approx(10.0, abs=1e-6)


def test_clips_of_different_lengths_average_each_chunk_over_the_frames_that_reach_it():
    """Clip A (6 frames): 60 | 40 40 40 40 | 20. Clip B (10 frames): 40 | 20 20 20 20 | 20 20 20 20 | 20.
    Chunk 1: (60 + 40) / 2 = 50; chunk 2: (4 x 40 + 4 x 20) / 8 = 30; chunk 3: (20 + 4 x 20) / 5 = 20;
    chunk 4: 20. Drift: mean(20, 20) - 30 = -10 (later chunks worse)."""
    metric = ChunkPSNR()
    metric.update(*_clip_with_errors([0.001, 0.01, 0.01, 0.01, 0.01, 0.1]))
    metric.update(*_clip_with_errors([0.01] + [0.1] * 9))
    chunks = metric.compute()
    assert chunks == pytest.approx([50.0, 30.0, 20.0, 20.0], abs=1e-6)
    assert temporal_drift(chunks) == pytest.approx(-10.0, abs=1e-6)


def test_a_batch_of_clips_counts_every_clip():
    """Two clips in one batch: frame 1 at 40 and 20 dB -> 30; frames 2-5 at 20 and 40 -> 30."""
    first, second = _clip_with_errors([0.01, 0.1, 0.1, 0.1, 0.1]), _clip_with_errors([0.1, 0.01, 0.01, 0.01, 0.01])
    metric = ChunkPSNR()
    metric.update(torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]]))
    assert metric.compute() == pytest.approx([30.0, 30.0], abs=1e-6)


def test_drift_needs_three_chunks():
    assert temporal_drift([40.0, 20.0]) is None
    assert temporal_drift([40.0, 20.0, 25.0, 35.0]) == pytest.approx(10.0)


def test_reconstruction_metrics_report_chunks_and_drift_of_clips_in_minus_one_to_one():
    """Through `ReconstructionMetrics` (images in [-1, 1], so an error e in [0, 1] is 2e there)."""
    original, reconstruction = _clip_with_errors([0.01, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])
    metrics = ReconstructionMetrics()
    metrics.update((original * 2 - 1).float(), (reconstruction * 2 - 1).float())
    values = metrics.compute()
    assert [values[f"psnr_chunk{k}"] for k in (1, 2, 3)] == pytest.approx([40.0, 20.0, 30.0], abs=1e-4)
    assert values["temporal_drift"] == pytest.approx(10.0, abs=1e-4)
    assert "psnr_chunk4" not in values
    images = ReconstructionMetrics()
    images.update((original[:, :, 0] * 2 - 1).float(), (reconstruction[:, :, 0] * 2 - 1).float())
    assert "temporal_drift" not in images.compute()  # images have no chunks


def test_processes_that_saw_different_lengths_or_none_sync():
    """Each frame's (chunk, PSNR) is gathered whole: a process with 13-frame clips, one with 5-frame clips
    and one with none give the mean of all their frames per chunk (torchmetrics' sync stacks fixed states,
    which clips of different lengths would break)."""
    torch.manual_seed(0)
    a, b, c = ChunkPSNR(), ChunkPSNR(), ChunkPSNR()
    clips = [(torch.rand(1, 3, 13, 8, 8), torch.rand(1, 3, 13, 8, 8)), (torch.rand(2, 3, 5, 8, 8), torch.rand(2, 3, 5, 8, 8))]
    a.update(*clips[0])
    b.update(*clips[1])
    alone = ChunkPSNR()
    for clip in clips:
        alone.update(*clip)
    gathered = {"chunks": [torch.cat(b.chunks)], "psnr": [torch.cat(b.psnr)]}
    order = iter(name for name in a._reductions for _ in range(1))

    def gather(tensor, group=None):  # what a two-process all_gather returns: this process's, then the other's
        return [tensor, gathered[next(order)][0]]

    a._sync_dist(dist_sync_fn=gather)
    assert a.compute() == pytest.approx(alone.compute())
    assert len(a.compute()) == 4 and c.compute() == []

"""What a checkpoint records of the clips it trained on, and `eval` / `recon` past that length: one warning
(a `LongerThanTrained`, checked by category), and the per-chunk view in metrics.json and the report."""

import json

import pytest

from tests.conftest import TINY_WAN, fit_with_checkpoints, tiny_module, write_camera_videos_of_samples
from vaetrain.checkpoints import load_checkpoint
from vaetrain.checkpoints.references import trained_clip_length
from vaetrain.checkpoints.schema import RunRecord
from vaetrain.cli import main
from vaetrain.data import SampleDataModule
from vaetrain.errors import LongerThanTrained
from vaetrain.plan import longest_clip


def test_longest_clip_of_an_int_or_a_list_of_lengths():
    assert longest_clip(5) == 5
    assert longest_clip([5, 17, 9]) == 17
    assert longest_clip(0) is None and longest_clip(None) is None


def test_a_record_written_before_longest_clip_reads_the_datas_clip_length():
    assert RunRecord(data={"clip": {"frames": 9, "stride": 1}}).longest_clip() == 9
    assert RunRecord(plan={"longest_clip": 17}, data={"clip": {"frames": 9, "stride": 1}}).longest_clip() == 17
    assert RunRecord(data={"clip": None}).longest_clip() is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Wan trained one step on 5-frame clips (its checkpoint), and 9-frame videos of 16 px."""
    root = tmp_path_factory.mktemp("clip-lengths")
    videos = root / "videos"
    write_camera_videos_of_samples(videos, 3, frames=9, size=16)
    data = SampleDataModule(path=str(videos), frames=5, resolution=16, batch_size=2, val_size=1, num_workers=0, seed=0)
    fit_with_checkpoints(root / "run", tiny_module(autoencoder=TINY_WAN), data, 1, every=1)
    return root / "run" / "last.ckpt", videos


def test_the_checkpoint_records_the_longest_training_clip(trained):
    checkpoint, _ = trained
    assert load_checkpoint(checkpoint)[1].plan["longest_clip"] == 5
    assert trained_clip_length(checkpoint) == 5


def test_eval_past_the_trained_length_warns_once_and_reports_psnr_by_chunk(trained, tmp_path):
    checkpoint, videos = trained
    data = ["--data.path", str(videos), "--data.frames", "9", "--data.resolution", "16", "--data.num_workers", "0"]
    with pytest.warns(LongerThanTrained) as caught:
        assert main(["eval", str(checkpoint), *data, "--metrics", "psnr,ssim", "--precision", "32", "--out", str(tmp_path / "eval")]) == 0
    assert len([w for w in caught if w.category is LongerThanTrained]) == 1
    values = json.loads((tmp_path / "eval" / "metrics.json").read_text())[0]
    chunks = values["psnr_chunks"]
    assert len(chunks) == 3 and values["temporal_drift"] == pytest.approx((chunks[2]) - chunks[1])
    assert "PSNR by latent chunk" in (tmp_path / "eval" / "report.html").read_text()


@pytest.mark.slow  # ~8 s of CPU: `eval` whole; test_stream.py's no-warning test is the fast variant
def test_eval_within_the_trained_length_does_not_warn(trained, tmp_path, recwarn):
    checkpoint, videos = trained
    data = ["--data.path", str(videos), "--data.frames", "5", "--data.resolution", "16", "--data.num_workers", "0"]
    assert main(["eval", str(checkpoint), *data, "--metrics", "psnr", "--out", str(tmp_path / "eval")]) == 0
    values = json.loads((tmp_path / "eval" / "metrics.json").read_text())[0]
    assert len(values["psnr_chunks"]) == 2 and values["temporal_drift"] is None
    assert not [w for w in recwarn if w.category is LongerThanTrained]


@pytest.mark.slow  # the command end to end; test_stream.py's `reconstruct_files` warning test is the fast variant
def test_recon_past_the_trained_length_warns_once_for_many_videos(trained, tmp_path):
    checkpoint, videos = trained
    with pytest.warns(LongerThanTrained) as caught:
        assert main(["recon", str(checkpoint), str(videos), "--out", str(tmp_path / "recon"), "--precision", "bf16"]) == 0
    assert len([w for w in caught if w.category is LongerThanTrained]) == 1
    assert len(list((tmp_path / "recon").glob("*.mp4"))) == 3

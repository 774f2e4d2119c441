"""Long runs with real `vaetrain fit` processes: SIGTERM saves and the resumed run ends like an uninterrupted
one; a SIGKILL at any moment, mid-write included, leaves an intact checkpoint; a full disk is one line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import write_images
from vaetrain.checkpoints.schema import load_checkpoint

ROOT = Path(__file__).parents[2]
SMALL = [
    "--config",
    "configs/tiny.yaml",
    "--model.autoencoder.block_out_channels=[8,16]",
    "--model.autoencoder.norm_num_groups=4",
    "--model.discriminator.base_channels=8",
    "--model.loss.perceptual_network=alex",
    "--model.loss.disc_start_step=2",
    "--data.resolution=32",
    "--data.batch_size=2",
    "--data.num_workers=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.limit_val_batches=0",
    "--trainer.precision=32",
    "--grid.every_n_steps=0",
    "--export.enabled=false",
    "--checkpoint.every_n_train_steps=1",
    "--checkpoint.save_top_k=-1",
    "--trainer.logger=false",
]


def _command(run: Path, folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vaetrain.cli", "fit", *SMALL, f"--data.path={folder}", f"--trainer.default_root_dir={run}", *extra]


def _env(**variables: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "WORLD_SIZE", "MASTER_", "NODE_RANK", "RANK"))}
    return clean | variables


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended early (exit {process.returncode})"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _state(run: Path) -> tuple[dict, dict]:
    checkpoint, record = load_checkpoint(run / "checkpoints" / "last.ckpt")
    return checkpoint["state_dict"], vars(record.counters)


@pytest.fixture
def folder(tmp_path):
    write_images(tmp_path / "images", 12)
    return tmp_path / "images"


def test_sigterm_saves_stops_and_the_resumed_run_ends_like_an_uninterrupted_one(tmp_path, folder):
    subprocess.run(_command(tmp_path / "straight", folder, "--trainer.max_steps=10"), check=True, cwd=ROOT, env=_env(), timeout=300)

    run = tmp_path / "interrupted"
    process = subprocess.Popen(_command(run, folder, "--trainer.max_steps=10"), cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / "checkpoints" / "step=0000004.ckpt").is_file(), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    _, counters = _state(run)
    assert 4 <= counters["generator_steps"] < 10  # saved where it was, not at the end

    subprocess.run(_command(run, folder, "--trainer.max_steps=10", "--ckpt_path=last"), check=True, cwd=ROOT, env=_env(), timeout=300)
    (expected, expected_counters), (actual, actual_counters) = _state(tmp_path / "straight"), _state(run)
    assert actual_counters == expected_counters
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key


def test_a_sigterm_before_the_first_checkpoint_resumes_into_the_same_last_ckpt(tmp_path, folder):
    """The SIGTERM save is the run's first checkpoint: the resumed run must keep writing last.ckpt (a
    last-v1.ckpt beside it would leave last.ckpt, what `eval` and `export` read, stale)."""
    run = tmp_path / "run"
    sparse = ("--trainer.max_steps=10", "--checkpoint.every_n_train_steps=1000", "--grid.every_n_steps=2")
    process = subprocess.Popen(_command(run, folder, *sparse), cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / "reconstructions" / "step_0000002.png").is_file(), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
    assert _state(run)[1]["generator_steps"] < 10

    subprocess.run(_command(run, folder, *sparse, "--ckpt_path=last"), check=True, cwd=ROOT, env=_env(), timeout=300)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert _state(run)[1]["generator_steps"] == 10


@pytest.mark.parametrize("moment", ["mid-write", pytest.param("between-writes", marks=pytest.mark.slow)])  # mid-write is the harder case
def test_a_kill_at_any_moment_leaves_an_intact_checkpoint_that_resumes(tmp_path, folder, moment):
    markers = tmp_path / "markers"
    markers.mkdir()
    run, env = tmp_path / "run", _env(VAETRAIN_TEST_MARKERS=str(markers), VAETRAIN_TEST_WRITE_PAUSE="0.02")
    slow = "--trainer.plugins=tests.training.storage.SlowCheckpointIO"
    process = subprocess.Popen(_command(run, folder, "--trainer.max_steps=1000", slow), cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    _wait_for(lambda: last.is_file() and (run / "checkpoints" / "step=0000002.ckpt").is_file(), process)
    if moment == "mid-write":
        _wait_for(lambda: any((run / "checkpoints").glob(".*.partial")), process)
    else:
        _wait_for(lambda: not (markers / "writing").is_file(), process)
    process.kill()
    process.wait(timeout=30)
    partials = list((run / "checkpoints").glob(".*.partial"))
    assert bool(partials) == (moment == "mid-write")  # the kill landed where it was meant to

    _, counters = _state(run)  # intact: loads weights-only, with its record
    steps = counters["generator_steps"]
    resumed = _command(run, folder, f"--trainer.max_steps={steps + 2}", "--ckpt_path=last")
    subprocess.run(resumed, check=True, cwd=ROOT, env=env, timeout=300)
    assert _state(run)[1]["generator_steps"] == steps + 2
    assert not list((run / "checkpoints").glob(".*.partial"))  # the next write of the same file cleared it


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_previous_checkpoint(tmp_path, folder):
    run = tmp_path / "run"
    full = "--trainer.plugins=tests.training.storage.FullDiskCheckpointIO"
    result = subprocess.run(
        _command(run, folder, "--trainer.max_steps=10", full), cwd=ROOT, env=_env(VAETRAIN_TEST_GOOD_SAVES="2"), capture_output=True, text=True, timeout=300
    )
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1
    assert last_line.startswith("vaetrain: error: checkpoint: cannot write ") and "step=0000002.ckpt" in last_line
    assert "No space left on device" in last_line and "previous checkpoint is intact" in last_line
    assert _state(run)[1]["generator_steps"] == 1  # step 1's files (step file and last) were written; step 2's was not
    assert not list((run / "checkpoints").glob(".*.partial"))

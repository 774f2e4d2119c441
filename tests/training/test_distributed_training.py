"""Real processes: 2 gloo ranks train like 1 process with the same global batch; their checkpoint resumes in 1."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import write_images

RUN = Path(__file__).with_name("ddp_run.py")
ROOT = Path(__file__).parents[2]


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "WORLD_SIZE", "MASTER_", "NODE_RANK", "RANK"))}


def train(folder, out, *args) -> dict:
    subprocess.run([sys.executable, str(RUN), str(folder), str(out), *args], check=True, env=clean_env(), cwd=ROOT, timeout=600)
    return torch.load(Path(out) / "final.pt", weights_only=True)


def test_two_processes_match_one_process_with_the_same_global_batch_then_resume_in_one(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, 14)
    two = train(folder, tmp_path / "two", "--devices", "2", "--steps", "4", "--micro-batch", "2")
    one = train(folder, tmp_path / "one", "--devices", "1", "--steps", "4", "--micro-batch", "4")
    assert two["accumulate"] == one["accumulate"] == 1  # global batch 4 = processes x micro-batch
    per_process = {"micro_batches"}  # counted by each process; the rest are global
    assert {k: v for k, v in two["counters"].items() if k not in per_process} == {k: v for k, v in one["counters"].items() if k not in per_process}
    assert two["counters"]["discriminator_steps"] == 2  # the GAN (and its adaptive weight) was active
    difference = {k: (two["state"][k].double() - one["state"][k].double()).abs().max().item() for k in one["state"]}
    # Attention key biases have an exactly zero gradient (softmax ignores a per-query constant), so Adam
    # turns pure rounding residue into lr-sized steps: they differ by at most steps x lr, in any two runs.
    free = {k for k in difference if k.endswith("to_k.bias")}
    assert all(difference[k] <= 4 * 1e-4 for k in free)
    worst = max(v for k, v in difference.items() if k not in free)
    assert worst < 1e-5, f"largest weight difference {worst}"

    resumed = train(
        folder, tmp_path / "resumed", "--devices", "1", "--steps", "6", "--micro-batch", "4", "--resume", str(tmp_path / "two" / "checkpoints" / "last.ckpt")
    )
    assert resumed["counters"]["generator_steps"] == 6
    assert resumed["counters"]["samples_seen"] == 6 * 4
    changed = any(not torch.equal(resumed["state"][k], two["state"][k]) for k in two["state"] if k.startswith("autoencoder."))
    assert changed


@pytest.mark.slow  # ~25 s of real processes; the default suite keeps DDP's own equivalence test (make test-slow runs this)
def test_end_to_end_tuning_trains_its_third_network_in_step_on_two_processes_and_resumes_in_one(tmp_path):
    """REPA-E's SiT (its own optimizer, role `trained`) under DDP: its gradients are averaged like the others', so
    both ranks hold the same SiT after every update; the run's checkpoint resumes in one process."""
    folder = tmp_path / "images"
    write_images(folder, 14)
    two = train(folder, tmp_path / "two", "--devices", "2", "--steps", "3", "--micro-batch", "2", "--end-to-end")
    assert two["counters"]["generator_steps"] == 3 and two["counters"]["discriminator_steps"] == 1
    ranks = [torch.load(tmp_path / "two" / f"sit_rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 0
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    resumed = train(
        folder,
        tmp_path / "resumed",
        "--devices",
        "1",
        "--steps",
        "4",
        "--micro-batch",
        "4",
        "--end-to-end",
        "--resume",
        str(tmp_path / "two" / "checkpoints" / "last.ckpt"),
    )
    assert resumed["counters"]["generator_steps"] == 4
    after = torch.load(tmp_path / "resumed" / "sit_rank0.pt", weights_only=True)
    assert any(not torch.equal(after[k], ranks[0][k]) for k in after if after[k].is_floating_point())  # the SiT trains on


@pytest.mark.slow  # 27 s of real processes; the default suite keeps DDP's own equivalence test (make test-slow runs this)
def test_gradnorm_with_two_processes_matches_one_process(tmp_path):
    """Gradient normalisation's norm is the global batch's (`losses.balance.global_norm`), so 2 processes x
    micro-batch 2 train like 1 process x 4, GAN and all."""
    folder = tmp_path / "images"
    write_images(folder, 14)
    two = train(folder, tmp_path / "two", "--devices", "2", "--steps", "4", "--micro-batch", "2", "--balance", "gradnorm")
    one = train(folder, tmp_path / "one", "--devices", "1", "--steps", "4", "--micro-batch", "4", "--balance", "gradnorm")
    assert two["counters"]["discriminator_steps"] == one["counters"]["discriminator_steps"] == 2
    difference = {k: (two["state"][k].double() - one["state"][k].double()).abs().max().item() for k in one["state"]}
    worst = max(v for k, v in difference.items() if not k.endswith("to_k.bias"))  # see the adaptive-weight test
    assert worst < 1e-5, f"largest weight difference {worst}"


@pytest.mark.parametrize("victim", [pytest.param(0, marks=pytest.mark.slow), 1])  # killing rank 1 stays in the default suite
def test_a_killed_process_makes_the_run_exit_nonzero_within_the_timeout(tmp_path, victim):
    folder = tmp_path / "images"
    write_images(folder, 14)
    timeout = 20
    process = subprocess.Popen(
        [sys.executable, str(RUN), str(folder), str(tmp_path), "--devices", "2", "--steps", "100000", "--timeout", str(timeout)],
        env=clean_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    markers = [tmp_path / f"started_rank{r}" for r in range(2)]
    deadline = time.monotonic() + 300
    while not all(m.exists() for m in markers) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert all(m.exists() for m in markers), "training did not start"
    pids = [int(m.read_text()) for m in markers]
    assert pids[0] == process.pid  # Lightning's launcher: rank 0 is the launched process, rank 1 its child
    os.kill(pids[victim], signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = 1 - victim
    if survivor == 0:
        code = process.wait(timeout=timeout + 60)
        assert code != 0
    else:  # rank 0 is gone: the child must notice and exit by itself
        while _alive(pids[1]) and time.monotonic() - killed_at < timeout + 60:
            time.sleep(0.5)
        process.wait(timeout=5)
        assert not _alive(pids[1])
    assert time.monotonic() - killed_at < timeout + 60


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead but not yet reaped
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow  # 64 s of real processes; the default suite keeps DDP's equivalence test (make test-slow runs this)
def test_fsdp_two_processes_match_one_export_and_resume_sharded_or_not(tmp_path):
    """`fsdp2` (FSDP2 through Lightning's ModelParallelStrategy) with 2 CPU processes: same weights as one
    unsharded process, an export gathered from the shards, and a checkpoint that resumes sharded on 2
    processes and unsharded on 1 to the same weights."""
    from diffusers import AutoencoderKL

    folder = tmp_path / "images"
    write_images(folder, 14)
    sharded = train(folder, tmp_path / "fsdp", "--devices", "2", "--steps", "4", "--micro-batch", "2", "--strategy", "fsdp", "--export", "--validate")
    one = train(folder, tmp_path / "one", "--devices", "1", "--steps", "4", "--micro-batch", "4")
    assert sharded["counters"] == one["counters"] | {"micro_batches": sharded["counters"]["micro_batches"]}
    difference = {k: (sharded["state"][k].double() - one["state"][k].double()).abs().max().item() for k in one["state"]}
    worst = max(v for k, v in difference.items() if not k.endswith("to_k.bias"))  # see the DDP test
    assert worst < 1e-5, f"largest weight difference {worst}"

    assert (tmp_path / "fsdp" / "reconstructions" / "step_0000004.png").is_file()  # grid: all ranks forward, rank 0 writes
    exported = AutoencoderKL.from_pretrained(tmp_path / "fsdp" / "diffusers")
    for key, value in exported.state_dict().items():
        assert torch.equal(value, sharded["state"][f"ema.module.{key}"]), key

    checkpoint = str(tmp_path / "fsdp" / "checkpoints" / "last.ckpt")
    resumed_sharded = train(folder, tmp_path / "r2", "--devices", "2", "--steps", "6", "--micro-batch", "2", "--strategy", "fsdp", "--resume", checkpoint)
    resumed_one = train(folder, tmp_path / "r1", "--devices", "1", "--steps", "6", "--micro-batch", "4", "--resume", checkpoint)
    assert resumed_sharded["counters"]["generator_steps"] == resumed_one["counters"]["generator_steps"] == 6
    assert resumed_sharded["counters"]["samples_seen"] == 6 * 4
    for key, value in resumed_one["state"].items():
        if not key.endswith("to_k.bias"):
            torch.testing.assert_close(resumed_sharded["state"][key], value, rtol=0, atol=1e-5)
    assert any(not torch.equal(resumed_one["state"][k], sharded["state"][k]) for k in sharded["state"] if k.startswith("autoencoder."))


@pytest.mark.slow  # two fsdp runs of real processes (the vq family's single-process resume is in test_vq.py)
@pytest.mark.parametrize(("strategy", "quantizer"), [("ddp", "ema"), ("fsdp", "ema"), ("ddp", "alive"), ("fsdp", "alive")])
def test_a_kept_alive_codebook_trains_across_processes_like_one_process(tmp_path, strategy, quantizer):
    """The vq family's EMA codebook updates sum the accumulated batch's statistics over processes, and k-means
    and restarts draw from samples of all processes' micro-batches (`models.quantizer.reservoir`), so 2 processes (DDP,
    or FSDP2 with the codebook sharded) and 1 process accumulating 2 micro-batches end with the codebook of
    1 process taking the batch whole."""
    folder = tmp_path / "images"
    write_images(folder, 14)
    one = train(folder, tmp_path / "one", "--devices", "1", "--steps", "3", "--micro-batch", "4", "--vq", quantizer)
    runs = {"2 processes": train(folder, tmp_path / "two", "--devices", "2", "--steps", "3", "--micro-batch", "2", "--strategy", strategy, "--vq", quantizer)}
    if quantizer == "alive":
        runs["accumulation 2"] = train(folder, tmp_path / "k2", "--devices", "1", "--steps", "3", "--micro-batch", "2", "--vq", quantizer)
    for name, run in runs.items():
        for key in ("autoencoder.quantize.embedding.weight", "codebook.cluster_size", "codebook.embed_avg", "codebook.usage"):
            torch.testing.assert_close(run["state"][key], one["state"][key], rtol=1e-6, atol=1e-5, msg=f"{name}: {key}")  # sums in another order
    assert not torch.equal(one["state"]["codebook.embed_avg"], torch.zeros_like(one["state"]["codebook.embed_avg"]))


@pytest.mark.slow  # 38 s; the budget's planning on CPU is covered by test_memory_budget.py in the default suite
def test_memory_plan_under_fsdp_is_measured_on_the_sharded_model(tmp_path):
    """`vaetrain fit --trainer.strategy fsdp2 --memory.max_memory ...` on 2 CPU processes: the probe runs after
    the module is sharded, so the peak it plans with (here: the parameter bytes a process holds, read by an
    injected reader) is half of what one unsharded process measures, and a budget only the sharded model
    fits is planned, not refused."""
    folder = tmp_path / "images"
    write_images(folder, 14)

    def fit(run: str, *extra: str) -> dict:
        command = [
            sys.executable,
            "-m",
            "vaetrain.cli",
            "fit",
            "--config",
            "configs/tiny.yaml",
            f"--data.path={folder}",
            "--data.resolution=32",
            "--data.batch_size=2",
            "--data.num_workers=0",
            "--model.autoencoder.block_out_channels=[32,64]",
            "--model.loss.perceptual_network=alex",
            "--trainer.accelerator=cpu",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--grid.every_n_steps=0",
            "--export.enabled=false",
            "--memory.reader=tests.training.memory_readers.LocalParameterBytes",
            "--memory.headroom=0",
            f"--trainer.default_root_dir={tmp_path / run}",
            *extra,
        ]
        subprocess.run(command, check=True, env=clean_env(), cwd=ROOT, timeout=600, stdout=subprocess.DEVNULL)
        return torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["vaetrain"]["plan"]

    whole = fit("one", "--memory.max_memory=1GB")["memory"]["peak_bytes"]
    plan = fit("sharded", "--trainer.devices=2", "--trainer.strategy=fsdp2", f"--memory.max_memory={int(0.7 * whole)}")
    assert plan["processes"] == 2 and plan["memory"]["max_memory"] == str(int(0.7 * whole))
    assert 0.45 * whole <= plan["memory"]["peak_bytes"] <= 0.55 * whole

"""The baseline people copy today: diffusers' research example `train_autoencoderkl.py`
(examples/research_projects/autoencoderkl/ in huggingface/diffusers), run unmodified with its own defaults on
the race's model size, data and training time, so recipe_race.py can put it in the same table.

The script is not vendored: pass its path (`--diffusers-script`; the race's RESULTS section names the commit
it was read at). Its extra dependencies (accelerate, transformers, taming-transformers) are not vaetrain's:
install them into a folder of their own and pass it as `--example-deps`:

    .venv/bin/pip install --no-deps --target /tmp/example-deps accelerate transformers tokenizers taming-transformers psutil

What this runner changes around the script, and nothing inside it:
- the model: `--model_config_name_or_path` a folder holding configs/tiny.yaml's architecture (the script's
  default downloads stabilityai/sd-vae-ft-mse's config);
- LPIPS: `lpips.LPIPS` gets `pnet_rand=True` (a randomly initialised VGG: torchvision's weights are not
  reachable offline; the race's LPIPS runs are random too). The script computes LPIPS under `no_grad`, so
  it only costs time there, as it would with real weights;
- the clock: training stops when `seconds` of training (from the first batch) have passed: its data loader,
  as `accelerator.prepare` returns it, ends its epochs after the deadline; the script then saves the model
  as it does at the end of training. Generator steps are counted on its generator optimizer;
- logging: no tracker (`Accelerator(log_with=None)`). Under its default TensorBoard tracker the script stops
  in `init_trackers` (the `--validation_image` list is not a valid hparam) and at its first validation image
  (a 5-D array); without `--validation_image` it stops at step 1. Validation still runs every 100 steps,
  unlogged, as its own cost.
"""

from __future__ import annotations

import functools
import json
import os
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN_DEFAULTS = ["--seed", "0"]
"""Everything else (lr 4.5e-6, AdamW, batch 4, L2 summed per image + 0.5 LPIPS, KL 1e-6, discriminator from
step 50001, no EMA, fp32, gradient clipping 1.0, checkpoints every 500 steps) is the script's default."""


def tiny_model_config(folder: Path) -> Path:
    """configs/tiny.yaml's AutoencoderKL, built as `vaetrain fit` builds it, saved as a diffusers config.json in `folder`."""
    from vaetrain.cli.fit import model_and_data

    module, _, _ = model_and_data(["--config", str(ROOT / "configs" / "tiny.yaml")])
    module.autoencoder.save_config(folder)
    return folder


def train_example(name: str, extra: list[str], *, out: Path, seconds: int, data: Path, train_list: Path, script: Path, deps: Path) -> dict:
    """Trains the example into OUT/NAME for `seconds` of training time and copies the saved model to
    OUT/NAME/diffusers (what the race evaluates); skipped when done. Returns generator steps and times."""
    run = out / name
    done = run / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    script = script.resolve()
    if not script.is_file():
        sys.exit(f"recipe_race: --diffusers-script {script} not found (diffusers' examples/research_projects/autoencoderkl/train_autoencoderkl.py)")
    files = [line for line in train_list.read_text().splitlines() if line]
    images = run / "images"  # the script reads a folder (datasets' imagefolder): the training list as links
    if not images.is_dir():  # made whole, then renamed: an interrupted start does not leave a partial folder behind
        partial = run / "images.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for index, relative in enumerate(files):
            (partial / f"{index:06d}{Path(relative).suffix}").symlink_to(data / relative)
        partial.rename(images)
    model = tiny_model_config(run / "model")
    command = [sys.executable, __file__, "--seconds", str(seconds), "--counters", str(run / "counters.json"), str(script)]
    command += ["--model_config_name_or_path", str(model), "--train_data_dir", str(images), "--output_dir", str(run / "example")]
    command += ["--cache_dir", str(run / "cache"), "--resolution", "64", "--validation_image", str(data / files[0]), str(data / files[1])]
    started = time.time()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(deps), os.environ.get("PYTHONPATH")])), "HF_DATASETS_OFFLINE": "1"}
    subprocess.run([*command, *OWN_DEFAULTS, *extra], check=True, cwd=run, env=env)
    saved = run / "diffusers"
    saved.mkdir(exist_ok=True)
    for file in ("config.json", "diffusion_pytorch_model.safetensors"):
        shutil.copy2(run / "example" / file, saved / file)
    result = {**json.loads((run / "counters.json").read_text()), "wall_seconds": round(time.time() - started, 1)}
    done.write_text(json.dumps(result))
    return result


class _Deadline:
    """The prepared data loader, ending every epoch once `seconds` have passed since its first batch."""

    def __init__(self, loader, seconds: float, clock: dict):
        self.loader, self.seconds, self.clock = loader, seconds, clock

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.clock.setdefault("start", time.monotonic())
        for batch in self.loader:
            if time.monotonic() - self.clock["start"] >= self.seconds:
                return
            self.clock["end"] = time.monotonic()
            yield batch


def _run(argv: list[str]) -> None:
    """In the child process: patch around the script (see the module docstring), run it as __main__."""
    import accelerate
    import lpips

    seconds, counters, script, script_args = float(argv[2]), Path(argv[4]), argv[5], argv[6:]
    clock: dict = {}
    steps = {"generator_steps": 0}
    prepare, init = accelerate.Accelerator.prepare, accelerate.Accelerator.__init__

    def timed_prepare(self, *objects, **kwargs):
        prepared = list(prepare(self, *objects, **kwargs))
        if len(prepared) != 7:
            raise RuntimeError(f"{script}: expected its one prepare(vae, disc, opt, disc_opt, loader, sched, disc_sched) call")
        prepared[2].optimizer.register_step_post_hook(lambda *_: steps.__setitem__("generator_steps", steps["generator_steps"] + 1))
        prepared[4] = _Deadline(prepared[4], seconds, clock)
        return tuple(prepared)

    def untracked_init(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "log_with": None})

    accelerate.Accelerator.prepare = timed_prepare
    accelerate.Accelerator.__init__ = untracked_init
    lpips.LPIPS = functools.partial(lpips.LPIPS, pnet_rand=True)
    sys.argv = [script, *script_args, "--max_train_steps", str(10**6)]
    runpy.run_path(script, run_name="__main__")
    counters.write_text(json.dumps({**steps, "train_seconds": round(clock["end"] - clock["start"], 1)}))


if __name__ == "__main__":
    _run(sys.argv)

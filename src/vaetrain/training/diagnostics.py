"""Catching GAN trouble early: a pure monitor over the logged history that says, in one line, when a
known failure pattern persists, and the callback that feeds it and writes latent histograms.

Patterns (each reported once, and again only after it cleared):
- the discriminator wins: its accuracy (real and fake together) above `discriminator_accuracy` for
  `patience` generator steps in a row;
- the latent drifts: the KL (or the fixed posterior's mean(mu^2)) or the latent std moves by more than
  `latent_drift_factor` from its average over the first `patience` steps, for `patience` steps;
- reconstruction degrades under the GAN: after the adversarial term starts, the reconstruction loss's
  moving average stays more than `reconstruction_rise` above its average over the `patience` steps
  before, for `patience` steps;
- a training unit's alarm (`Alarm`, declared by the unit: `training.features`): a logged value stays below
  its floor (`floors` overrides it) for `patience` steps.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field

import lightning as L

from vaetrain.errors import ConfigError


@dataclass(frozen=True)
class Alarm:
    """A known failure a training unit declares: its logged value `log` staying below `floor`; `message` is
    formatted with the `value` and the `patience`."""

    log: str
    floor: float
    message: str


@dataclass(frozen=True)
class DiagnosticsConfig:
    patience: int = 200
    """Generator steps a pattern must persist before the warning (and the reference windows' length)."""
    discriminator_accuracy: float = 0.95
    """Warn when the discriminator's accuracy stays above this."""
    latent_drift_factor: float = 10.0
    """Warn when the KL or the latent std leaves [reference / factor, reference x factor]."""
    reconstruction_rise: float = 0.2
    """Warn when, after the GAN starts, the reconstruction loss stays this fraction above its level before."""
    floors: dict[str, float] = field(default_factory=dict)
    """Per logged value a training unit raises an alarm on (`docs/long-runs.md`), the floor to warn below
    instead of the unit's own."""
    smoothing: float = 0.98
    """Decay of the moving averages compared against the references."""


class DiagnosticsMonitor:
    """Fed one dict of logged values per generator step; returns the warnings that fire at that step."""

    def __init__(self, config: DiagnosticsConfig = DiagnosticsConfig(), alarms: tuple[Alarm, ...] = ()) -> None:
        """`alarms`: the active training units' (`Feature.alarms`)."""
        self.config = config
        self.alarms = alarms
        self.references: dict[str, list[float]] = defaultdict(list)
        self.averages: dict[str, float] = {}
        self.streaks: dict[str, int] = defaultdict(int)
        self.active: set[str] = set()

    def update(self, step: int, values: dict[str, float], gan_active: bool) -> list[str]:
        config, warnings = self.config, []
        for name, value in values.items():
            previous = self.averages.get(name)
            self.averages[name] = value if previous is None else config.smoothing * previous + (1 - config.smoothing) * value
        accuracy = values.get("train/discriminator_accuracy")
        if accuracy is not None and gan_active:
            warnings += self._persisting(
                "discriminator",
                accuracy > config.discriminator_accuracy,
                step,
                (
                    f"discriminator accuracy above {config.discriminator_accuracy} for {config.patience} steps: it is winning "
                    "(lower its learning rate, add model.loss.lecam_weight or r1_weight, or warm it up with model.loss.disc_warmup_steps)"
                ),
            )
        for name in ("train/kl", "train/latent_penalty", "train/latent_std"):
            if name not in values:
                continue
            reference = self._reference(name, values[name], before_gan=False)
            if reference is not None and reference > 0:
                ratio = self.averages[name] / reference
                drifted = ratio > config.latent_drift_factor or ratio < 1 / config.latent_drift_factor
                warnings += self._persisting(
                    name,
                    drifted,
                    step,
                    (
                        f"{name} drifted to {ratio:.3g}x its early level for {config.patience} steps "
                        "(check model.loss.kl_weight; a latent that collapses or explodes hurts the diffusion model)"
                    ),
                )
        for alarm in self.alarms:
            value = values.get(alarm.log)
            if value is not None:
                floor = config.floors.get(alarm.log, alarm.floor)
                warnings += self._persisting(alarm.log, value < floor, step, alarm.message.format(value=value, patience=config.patience))
        if "train/reconstruction" in values:
            reference = self._reference("train/reconstruction", values["train/reconstruction"], before_gan=not gan_active)
            if gan_active and reference is not None and reference > 0:
                rise = self.averages["train/reconstruction"] / reference - 1
                warnings += self._persisting(
                    "reconstruction",
                    rise > config.reconstruction_rise,
                    step,
                    (
                        f"reconstruction loss {rise:+.0%} above its level before the GAN started, for {config.patience} steps "
                        "(lower model.loss.disc_weight, or use model.loss.disc_warmup_steps)"
                    ),
                )
        return warnings

    def _reference(self, name: str, value: float, *, before_gan: bool) -> float | None:
        """The average of the first `patience` values (for the reconstruction: of the last `patience` before the
        GAN started); None until it is known."""
        window = self.references[name]
        if name == "train/reconstruction":
            if before_gan:
                window.append(value)
                del window[: -self.config.patience]
            return sum(window) / len(window) if window and not before_gan else None
        if len(window) < self.config.patience:
            window.append(value)
            return None
        return sum(window) / len(window)

    def _persisting(self, pattern: str, bad: bool, step: int, message: str) -> list[str]:
        self.streaks[pattern] = self.streaks[pattern] + 1 if bad else 0
        if not bad:
            self.active.discard(pattern)
            return []
        if self.streaks[pattern] >= self.config.patience and pattern not in self.active:
            self.active.add(pattern)
            return [f"step {step}: {message}"]
        return []


class Diagnostics(L.Callback):
    """Feeds the monitor with each generator step's logged values and prints its warnings (rank 0); every
    `histogram_every_n_steps` generator steps, TensorBoard gets a histogram of each latent channel."""

    def __init__(self, config: DiagnosticsConfig = DiagnosticsConfig(), histogram_every_n_steps: int = 1000, enabled: bool = True) -> None:
        self.monitor = DiagnosticsMonitor(config)  # the units' alarms join at set-up
        self.histogram_every_n_steps = histogram_every_n_steps
        self.enabled = enabled
        self.warnings: list[str] = []
        self._last_step = -1

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self.monitor.alarms = tuple(alarm for feature in getattr(pl_module, "features", ()) for alarm in feature.alarms)
        unknown = sorted(set(self.monitor.config.floors) - {alarm.log for alarm in self.monitor.alarms})
        if unknown:
            watched = ", ".join(alarm.log for alarm in self.monitor.alarms) or "none"
            raise ConfigError(f"diagnostics.config.floors: no alarm of this run watches {', '.join(unknown)} (watched: {watched})")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = pl_module.counters.generator_steps
        if not self.enabled or step == self._last_step:
            return
        self._last_step = step
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        gan_active = "train/adversarial" in metrics and pl_module.counters.generator_steps > pl_module.loss_config.disc_start_step
        for warning in self.monitor.update(step, metrics, gan_active):
            self.warnings.append(warning)
            if trainer.is_global_zero:
                print(f"vaetrain: warning: {warning}", file=sys.stderr)
        latents = pl_module.gan_step.last_latents
        experiment = getattr(trainer.logger, "experiment", None)
        if self.histogram_every_n_steps and step % self.histogram_every_n_steps == 0 and latents is not None and hasattr(experiment, "add_histogram"):
            for channel, values in enumerate(latents.float().transpose(0, 1).flatten(1)):
                experiment.add_histogram(f"latent/channel_{channel}", values.cpu(), global_step=step)

"""One GAN update of an autoencoder: the step that training, the memory probe and the benchmarks share.

`GanStep(images, engine)` processes one micro-batch: draw EQ-VAE's transform, reconstruct (posterior
sample, alignment term, latent noise), generator backward (image terms + KL + adversarial, balanced),
discriminator backward on the detached reconstruction (+ LeCam, R1), and, when the micro-batch closes an
accumulation window, both optimizer steps, the EMA update and the counters. How a backward or an optimizer step runs is the `Engine`'s business (Lightning's
precision plugin and strategy in training, plain PyTorch for FLOP counting); what is computed is this
file's. The engine calls `prepare_gradients` after unscaling and before each optimizer step: it measures
the gradient norm, skips a non-finite update and clips.

Counters (see the module docstring of `training.module` for which setting uses which):
generator and discriminator optimizer steps, micro-batches, samples of all processes, skipped updates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.losses.balance import Processes
from vaetrain.losses.gan import discriminator_loss, lecam_penalty, r1_penalty
from vaetrain.losses.equivariance import LatentTransform
from vaetrain.losses.objective import LossConfig, gan_ramp, generator_loss
from vaetrain.models.last_layers import LastLayerInput
from vaetrain.models.ema import EMAConfig
from vaetrain.training.guard import StepCounters, UpdateGuard
from vaetrain.training.forward import AutoencoderForward, Reconstruction
from vaetrain.training.interfaces import Engine, Network, Phase
from vaetrain.training.networks import trainable_parameters
from vaetrain.training.latent_terms import draw_equivariance


@dataclass(frozen=True)
class StepSettings:
    """What the step needs to know beyond the loss and EMA configs."""

    accumulate: int = 1
    gan_updates: Literal["both", "alternate"] = "both"
    posterior: Literal["learned", "fixed"] = "learned"
    posterior_std: float = 0.1  # the fixed posterior's relative noise
    latent_clamp: float | None = None
    clip_norm: dict[str, float | None] | None = None  # per network; None: no clipping
    max_consecutive_skips: int = 10

    @classmethod
    def from_configs(cls, autoencoder, training, optimizers) -> StepSettings:
        """From the module's config blocks (`AutoencoderConfig`, `TrainingConfig`, `GanOptimizers`)."""
        return cls(
            accumulate=training.accumulate_grad_batches, gan_updates=training.gan_updates,
            posterior=autoencoder.posterior, posterior_std=autoencoder.posterior_std, latent_clamp=autoencoder.latent_clamp,
            clip_norm={"generator": optimizers.generator.gradient_clip_norm, "discriminator": optimizers.discriminator.gradient_clip_norm},
            max_consecutive_skips=training.max_consecutive_skips,
        )


class GanStep:
    """See the module docstring. `accumulate` (micro-batches per update) is run-time state: a memory plan
    or a global batch size sets it, the configs stay as given."""

    def __init__(self, networks: nn.Module, loss: LossConfig, ema: EMAConfig, settings: StepSettings) -> None:
        self.networks = networks
        self.loss = loss
        self.ema = ema
        self.settings = settings
        self.counters = StepCounters()
        self.accumulate = settings.accumulate
        self.last_layer = LastLayerInput(networks.autoencoder)
        self.guard = UpdateGuard(settings.clip_norm, settings.max_consecutive_skips)
        self.last_latents: torch.Tensor | None = None  # the latest batch's posterior means, for histograms
        self.forward = AutoencoderForward(networks, loss, settings)
        self.factor = self.forward.factor
        self._power_iteration_window: tuple[int, int] = (-1, -1)

    @property
    def accumulate(self) -> int:
        return self._accumulate

    @accumulate.setter
    def accumulate(self, micro_batches: int) -> None:
        """Set between updates (a plan at start-up, a resolution phase's plan at its first step): accumulated
        batches are counted from the micro-batch where it was set. Gradient normalisation refuses accumulation:
        it normalises each backward pass's gradient, so k micro-batches would train it sqrt(k) weaker."""
        if micro_batches > 1 and self.loss.balance == "gradnorm":
            raise ConfigError(
                f"model.loss.balance=gradnorm cannot accumulate gradients ({micro_batches} micro-batches per update, from "
                "model.training.accumulate_grad_batches or global_batch_size): it normalises each backward pass's gradient, so "
                "accumulation would weaken it; give each process its whole batch (data.batch_size) or use balance adaptive"
            )
        self._accumulate, self._window_origin = micro_batches, self.counters.micro_batches

    def _window(self) -> tuple[int, int]:
        """(where the current accumulation setting began, the accumulated batch's number since then)."""
        return self._window_origin, (self.counters.micro_batches - self._window_origin) // self._accumulate

    def snapshot(self) -> tuple:
        """The step's own state, for `restore` after steps that must leave no trace (the memory probe)."""
        return (replace(self.counters), self._accumulate, self._window_origin, self._power_iteration_window, self.guard.skipping)

    def restore(self, snapshot: tuple) -> None:
        counters, self._accumulate, self._window_origin, self._power_iteration_window, self.guard.skipping = snapshot
        self.counters = replace(counters)
        self.guard.norms = {}
        if self.forward.alignment is not None:
            self.forward.alignment.discard()
        if self.networks.lecam_anchors is not None:
            self.networks.lecam_anchors.discard()

    def phase(self) -> Phase:
        """Which networks update on the current accumulated batch (fixed for the whole window)."""
        counters, start = self.counters, self.loss.disc_start_step
        if counters.generator_steps < start:
            return "generator"
        if self.settings.gan_updates == "both":
            return "both"
        return "discriminator" if counters.discriminator_steps <= counters.generator_steps - start else "generator"

    def __call__(self, images: torch.Tensor, engine: Engine, *, full_objective: bool = False) -> dict[str, torch.Tensor]:
        """One micro-batch; returns detached values to log. `full_objective`: both networks and the GAN term
        whatever the counters say (the memory probe measures the most expensive step)."""
        counters = self.counters
        closes_window = (counters.micro_batches - self._window_origin + 1) % self._accumulate == 0
        phase = "both" if full_objective else self.phase()
        transform, images = draw_equivariance(self.loss.equivariance, images, self.factor)
        logs: dict[str, torch.Tensor] = {}
        result = None
        if phase != "discriminator":
            gan_factor = 1.0 if full_objective else gan_ramp(counters.generator_steps, self.loss.disc_start_step, self.loss.disc_warmup_steps)
            with engine.accumulating("generator", sync=closes_window):
                result, generator_logs = self.generator_backward(images, transform, gan_factor, engine)
            logs |= generator_logs
            if closes_window:
                self._update("generator", engine)
        if phase != "generator":
            if result is None:
                with torch.no_grad():
                    result = self.reconstruct(images, transform)
            with engine.accumulating("discriminator", sync=closes_window):
                logs |= self.discriminator_backward(result.target, result.images, engine, self._condition(result))
            if closes_window:
                self._update("discriminator", engine)
        if closes_window:
            self.guard.end_window(self.counters)
        counters.micro_batches += 1
        counters.samples_seen += images.shape[0] * engine.world_size
        return logs

    def reconstruct(self, images: torch.Tensor, transform: LatentTransform | None = None) -> Reconstruction:
        return self.forward(images, transform)

    def prepare_gradients(self, network: Network) -> None:
        """Called by the engine after unscaling, before `network`'s optimizer steps (see `UpdateGuard`)."""
        self.guard.prepare(network, self._parameters(network))

    def _parameters(self, network: Network) -> list[nn.Parameter]:
        return [parameter for _, parameter in trainable_parameters(self.networks, network)]

    def generator_backward(self, images: torch.Tensor, transform: LatentTransform | None, gan_factor: float, engine: Engine):
        """The autoencoder's half of a micro-batch: its loss's gradient accumulated into its weights, the
        adversarial term scaled by `gan_factor` (none at 0); returns the forward's `Reconstruction` (for the
        discriminator's half) and the values to log."""
        processes = Processes(engine.world_size, engine.mean_over_processes) if engine.world_size > 1 else None
        result = self.reconstruct(images, transform)
        mean, logvar = result.mean, result.logvar
        self.last_latents = mean.detach()
        last_layer_grad = self.last_layer.take_weight_gradient()
        use_gan = gan_factor > 0
        if use_gan:
            self._advance_power_iteration()
        critic = partial(self.networks.discriminator, condition=self._condition(result)) if use_gan else None
        output = generator_loss(
            result.target, result.images, mean, logvar, config=self.loss, perceptual=self.networks.perceptual,
            last_layer_grad=last_layer_grad, discriminator=critic, processes=processes, gan_factor=gan_factor,
        )
        target = output.backward_target if result.extra_loss is None else output.backward_target + result.extra_loss
        engine.backward(target / self.accumulate)
        if self.forward.alignment is not None:
            self.forward.alignment.observe(engine.loss_scale(), self.accumulate)
        logs = {f"train/{name}": value for name, value in output.terms.items()} | result.logs
        logs["train/latent_mean"] = mean.detach().mean()
        logs["train/latent_std"] = mean.detach().std()
        if logvar is not None:
            logs["train/posterior_std"] = torch.exp(0.5 * logvar.detach()).mean()
        return result, logs

    def _condition(self, result: Reconstruction) -> torch.Tensor | None:
        """What a latent-conditioned discriminator reads beside the image: the latent the decoder decoded
        (the posterior mean, or the teacher's latents when distilling), without a graph."""
        return result.mean.detach() if getattr(self.networks.discriminator, "condition_channels", 0) else None

    def discriminator_backward(
        self, images: torch.Tensor, reconstruction: torch.Tensor, engine: Engine, condition: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The discriminator's half: real and fake in one forward, so norm statistics and spectral-norm updates
        see both; the fakes are detached here, so this loss never reaches the autoencoder. Plus LeCam (towards
        the anchors of the steps before; this batch's logits move them after a finite update) and lazy R1
        (every `r1_every` discriminator steps, scaled by it)."""
        self._advance_power_iteration()
        config = self.loss
        r1_due = config.r1_weight > 0 and self.counters.discriminator_steps % config.r1_every == 0
        real = images.detach().requires_grad_(True) if r1_due else images
        both = torch.cat([condition, condition]) if condition is not None else None
        logits = self.networks.discriminator(torch.cat([real, reconstruction.detach().to(images.dtype)]), condition=both)
        real_logits, fake_logits = logits.float().chunk(2)
        loss = discriminator_loss(real_logits, fake_logits, config.gan_loss)
        logs = {
            "train/discriminator": loss.detach(),
            "train/logits_real": real_logits.detach().mean(),
            "train/logits_fake_d": fake_logits.detach().mean(),
        }
        real_accuracy, fake_accuracy = (real_logits.detach() > 0).float().mean(), (fake_logits.detach() < 0).float().mean()
        logs |= {
            "train/discriminator_accuracy": (real_accuracy + fake_accuracy) / 2, "train/discriminator_accuracy_real": real_accuracy,
            "train/discriminator_accuracy_fake": fake_accuracy, "train/logit_gap": real_logits.detach().mean() - fake_logits.detach().mean(),
        }
        if config.lecam_weight > 0:
            anchors = self.networks.lecam_anchors
            anchors.observe(real_logits.detach(), fake_logits.detach(), 1.0 / self.accumulate)
            lecam = lecam_penalty(real_logits, fake_logits, anchors.real, anchors.fake)
            loss = loss + config.lecam_weight * lecam
            logs |= {"train/lecam": lecam.detach(), "train/lecam_anchor_real": anchors.real.clone(), "train/lecam_anchor_fake": anchors.fake.clone()}
        if r1_due:
            r1 = r1_penalty(real_logits, real)
            loss = loss + 0.5 * config.r1_weight * config.r1_every * r1
            logs["train/r1"] = r1.detach()
        engine.backward(loss / self.accumulate)
        return logs

    def _advance_power_iteration(self) -> None:
        """Spectral norm advances once per accumulated batch (on the window's first discriminator forward),
        so 1 process x 4 micro-batches and 2 processes x 2 train alike."""
        discriminator = self.networks.discriminator
        window = self._window()
        discriminator.set_power_iteration(discriminator.training and window != self._power_iteration_window)
        self._power_iteration_window = window

    def _update(self, network: Network, engine: Engine) -> None:
        engine.optimizer_step(network)
        engine.zero_grad(network)
        if network == "generator":
            self.counters.generator_steps += 1
            if not self.guard.skipping:
                self._update_ema()
            self._settle_alignment(engine)
        else:
            self.counters.discriminator_steps += 1
            self._commit_lecam_anchors(engine)

    def _commit_lecam_anchors(self, engine: Engine) -> None:
        """LeCam's anchors move once per discriminator step, with the accumulated batch's process-mean
        logits, and only after a finite update (`LeCamAnchors`)."""
        anchors = self.networks.lecam_anchors
        if anchors is None or self.loss.lecam_weight == 0:
            return
        if self.guard.skipping:
            anchors.discard()
        else:
            anchors.commit(self.loss.lecam_decay, engine.mean_over_processes if engine.world_size > 1 else None)

    def _settle_alignment(self, engine: Engine) -> None:
        """VA-VAE's adaptive weight from the accumulated batch, once its update was finite (`AlignmentTerm`)."""
        alignment = self.forward.alignment
        if alignment is None:
            return
        if self.guard.skipping:
            alignment.discard()
        else:
            processes = Processes(engine.world_size, engine.mean_over_processes) if engine.world_size > 1 else None
            alignment.settle(self.networks.alignment_projection, processes)

    def _update_ema(self) -> None:
        ema, config, steps = self.networks.ema, self.ema, self.counters.generator_steps
        if ema is not None and steps >= config.start_step and (steps - config.start_step) % config.every_n_steps == 0:
            ema.update_parameters(self.networks.autoencoder)

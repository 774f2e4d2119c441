"""One GAN update of an autoencoder: the step that training, the memory probe and the benchmarks share.

The update reads in three files, top to bottom: this one (the order of things), `training.forward` (the
autoencoder's forward with the terms on the latent) and `losses.objective` (both networks' losses).

`GanStep(images, engine)` processes one micro-batch: each training unit's `begin`,
reconstruct (`training.forward`: posterior sample and the units' latent stage), generator backward (image
terms + KL + adversarial, balanced, + the units' extra losses), discriminator backward on the detached
reconstruction (+ the units' regularisers), each unit network's own backward (role `trained`:
e.g. a diffusion transformer, on what the forward left it), and, when the micro-batch closes
an accumulation window, every optimizer's step in that order, the EMA update, each unit's `commit` (or `discard` after a skipped update)
and the counters. The step names no unit (`training.features`). How a backward or an optimizer step runs is
the `Engine`'s business (Lightning's precision plugin and strategy in training, plain PyTorch for FLOP
counting); what is computed is this file's. The engine calls `prepare_gradients` after unscaling and before
each optimizer step: the `UpdateGuard` measures the gradient norm, skips a non-finite update and clips;
nothing buffered takes a value from a skipped window.

Counters (the run's plan holds them): generator and discriminator optimizer steps, micro-batches, samples
of all processes, skipped updates. Lightning's `global_step` would count every `optimizer.step()` of both
optimizers, so the discriminator steps through the strategy and `trainer.global_step` counts generator steps.
Settings say which counter they use: generator steps (`trainer.max_steps`, `loss.disc_start_step`, `ema.*`,
the generator LR schedule, `checkpoint.every_n_train_steps`, `grid.every_n_steps`); discriminator steps
(its LR schedule); micro-batches, Lightning's batches (`trainer.val_check_interval`, `log_every_n_steps`);
`samples_seen`, images consumed by all processes together.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch
from torch import nn

from vaetrain.losses.config import LossConfig
from vaetrain.losses.objective import Processes, discriminator_objective, gan_ramp, generator_loss
from vaetrain.models.ema import EMAConfig
from vaetrain.models.last_layers import LastLayerInput
from vaetrain.plan import RunPlan, StepCounters
from vaetrain.training.config import StepSettings
from vaetrain.training.features import Feature, Update, refuse_accumulation
from vaetrain.training.forward import AutoencoderForward, Reconstruction
from vaetrain.training.interfaces import Engine, Phase, Trained
from vaetrain.training.networks import trainable_parameters
from vaetrain.training.update_guard import UpdateGuard


class GanStep:
    """See the module docstring. The counters and `accumulate` (micro-batches per update) are the run's plan's
    (`vaetrain.plan.RunPlan`): a memory plan or a global batch size sets the accumulation, the configs stay
    as given."""

    def __init__(
        self, networks: nn.Module, loss: LossConfig, ema: EMAConfig, settings: StepSettings, features: list[Feature] = (), plan: RunPlan | None = None
    ) -> None:
        self.networks = networks
        self.loss = loss
        self.ema = ema
        self.settings = settings
        self.features = list(features)
        self.plan = plan or RunPlan()
        self.accumulate = settings.accumulate
        self.last_layer = LastLayerInput(networks.autoencoder)
        clip_norm = dict(settings.clip_norm or {}) | {
            name: feature.optimizer_config(name).gradient_clip_norm for feature in self.features for name in feature.trained_networks()
        }
        self.guard = UpdateGuard(clip_norm, settings.max_consecutive_skips)
        self.last_latents: torch.Tensor | None = None  # the latest batch's posterior means, for histograms
        self.forward = AutoencoderForward(networks, settings, loss.sample_posterior, self.features)
        self.factor = self.forward.factor
        self._power_iteration_window: tuple[int, int] = (-1, -1)

    @property
    def counters(self) -> StepCounters:
        return self.plan.counters

    @counters.setter
    def counters(self, counters: StepCounters) -> None:
        self.plan.counters = counters

    @property
    def accumulate(self) -> int:
        return self.plan.accumulate

    @accumulate.setter
    def accumulate(self, micro_batches: int) -> None:
        """Set between updates (a plan at start-up, a resolution phase's plan at its first step): accumulated
        batches are counted from the micro-batch where it was set. A unit may refuse accumulation (gradient
        normalisation) in one line."""
        refuse_accumulation(self.features, micro_batches)
        self.plan.accumulate_from_here(micro_batches)

    def _window(self) -> tuple[int, int]:
        """(where the current accumulation setting began, the accumulated batch's number since then)."""
        plan = self.plan
        return plan.window_origin, (plan.counters.micro_batches - plan.window_origin) // plan.accumulate

    def snapshot(self) -> tuple:
        """The step's own state, for `restore` after steps that must leave no trace (the memory probe)."""
        plan = self.plan
        return (replace(plan.counters), plan.accumulate, plan.window_origin, self._power_iteration_window, self.guard.skipping)

    def restore(self, snapshot: tuple) -> None:
        counters, self.plan.accumulate, self.plan.window_origin, self._power_iteration_window, self.guard.skipping = snapshot
        self.counters = replace(counters)
        self.guard.norms = {}
        for feature in self.features:
            feature.discard()

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
        closes_window = (counters.micro_batches - self.plan.window_origin + 1) % self.plan.accumulate == 0
        phase = "both" if full_objective else self.phase()
        for feature in self.features:
            images = feature.begin(images, self.factor)
        logs: dict[str, torch.Tensor] = {}
        result = None
        if phase != "discriminator":
            gan_factor = 1.0 if full_objective else gan_ramp(counters.generator_steps, self.loss.disc_start_step, self.loss.disc_warmup_steps)
            with engine.accumulating("generator", sync=closes_window):
                result, generator_logs = self.generator_backward(images, gan_factor, engine)
            logs |= generator_logs
            if closes_window:
                self._update("generator", engine)
        if phase != "generator":
            if result is None:
                with torch.no_grad():
                    result = self.reconstruct(images)
            with engine.accumulating("discriminator", sync=closes_window):
                logs |= self.discriminator_backward(result.target, result.images, engine, self._condition(result))
            if closes_window:
                self._update("discriminator", engine)
        for feature in self.features:
            for network in feature.trained_networks():
                with engine.accumulating(network, sync=closes_window):
                    loss, unit_logs = feature.network_loss(network)
                    if loss is not None:
                        engine.backward(loss / self.accumulate)
                logs |= unit_logs
                if closes_window:
                    self._update(network, engine)
        if closes_window:
            self.guard.end_window(self.counters)
        counters.micro_batches += 1
        counters.samples_seen += images.shape[0] * engine.world_size
        logs |= {f"train/grad_norm_{network}": norm for network, norm in self.guard.norms.items()}  # before clipping
        return logs | {
            "steps/generator": float(counters.generator_steps),
            "steps/discriminator": float(counters.discriminator_steps),
            "steps/samples": float(counters.samples_seen),
            "train/skipped_updates": float(counters.skipped_updates),
        }

    def reconstruct(self, images: torch.Tensor) -> Reconstruction:
        return self.forward(images)

    def prepare_gradients(self, network: Trained) -> None:
        """Called by the engine after unscaling, before `network`'s optimizer steps (see `UpdateGuard`)."""
        self.guard.prepare(network, self._parameters(network))

    def _parameters(self, network: Trained) -> list[nn.Parameter]:
        return [parameter for _, parameter in trainable_parameters(self.networks, network)]

    def generator_backward(self, images: torch.Tensor, gan_factor: float, engine: Engine):
        """The autoencoder's half of a micro-batch: its loss's gradient accumulated into its weights, the
        adversarial term scaled by `gan_factor` (none at 0); returns the forward's `Reconstruction` (for the
        discriminator's half) and the values to log."""
        processes = Processes(engine.world_size, engine.mean_over_processes) if engine.world_size > 1 else None
        result = self.reconstruct(images)
        mean, logvar = result.mean, result.logvar
        self.last_latents = mean.detach()
        last_layer_grad = self.last_layer.take_weight_gradient()
        use_gan = gan_factor > 0
        if use_gan:
            self._advance_power_iteration()
        critic = partial(self.networks.discriminator, condition=self._condition(result)) if use_gan else None
        output = generator_loss(
            result.target,
            result.images,
            mean,
            logvar,
            config=self.loss,
            perceptual=self.networks.perceptual,
            last_layer_grad=last_layer_grad,
            discriminator=critic,
            processes=processes,
            gan_factor=gan_factor,
        )
        target = output.backward_target if result.extra_loss is None else output.backward_target + result.extra_loss
        engine.backward(target / self.accumulate)
        for feature in self.features:
            feature.after_generator_backward(engine.loss_scale(), self.accumulate)
        logs = {f"train/{name}": value for name, value in output.terms.items()} | result.logs
        logs["train/latent_mean"] = mean.detach().mean()
        logs["train/latent_std"] = mean.detach().std()
        if logvar is not None:
            logs["train/posterior_std"] = torch.exp(0.5 * logvar.detach()).mean()
        return result, logs

    def _condition(self, result: Reconstruction) -> torch.Tensor | None:
        """What a latent-conditioned discriminator reads beside the image: the latent the decoder decoded
        (the posterior mean, or what a unit's encoder path gave), without a graph."""
        return result.mean.detach() if getattr(self.networks.discriminator, "condition_channels", 0) else None

    def discriminator_backward(
        self, images: torch.Tensor, reconstruction: torch.Tensor, engine: Engine, condition: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The discriminator's half: real and fake in one forward, so norm statistics and spectral-norm updates
        see both; the fakes are detached here, so this loss never reaches the autoencoder. Plus the units'
        regularisers (`prepare_real` may make the real images take gradients)."""
        self._advance_power_iteration()
        real = images
        for feature in self.features:
            real = feature.prepare_real(real, self.counters.discriminator_steps)
        both = torch.cat([condition, condition]) if condition is not None else None
        logits = self.networks.discriminator(torch.cat([real, reconstruction.detach().to(images.dtype)]), condition=both)
        real_logits, fake_logits = logits.float().chunk(2)
        loss, logs = discriminator_objective(real_logits, fake_logits, self.loss)
        for feature in self.features:
            penalty, penalty_logs = feature.discriminator_terms(real_logits, fake_logits, real, self.accumulate)
            if penalty is not None:
                loss = loss + penalty
            logs |= penalty_logs
        engine.backward(loss / self.accumulate)
        return logs

    def _advance_power_iteration(self) -> None:
        """Spectral norm advances once per accumulated batch (on the window's first discriminator forward),
        so 1 process x 4 micro-batches and 2 processes x 2 train alike."""
        discriminator = self.networks.discriminator
        window = self._window()
        discriminator.set_power_iteration(discriminator.training and window != self._power_iteration_window)
        self._power_iteration_window = window

    def _update(self, network: Trained, engine: Engine) -> None:
        """`network`'s optimizer step, then what is computed from the accumulated batch, only if its update
        was finite (a skipped window leaves no value in any buffer): the EMA (generator), then each unit's
        `commit`, which discards what it buffered when the update was skipped."""
        engine.optimizer_step(network)
        engine.zero_grad(network)
        finite = not self.guard.skipping
        processes = Processes(engine.world_size, engine.mean_over_processes) if engine.world_size > 1 else None
        if network == "generator":
            self.counters.generator_steps += 1
            if finite:
                self._update_ema()
        elif network == "discriminator":
            self.counters.discriminator_steps += 1
        update = Update(finite, processes, engine)
        for feature in self.features:
            feature.commit(network, update)

    def _update_ema(self) -> None:
        ema, config, steps = self.networks.ema, self.ema, self.counters.generator_steps
        if ema is not None and steps >= config.start_step and (steps - config.start_step) % config.every_n_steps == 0:
            ema.update_parameters(self.networks.autoencoder)

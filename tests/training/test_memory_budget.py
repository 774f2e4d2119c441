"""The memory-budget search with an injected probe: no GPU needed."""

from dataclasses import replace

import lightning as L
import pytest
import torch

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.errors import ConfigError
from vaetrain.training.memory_budget import MemoryBudget, MemoryReader
from vaetrain.training.memory_search import StepMeasurement, parse_memory_size, plan_memory

GiB = 2**30


def model_probe(static_gib: float, gib_per_image: float, checkpoint_saving: float = 0.6, seconds_per_image: float = 0.1):
    """Memory grows linearly with the micro-batch; checkpointing keeps 40 % of the activations and costs
    30 % more time per image; above the device's 80 GiB it runs out of memory. Records every call."""
    calls = []

    def probe(micro_batch: int, checkpointing: bool) -> StepMeasurement:
        calls.append((micro_batch, checkpointing))
        per_image = gib_per_image * (1 - checkpoint_saving if checkpointing else 1)
        peak = (static_gib + per_image * micro_batch) * GiB
        if peak > 80 * GiB:
            return StepMeasurement(None)
        time = seconds_per_image * micro_batch * (1.3 if checkpointing else 1.0) + 0.05  # fixed cost per step
        return StepMeasurement(int(peak), time)

    probe.calls = calls
    return probe


@pytest.mark.parametrize("text, expected", [("8GB", 8 * GiB), ("7.5 GiB", int(7.5 * GiB)), ("6000MB", 6000 * 2**20), ("512m", 512 * 2**20), (1024, 1024)])
def test_memory_sizes_parse(text, expected):
    assert parse_memory_size(text) == expected


def test_bad_memory_size_names_the_key():
    with pytest.raises(ConfigError, match="memory.max_memory: '8 parsecs'"):
        parse_memory_size("8 parsecs")


def test_whole_batch_fits_without_checkpointing():
    probe = model_probe(static_gib=2, gib_per_image=0.5)
    plan = plan_memory(probe, 8 * GiB, images_per_process=8, headroom=0.1)
    assert (plan.micro_batch, plan.gradient_checkpointing, plan.accumulate) == (8, False, 1)
    assert all(not checkpointing for _, checkpointing in probe.calls)  # no need to try checkpointing


def test_largest_fitting_micro_batch_and_accumulation_keep_the_global_batch():
    # 2 + 1.2 * m GiB: m = 4 needs 6.8 GiB (fits 7.2), m = 8 needs 11.6; checkpointing: 2 + 0.48 m -> m = 8 fits
    # but costs 30 % more per image, so without checkpointing at m = 4 is faster per image.
    probe = model_probe(static_gib=2, gib_per_image=1.2, seconds_per_image=0.1)
    plan = plan_memory(probe, 8 * GiB, images_per_process=16, headroom=0.1)
    assert (plan.micro_batch, plan.gradient_checkpointing) == (4, False)
    assert plan.micro_batch * plan.accumulate == 16
    assert plan.peak_bytes <= 0.9 * 8 * GiB


def test_checkpointing_chosen_when_nothing_fits_without_it():
    # 5 + 4 m GiB: no micro-batch fits 7.2 GiB; with checkpointing 5 + 1.6 m: m = 1 fits (6.6), m = 2 not (8.2).
    probe = model_probe(static_gib=5, gib_per_image=4)
    plan = plan_memory(probe, 8 * GiB, images_per_process=8, headroom=0.1)
    assert (plan.micro_batch, plan.gradient_checkpointing, plan.accumulate) == (1, True, 8)


def test_checkpointing_chosen_when_its_larger_micro_batch_is_faster():
    # A large fixed cost per step makes bigger micro-batches pay: checkpointing's m = 8 beats plain m = 2.
    probe = model_probe(static_gib=2, gib_per_image=2, seconds_per_image=0.01)
    plan = plan_memory(probe, 8 * GiB, images_per_process=8, headroom=0.1)
    assert plan.gradient_checkpointing and plan.micro_batch == 4  # 2 + 0.8 * 4 = 5.2 fits, 8 -> 8.4 does not


def test_micro_batches_divide_the_per_process_batch():
    probe = model_probe(static_gib=1, gib_per_image=1)
    plan = plan_memory(probe, 8 * GiB, images_per_process=12, headroom=0.1)
    assert {m for m, _ in probe.calls} <= {1, 2, 3, 4, 6, 12}
    assert plan.micro_batch == 6 and plan.accumulate == 2  # 1 + 6 = 7 GiB fits 7.2; 12 does not


def test_out_of_memory_probe_stops_the_search():
    probe = model_probe(static_gib=70, gib_per_image=4)  # m >= 3 exceeds the device
    plan = plan_memory(probe, 100 * GiB, images_per_process=8, headroom=0.1)
    assert plan.micro_batch == 2
    assert (8, False) not in probe.calls  # stopped at the first out-of-memory (4)


def test_nothing_fits_is_one_clear_error():
    probe = model_probe(static_gib=9, gib_per_image=1)
    with pytest.raises(ConfigError, match=r"memory.max_memory: even micro-batch 1 with gradient checkpointing needs 9\.40 GiB"):
        plan_memory(probe, 8 * GiB, images_per_process=8, headroom=0.1)


def test_a_family_without_checkpointing_is_never_planned_with_it():
    probe = model_probe(static_gib=2, gib_per_image=1)
    plan = plan_memory(probe, 8 * GiB, images_per_process=8, headroom=0.1, checkpointing_available=False)
    assert not plan.gradient_checkpointing and plan.micro_batch == 4 and plan.accumulate == 2
    assert not any(checkpointing for _, checkpointing in probe.calls)
    with pytest.raises(ConfigError, match=r"even micro-batch 1 needs 10\.00 GiB"):
        plan_memory(model_probe(static_gib=9, gib_per_image=1), 8 * GiB, images_per_process=8, headroom=0.1, checkpointing_available=False)


def test_gradient_normalisation_is_never_planned_with_accumulation():
    """gradnorm normalises each backward's gradient: the planner tries the whole per-process batch only (with
    checkpointing when needed) and says which setting stops it from accumulating."""
    probe = model_probe(static_gib=2, gib_per_image=1.2, seconds_per_image=0.1)  # plain: m = 4 fits, 8 does not
    plan = plan_memory(probe, 8 * GiB, images_per_process=8, headroom=0.1, no_accumulation="model.loss.balance=gradnorm")
    assert (plan.micro_batch, plan.accumulate, plan.gradient_checkpointing) == (8, 1, True)
    assert {m for m, _ in probe.calls} == {8}
    with pytest.raises(ConfigError, match=r"model.loss.balance=gradnorm needs the whole per-process batch \(16 images\)"):
        plan_memory(model_probe(static_gib=2, gib_per_image=1.2), 8 * GiB, images_per_process=16, headroom=0.1, no_accumulation="model.loss.balance=gradnorm")


def test_budget_callback_sets_micro_batch_checkpointing_and_accumulation(datamodule):
    """A fit with an injected probe: the run trains with the plan, and each generator step still sees the
    configured global batch (2 x 4 accumulation = 8 images)."""
    module = tiny_module(training={"accumulate_grad_batches": 4})  # configured: micro-batch 2 x 4 = 8
    budget = MemoryBudget(max_memory="8GB")
    # plain: 2 + 2 m GiB -> m = 2 fits, 4 does not; checkpointing 2 + 0.8 m -> m = 4 fits at similar speed
    budget.probe = model_probe(static_gib=2, gib_per_image=2, seconds_per_image=0.01)
    trainer = tiny_trainer(max_steps=2, callbacks=[budget])
    trainer.fit(module, datamodule)
    assert budget.plan is not None and budget.plan.gradient_checkpointing and budget.plan.micro_batch == 4
    assert datamodule.micro_batch == 4
    assert module.accumulate == 2
    assert module.autoencoder.is_gradient_checkpointing
    assert module.counters.samples_seen == 2 * 8  # 2 generator steps of the configured global batch
    assert module.counters.micro_batches == 4


def test_without_a_budget_nothing_changes(datamodule):
    module = tiny_module(training={"accumulate_grad_batches": 2})
    budget = MemoryBudget(max_memory=None)
    budget.probe = lambda m, c: pytest.fail("probed without a budget")
    tiny_trainer(max_steps=1, callbacks=[budget]).fit(module, datamodule)
    assert datamodule.micro_batch == 2 and module.accumulate == 2 and not module.autoencoder.is_gradient_checkpointing


def test_cuda_probe_refuses_cpu(datamodule):
    module = tiny_module()
    budget = MemoryBudget(max_memory="8GB")
    with pytest.raises(ConfigError, match="memory.max_memory measures CUDA memory; this run is on cpu"):
        tiny_trainer(max_steps=1, callbacks=[budget]).fit(module, datamodule)


class ChangeWatchingReader(MemoryReader):
    """A CPU stand-in for CUDA's allocator: reports a fixed peak, and records whether the measured steps
    changed every network (they must: the probe runs whole updates)."""

    def __init__(self) -> None:
        self.changed: list[dict[str, bool]] = []

    def start(self, module) -> None:
        self.module = module
        self.before = {name: _flat(getattr(module, name)) for name in ("autoencoder", "discriminator", "ema")}

    def peak_bytes(self) -> int:
        self.changed.append({name: not torch.equal(value, _flat(getattr(self.module, name))) for name, value in self.before.items()})
        return 2**20


def _flat(module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().clone() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()])


class StateAtFitStart(L.Callback):
    """Registered before and after the budget: the run's state on either side of the probe."""

    def on_fit_start(self, trainer, module):
        self.state = {k: v.clone() for k, v in module.state_dict().items()}
        self.counters = replace(module.counters)
        self.optimizer_states = [len(o.state) for o in trainer.optimizers]
        self.rng = torch.get_rng_state()


def test_probe_runs_real_updates_and_leaves_the_run_untouched(datamodule):
    """The probe measures training steps of the run's own model (every network changes while it
    measures), then puts weights, buffers, optimizer state, counters and RNG back exactly."""
    module = tiny_module(loss={"disc_start_step": 5}, training={"accumulate_grad_batches": 2})
    reader = ChangeWatchingReader()
    before, after = StateAtFitStart(), StateAtFitStart()
    budget = MemoryBudget(max_memory="8GB", reader=reader)
    tiny_trainer(max_steps=1, callbacks=[before, budget, after]).fit(module, datamodule)
    assert reader.changed and all(all(changed.values()) for changed in reader.changed)
    assert budget.plan.micro_batch == 4 and module.accumulate == 1  # 2 x 2 images per step fit in one micro-batch
    assert before.state.keys() == after.state.keys()
    assert all(torch.equal(before.state[k], after.state[k]) for k in before.state)
    assert before.counters == after.counters and after.optimizer_states == [0, 0]
    assert torch.equal(before.rng, after.rng)

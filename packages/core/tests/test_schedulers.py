"""Tests for pa_core.schedulers: values against the documented formulas, state round trips,
continuation and validation."""

from __future__ import annotations

import io
import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from pa_core.placeholders import TrainerPlaceholderValues, replace_trainer_placeholder_values
from pa_core.schedulers import (
    CosineLrScheduler,
    SchedulerBase,
    StatefulSchedulerBase,
    WSDLrScheduler,
    estimate_checkpoint_steps,
)

LR_1, LR_2 = 0.01, 0.002


def make_optimizer(lr_1: float = LR_1, lr_2: float = LR_2, **defaults) -> torch.optim.Optimizer:
    model = torch.nn.Linear(2, 1)
    return torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": lr_2}], lr=lr_1, **defaults)


def collect(scheduler: StatefulSchedulerBase, num_steps: int) -> list[list[float]]:
    """Values after each of ``num_steps`` calls to step(): entry n is update n, one value per group."""
    values = []
    for _ in range(num_steps):
        scheduler.step()
        values.append([group["lr"] for group in scheduler.optimizer.param_groups])
    return values


def roundtrip(state: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as a checkpoint file would be."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# SchedulerBase / StatefulSchedulerBase ------------------------------------------------------


class HalveEveryUpdate(SchedulerBase):
    """Schedules any field: value = initial * 0.5 ** n, one value per group."""

    def get_updated_values(self, num_updates):
        return [base * 0.5**num_updates for base in self.base_lr_values]


class ConstantOrNothing(StatefulSchedulerBase):
    def __init__(self, optimizer, value):
        super().__init__(optimizer, param_group_field="momentum")
        self.value = value

    def get_updated_values(self, num_updates):
        return None if num_updates % 2 else self.value + num_updates


def test_scheduler_base_schedules_weight_decay_per_group():
    optimizer = make_optimizer()
    optimizer.param_groups[1]["weight_decay"] = 0.2
    optimizer.param_groups[0]["weight_decay"] = 0.1
    scheduler = HalveEveryUpdate(optimizer, param_group_field="weight_decay")

    assert [g["initial_weight_decay"] for g in optimizer.param_groups] == [0.1, 0.2]
    scheduler.step_update(3)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1 / 8, 0.2 / 8]
    assert [g["lr"] for g in optimizer.param_groups] == [LR_1, LR_2]  # other fields untouched


def test_scheduler_base_number_broadcasts_and_none_leaves_groups():
    optimizer = make_optimizer(momentum=0.9)
    scheduler = ConstantOrNothing(optimizer, value=0.5)
    scheduler.step()  # update 0 -> 0.5 for every group
    assert [g["momentum"] for g in optimizer.param_groups] == [0.5, 0.5]
    scheduler.step()  # update 1 -> None: unchanged
    assert [g["momentum"] for g in optimizer.param_groups] == [0.5, 0.5]
    scheduler.step()  # update 2
    assert [g["momentum"] for g in optimizer.param_groups] == [2.5, 2.5]


def test_scheduler_base_keeps_existing_initial_value_and_checks_fields():
    optimizer = make_optimizer()
    optimizer.param_groups[0]["initial_lr"] = 0.5  # e.g. restored with an optimizer state
    scheduler = HalveEveryUpdate(optimizer)
    assert scheduler.base_lr_values == [0.5, LR_2]
    assert optimizer.param_groups[0]["lr"] == 0.5
    with pytest.raises(KeyError, match="nesterov_momentum"):
        HalveEveryUpdate(optimizer, param_group_field="nesterov_momentum")


def test_scheduler_base_rejects_wrong_number_of_values():
    class TooMany(SchedulerBase):
        def get_updated_values(self, num_updates):
            return [1.0, 2.0, 3.0]

    with pytest.raises(ValueError, match="3 values for 2 parameter groups"):
        TooMany(make_optimizer()).step_update(0)


def test_stateful_first_step_is_update_zero_and_state_round_trips():
    optimizer = make_optimizer(momentum=0.9)
    scheduler = ConstantOrNothing(optimizer, value=0.25)
    scheduler.step()
    assert optimizer.param_groups[0]["momentum"] == 0.25  # update 0
    scheduler.step()
    scheduler.step()
    state = roundtrip(scheduler.state_dict())
    restored = ConstantOrNothing(make_optimizer(momentum=0.9), value=0.25)
    restored.load_state_dict(state)
    scheduler.step()
    restored.step()
    assert restored._num_updates == scheduler._num_updates == 3
    scheduler.step()
    restored.step()
    assert restored.optimizer.param_groups[0]["momentum"] == optimizer.param_groups[0]["momentum"] == 4.25


# CosineLrScheduler --------------------------------------------------------------------------


def cosine_expected(n, base, total, warmup, cooldown, k, minimum, start):
    """The closed form from the CosineLrScheduler docstring, written out independently."""
    if n < warmup:
        return start + n * (base - start) / warmup
    if n >= total - cooldown:
        return minimum
    fraction = (n - warmup) / (total - warmup - cooldown)
    return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * fraction**k))


def test_cosine_first_value_is_base_and_last_is_min():
    optimizer = make_optimizer()
    scheduler = CosineLrScheduler(optimizer, total_num_epochs=2, num_update_steps_per_epoch=5, lr_min=1e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [LR_1, LR_2]  # before the first step
    values = collect(scheduler, 12)
    assert values[0] == [LR_1, LR_2]
    assert max(v[0] for v in values) == LR_1
    assert values[10] == values[11] == [1e-4, 1e-4]
    assert all(a[0] > b[0] for a, b in zip(values[:10], values[1:11]))  # strictly decreasing to the end


def test_cosine_matches_closed_form_at_every_step():
    total, warmup, cooldown, k = 4 * 3, 1 * 3, 1 * 3, 1.5
    scheduler = CosineLrScheduler(
        make_optimizer(),
        total_num_epochs=4,
        num_update_steps_per_epoch=3,
        k_decay=k,
        min_lr_ratio=0.05,
        num_warmup_epochs=1,
        warmup_starting_lr_ratio=0.1,
        num_cooldown_epochs=1,
    )
    values = collect(scheduler, total + 3)
    for n, row in enumerate(values):
        for base, value in zip((LR_1, LR_2), row):
            expected = cosine_expected(n, base, total, warmup, cooldown, k, 0.05 * base, 0.1 * base)
            assert value == pytest.approx(expected, rel=1e-12, abs=1e-15), n


def test_cosine_warmup_from_absolute_start():
    scheduler = CosineLrScheduler(
        make_optimizer(),
        total_num_epochs=10,
        num_update_steps_per_epoch=4,
        num_warmup_epochs=2,
        warmup_starting_lr=1e-5,
    )
    assert scheduler.optimizer.param_groups[0]["lr"] == 1e-5  # the first update already warms up
    values = collect(scheduler, 40)
    assert values[0] == [1e-5, 1e-5]
    assert values[4] == pytest.approx([1e-5 + 0.5 * (LR_1 - 1e-5), 1e-5 + 0.5 * (LR_2 - 1e-5)])
    assert values[8] == [LR_1, LR_2]
    assert max(v[0] for v in values) == LR_1 and max(v[1] for v in values) == LR_2


def test_cosine_warmup_from_ratio_is_per_group_and_ends_at_base():
    scheduler = CosineLrScheduler(
        make_optimizer(),
        total_num_epochs=10,
        num_update_steps_per_epoch=4,
        num_warmup_epochs=2,
        warmup_starting_lr_ratio=0.01,
    )
    values = collect(scheduler, 40)
    assert values[0] == [0.01 * LR_1, 0.01 * LR_2]
    steps = [values[n + 1][0] - values[n][0] for n in range(8)]
    assert steps == pytest.approx([(LR_1 - 0.01 * LR_1) / 8] * 8)
    assert values[8] == [LR_1, LR_2]
    assert max(v[0] for v in values) == LR_1 and max(v[1] for v in values) == LR_2


def test_cosine_cooldown_holds_the_minimum():
    scheduler = CosineLrScheduler(
        make_optimizer(), total_num_epochs=10, num_update_steps_per_epoch=10, lr_min=1e-6, num_cooldown_epochs=2
    )
    values = collect(scheduler, 105)
    assert values[80:] == [[1e-6, 1e-6]] * 25  # cooldown and beyond
    assert values[79][0] > 1e-6  # the cosine reaches the minimum exactly where cooldown starts


def test_cosine_with_warmup_and_cooldown_reaches_min_at_cooldown_start():
    scheduler = CosineLrScheduler(
        make_optimizer(), total_num_epochs=10, num_update_steps_per_epoch=10, num_warmup_epochs=2, num_cooldown_epochs=2
    )
    values = [v[0] for v in collect(scheduler, 100)]
    assert values[20] == LR_1
    assert values[79] == pytest.approx(1e-6 + (LR_1 - 1e-6) * (1 + math.cos(math.pi * 59 / 60)) / 2)
    assert values[80:] == [1e-6] * 20


def test_cosine_min_from_absolute_and_ratio():
    absolute = collect(CosineLrScheduler(make_optimizer(), 1, 10, lr_min=1e-4), 11)
    ratio = collect(CosineLrScheduler(make_optimizer(), 1, 10, lr_min=1e-4, min_lr_ratio=0.5), 11)
    assert absolute[-1] == [1e-4, 1e-4]
    assert ratio[-1] == [0.5 * LR_1, 0.5 * LR_2]  # the ratio takes precedence
    assert min(v[1] for v in ratio) == 0.5 * LR_2


def test_cosine_k_decay_keeps_the_rate_high_for_longer():
    k1 = [v[0] for v in collect(CosineLrScheduler(make_optimizer(), 1, 20, lr_min=0.0), 20)]
    k2 = [v[0] for v in collect(CosineLrScheduler(make_optimizer(), 1, 20, lr_min=0.0, k_decay=2.0), 20)]
    assert k1[0] == k2[0] == LR_1
    assert all(b > a for a, b in zip(k1[1:], k2[1:]))
    assert k2[10] == pytest.approx(0.5 * LR_1 * (1 + math.cos(math.pi * 0.25)))


def test_cosine_state_round_trip_gives_identical_next_value():
    kwargs = dict(total_num_epochs=10, num_update_steps_per_epoch=10, num_warmup_epochs=2, num_cooldown_epochs=2)
    optimizer = make_optimizer()
    scheduler = CosineLrScheduler(optimizer, **kwargs)
    collect(scheduler, 37)
    scheduler_state = roundtrip(scheduler.state_dict())
    optimizer_state = optimizer.state_dict()
    expected = collect(scheduler, 5)

    new_optimizer = make_optimizer(lr_1=0.5, lr_2=0.5)
    new_optimizer.load_state_dict(optimizer_state)  # brings initial_lr back
    restored = CosineLrScheduler(new_optimizer, **kwargs)
    restored.load_state_dict(scheduler_state)
    assert collect(restored, 5) == expected


def test_cosine_create_scheduler_fn_uses_placeholders():
    fn = CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1, min_lr_ratio=0.1)
    assert isinstance(fn, partial) and fn.func is CosineLrScheduler
    assert fn.keywords["total_num_epochs"] is TrainerPlaceholderValues.NUM_EPOCHS
    assert fn.keywords["num_update_steps_per_epoch"] is TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH

    run_config = SimpleNamespace(num_epochs=3, num_update_steps_per_epoch=4, num_local_update_steps_per_epoch=4)
    scheduler = replace_trainer_placeholder_values(SimpleNamespace(run_config=run_config), fn)(make_optimizer())
    assert scheduler.total_iterations == 12 and scheduler.warmup_iterations == 4 and scheduler.lr_min_ratio == 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(total_num_epochs=0), "total_num_epochs=0"),
        (dict(num_update_steps_per_epoch=-1), "num_update_steps_per_epoch=-1"),
        (dict(lr_min=-1.0), "lr_min=-1.0"),
        (dict(num_warmup_epochs=3, num_cooldown_epochs=3), "num_warmup_epochs=3 plus num_cooldown_epochs=3"),
    ],
)
def test_cosine_validation(kwargs, message):
    arguments = dict(total_num_epochs=5, num_update_steps_per_epoch=2) | kwargs
    with pytest.raises(ValueError, match=message):
        CosineLrScheduler(make_optimizer(), **arguments)


# WSDLrScheduler -----------------------------------------------------------------------------


def test_wsd_warmup_then_stable():
    scheduler = WSDLrScheduler(make_optimizer(), total_steps=100, num_warmup_steps=10, warmup_starting_lr=1e-4)
    assert scheduler.optimizer.param_groups[0]["lr"] == 1e-4
    values = collect(scheduler, 100)
    assert values[0] == [1e-4, 1e-4]
    assert values[5] == pytest.approx([1e-4 + 0.5 * (LR_1 - 1e-4), 1e-4 + 0.5 * (LR_2 - 1e-4)])
    assert values[10:91] == [[LR_1, LR_2]] * 81  # stable up to and including the pre-decay step
    assert values[91][0] < LR_1


def test_wsd_default_warmup_is_none_or_one_percent():
    assert WSDLrScheduler(make_optimizer(), total_steps=1000).num_warmup_steps == 0
    assert WSDLrScheduler(make_optimizer(), total_steps=1000, num_warmup_steps=None).num_warmup_steps == 10


@pytest.mark.parametrize("inverse_sqrt", [True, False])
def test_wsd_decay_shapes(inverse_sqrt):
    r = 0.01
    scheduler = WSDLrScheduler(make_optimizer(), total_steps=100, lr_min=r, use_inverse_sqrt_decay=inverse_sqrt)
    values = collect(scheduler, 103)
    for n in range(90, 100):
        t = (n - 90) / 10
        for base, value in zip((LR_1, LR_2), values[n]):
            if inverse_sqrt:
                expected = base * (r + (1 - r) * (1 - math.sqrt(t)))
            else:
                expected = base / (t * (1 / r - 1) + 1)
            assert value == pytest.approx(expected, rel=1e-12)
    decay = [v[0] for v in values[90:101]]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert values[100:] == [[LR_1 * r, LR_2 * r]] * 3  # held after the end


def test_wsd_paper_shape_drops_faster_than_inverse_sqrt():
    paper = collect(WSDLrScheduler(make_optimizer(), total_steps=100, lr_min=0.01, use_inverse_sqrt_decay=False), 100)
    sqrt = collect(WSDLrScheduler(make_optimizer(), total_steps=100, lr_min=0.01), 100)
    assert paper[91][0] < sqrt[91][0]


def test_estimate_checkpoint_steps_is_geometric_and_ends_at_total():
    assert estimate_checkpoint_steps(100_000, 1) == [100_000]
    assert estimate_checkpoint_steps(100_000, 2) == [50_000, 100_000]
    assert estimate_checkpoint_steps(200_000, 3) == [50_000, 100_000, 200_000]
    assert estimate_checkpoint_steps(200_000, 4) == [25_000, 50_000, 100_000, 200_000]
    steps = estimate_checkpoint_steps(1000, 5)
    assert steps[-1] == 1000
    assert [b / a for a, b in zip(steps, steps[1:])] == pytest.approx([2.0] * 4, rel=0.02)
    with pytest.raises(ValueError, match="total_steps=7 is too small for num_checkpoints=4"):
        estimate_checkpoint_steps(7, 4)


def test_wsd_several_checkpoints_decay_before_each():
    scheduler = WSDLrScheduler(make_optimizer(), total_steps=400, num_checkpoints=3, decay_phase_ratio=0.1, lr_min=0.01)
    assert scheduler.get_checkpoint_steps() == [100, 200, 400]
    assert scheduler.get_decay_info() == [
        {"period_start": 0, "period_end": 100, "decay_steps": 10, "pre_decay_step": 90},
        {"period_start": 100, "period_end": 200, "decay_steps": 10, "pre_decay_step": 190},
        {"period_start": 200, "period_end": 400, "decay_steps": 20, "pre_decay_step": 380},
    ]
    values = [v[0] for v in collect(scheduler, 401)]
    for info in scheduler.get_decay_info():
        start, end, pre_decay = info["period_start"], info["period_end"], info["pre_decay_step"]
        assert values[start : pre_decay + 1] == [LR_1] * (pre_decay + 1 - start)
        decay = values[pre_decay:end]
        assert all(a > b for a, b in zip(decay, decay[1:]))
        assert values[end - 1] < 0.35 * LR_1
    assert values[400] == pytest.approx(0.01 * LR_1)


def test_wsd_phase_info_and_current_step():
    scheduler = WSDLrScheduler(make_optimizer(), total_steps=400, num_checkpoints=3)
    assert scheduler.get_phase_info(0)["period_end"] == 100
    assert scheduler.get_phase_info(100)["period_end"] == 100  # a checkpoint ends its own period
    assert scheduler.get_phase_info(101)["period_end"] == 200
    assert scheduler.get_phase_info(10_000)["period_end"] == 400
    assert scheduler.get_current_step() == -1
    collect(scheduler, 150)
    assert scheduler.get_current_step() == 149
    assert scheduler.get_current_phase_info()["period_start"] == 100
    scheduler.get_decay_info()[0]["period_end"] = -1  # a copy: the scheduler is unaffected
    assert scheduler.get_decay_info()[0]["period_end"] == 100


def test_wsd_state_round_trip_gives_identical_next_value():
    kwargs = dict(total_steps=200, num_checkpoints=2, num_warmup_steps=5)
    scheduler = WSDLrScheduler(make_optimizer(), **kwargs)
    collect(scheduler, 93)  # inside the first decay
    state = roundtrip(scheduler.state_dict())
    expected = collect(scheduler, 10)
    restored = WSDLrScheduler(make_optimizer(), **kwargs)
    restored.load_state_dict(state)
    assert collect(restored, 10) == expected


def test_wsd_continuation_from_pre_decay_state_keeps_new_total():
    initial = WSDLrScheduler(make_optimizer(), total_steps=100, num_warmup_steps=10, lr_min=0.01)
    pre_decay = initial.get_decay_info()[0]["pre_decay_step"]
    while initial.get_current_step() + 1 < pre_decay:  # as WSDCheckpointCallback saves it
        initial.step()
    state = roundtrip(initial.state_dict())

    continued = WSDLrScheduler(
        make_optimizer(lr_1=0.5, lr_2=0.5),
        total_steps=60,
        num_warmup_steps=10,
        lr_min=0.01,
        is_continuation_from_checkpoint=True,
    )
    continued.load_state_dict(state)
    assert continued.total_steps == 60 and continued.get_checkpoint_steps() == [60]
    assert continued.get_current_step() == -1
    values = collect(continued, 61)
    # no warmup; stable at the saved peak rates through the new pre-decay step, 60 - int(60 * 0.1)
    assert values[:55] == [[LR_1, LR_2]] * 55
    assert values[55][0] < LR_1
    assert values[60] == pytest.approx([0.01 * LR_1, 0.01 * LR_2])


def test_wsd_continuation_run_resumes_exactly_when_interrupted():
    kwargs = dict(total_steps=60, num_checkpoints=2, is_continuation_from_checkpoint=True)
    scheduler = WSDLrScheduler(make_optimizer(), **kwargs)
    collect(scheduler, 20)  # mid-segment, not a pre-decay step or checkpoint
    state = roundtrip(scheduler.state_dict())
    expected = collect(scheduler, 30)
    resumed = WSDLrScheduler(make_optimizer(), **kwargs)
    resumed.load_state_dict(state)
    assert resumed.get_current_step() == 19
    assert collect(resumed, 30) == expected


def test_wsd_warmup_as_long_as_the_run_is_accepted_as_upstream_accepted_it():
    scheduler = WSDLrScheduler(make_optimizer(), total_steps=100, num_warmup_steps=100, warmup_starting_lr=0.0)
    values = collect(scheduler, 100)
    assert values[0] == [0.0, 0.0]
    assert values[50] == pytest.approx([0.5 * LR_1, 0.5 * LR_2])  # the warmup line, through the decay window
    assert values[99] == pytest.approx([0.99 * LR_1, 0.99 * LR_2])
    into_decay = collect(WSDLrScheduler(make_optimizer(), total_steps=100, num_warmup_steps=95), 96)  # decay from 90
    start, r = 1e-6, 1e-6
    assert into_decay[94][0] == pytest.approx(start + (LR_1 - start) * 94 / 95)  # still warming up
    assert into_decay[95][0] == pytest.approx(LR_1 * (r + (1 - r) * (1 - math.sqrt(0.5))))  # then the decay's value


def test_wsd_previous_checkpoint_step_is_the_last_stable_update_before_the_latest_decay():
    scheduler = WSDLrScheduler(make_optimizer(), total_steps=200, num_checkpoints=2, decay_phase_ratio=0.1)
    # periods [0, 100) decaying from 90 and [100, 200) decaying from 190
    assert scheduler.previous_checkpoint_step is None
    collect(scheduler, 89)  # updates 0..88
    assert scheduler.previous_checkpoint_step is None
    collect(scheduler, 1)  # update 89, the last stable one before the first decay
    assert scheduler.previous_checkpoint_step == 89
    collect(scheduler, 100)  # through update 189
    assert scheduler.previous_checkpoint_step == 189
    restored = WSDLrScheduler(make_optimizer(), total_steps=200, num_checkpoints=2, decay_phase_ratio=0.1)
    restored.load_state_dict(roundtrip(scheduler.state_dict()))
    assert restored.previous_checkpoint_step == 189
    stateless = WSDLrScheduler(make_optimizer(), total_steps=200, num_checkpoints=2, decay_phase_ratio=0.1)
    stateless.step_update(150)  # TrainerWithTimmScheduler's way of stepping
    assert stateless.previous_checkpoint_step == 89


# What WSDLrScheduler.state_dict() of pytorch-accelerated 0.1.61 returns (its public attributes; no update count),
# here after 45 updates of WSDLrScheduler(SGD(lr=0.01), total_steps=100, num_warmup_steps=5, num_checkpoints=2,
# decay_phase_ratio=0.2, lr_min=0.01). Its checkpoints were [25, 50]: upstream's spacing, which pa does not keep.
UPSTREAM_WSD_STATE = {
    "param_group_field": "lr",
    "base_lr_values": [0.01],
    "total_steps": 100,
    "num_warmup_steps": 5,
    "decay_phase_ratio": 0.2,
    "lr_min": 0.01,
    "warmup_starting_lr": 1e-06,
    "use_inverse_sqrt_decay": True,
    "num_checkpoints": 2,
    "checkpoint_steps": [25, 50],
    "is_continuation_from_checkpoint": False,
    "previous_checkpoint_step": 44,
    "checkpoint_decay_info": [
        {"period_start": 0, "period_end": 25, "decay_steps": 5, "pre_decay_step": 20},
        {"period_start": 25, "period_end": 50, "decay_steps": 5, "pre_decay_step": 45},
    ],
}


def test_wsd_loads_a_state_dict_saved_by_pytorch_accelerated():
    model = torch.nn.Linear(2, 1)
    scheduler = WSDLrScheduler(torch.optim.SGD(model.parameters(), lr=0.02), total_steps=10)
    with pytest.warns(UserWarning, match="saved by pytorch-accelerated, which did not save the update count"):
        scheduler.load_state_dict(roundtrip(UPSTREAM_WSD_STATE))
    assert (scheduler.total_steps, scheduler.num_warmup_steps, scheduler.num_checkpoints) == (100, 5, 2)
    assert scheduler.base_lr_values == [0.01] and scheduler.lr_min == 0.01
    assert scheduler.previous_checkpoint_step == 44
    assert scheduler.get_checkpoint_steps() == [50, 100]  # pa's spacing
    assert scheduler.get_current_step() == -1  # its own count, as upstream kept its own

    continued = WSDLrScheduler(
        torch.optim.SGD(model.parameters(), lr=0.02), total_steps=40, is_continuation_from_checkpoint=True
    )
    continued.load_state_dict(roundtrip(UPSTREAM_WSD_STATE))  # a new segment, as upstream started one
    assert continued.get_current_step() == -1 and continued.previous_checkpoint_step is None
    assert collect(continued, 36)[-1] == [0.01]  # stable at the saved peak until 40 - int(40 * 0.1)
    assert continued.get_checkpoint_steps() == [40]


def test_wsd_create_scheduler_fn_uses_placeholders():
    fn = WSDLrScheduler.create_scheduler_fn(num_warmup_epochs=2, num_checkpoints=2)
    assert fn.keywords["num_epochs"] is TrainerPlaceholderValues.NUM_EPOCHS
    run_config = SimpleNamespace(num_epochs=10, num_update_steps_per_epoch=8, num_local_update_steps_per_epoch=8)
    scheduler = replace_trainer_placeholder_values(SimpleNamespace(run_config=run_config), fn)(make_optimizer())
    assert scheduler.total_steps == 80 and scheduler.num_warmup_steps == 16
    assert scheduler.get_checkpoint_steps() == [40, 80]
    default = replace_trainer_placeholder_values(
        SimpleNamespace(run_config=run_config), WSDLrScheduler.create_scheduler_fn()
    )(make_optimizer())
    assert default.num_warmup_steps == 0  # 1% of 80 updates, rounded down


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(total_steps=0), "total_steps=0 .*positive integer"),
        (dict(total_steps=100, num_epochs=2, num_update_steps_per_epoch=5), "give total_steps, or num_epochs"),
        (dict(num_epochs=2), "num_update_steps_per_epoch=None"),
        (dict(total_steps=100, decay_phase_ratio=1.5), r"decay_phase_ratio=1.5 .*\[0, 1\]"),
        (dict(total_steps=100, decay_phase_ratio=0.5, num_checkpoints=2), "decay_phase_ratio=0.5 .*at most 1/3"),
        (dict(total_steps=100, lr_min=-0.1), r"lr_min=-0.1 .*\[0, 1\]"),
        (dict(total_steps=100, lr_min=0.0, use_inverse_sqrt_decay=False), "lr_min=0.0 .*use_inverse_sqrt_decay=False"),
        (dict(total_steps=100, warmup_starting_lr=0.5), "warmup_starting_lr=0.5 .*largest base learning rate, 0.01"),
        (dict(total_steps=100, num_warmup_steps=-1), "num_warmup_steps=-1"),
        (dict(total_steps=100, num_checkpoints=0), "num_checkpoints=0 .*positive integer"),
        (dict(total_steps=3, num_checkpoints=3), "total_steps=3 is too small for num_checkpoints=3"),
    ],
)
def test_wsd_validation_names_argument_value_and_accepted(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WSDLrScheduler(make_optimizer(), **kwargs)

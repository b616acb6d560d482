"""Tests for pa_core.utils."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import PartialState
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pa_core.testing import run_on_processes
from pa_core.utils import (
    LIMIT_BATCHES_ENV_VAR,
    DataLoaderSlice,
    LimitBatches,
    ModelEma,
    local_process_zero_first,
    local_process_zero_only,
    remove_padding,
    worker_init_fn,
    world_process_zero_only,
)

# ModelEma ------------------------------------------------------------------------------------


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def change(model: nn.Module, seed: int) -> None:
    """Change every parameter and the batch-norm buffers."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    model.train()
    model(torch.randn(8, 3))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def test_model_ema_equals_hand_computed_average_with_buffers():
    model = make_model()
    ema = ModelEma(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training

    expected = snapshot(model)
    for seed in (1, 2):
        change(model, seed)
        current = snapshot(model)
        for key, value in current.items():
            if value.is_floating_point():
                expected[key] = 0.9 * expected[key] + 0.1 * value
            else:
                expected[key] = value
        ema.update(model)

    result = ema.module.state_dict()
    assert set(result) == set(expected)
    for key in expected:
        torch.testing.assert_close(result[key], expected[key], rtol=1e-6, atol=1e-7, msg=key)
    assert "1.running_mean" in result and result["1.num_batches_tracked"].item() == 2
    assert not torch.equal(result["1.running_var"], model.state_dict()["1.running_var"])


def test_model_ema_set_copies_and_forward_runs_the_average():
    model = make_model()
    ema = ModelEma(model, decay=0.99)
    change(model, 3)
    ema.set(model)
    for key, value in model.state_dict().items():
        assert torch.equal(ema.module.state_dict()[key], value), key
    model.eval()
    x = torch.randn(5, 3)
    assert torch.equal(ema(x), model(x))


def test_model_ema_update_fn_is_overridable():
    class KeepNewest(ModelEma):
        def update_fn(self, ema_model_weights, updated_model_weights):
            return updated_model_weights * 2

    model = make_model()
    ema = KeepNewest(model)
    ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, model[0].weight * 2)


def test_model_ema_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay=1.5"):
        ModelEma(make_model(), decay=1.5)


# remove_padding ------------------------------------------------------------------------------


def test_remove_padding_1d():
    assert remove_padding(torch.tensor([1, -1, 2, 3, -1]), -1).tolist() == [1, 2, 3]


def test_remove_padding_2d_drops_only_fully_padded_rows():
    t = torch.tensor([[1, 2], [-1, -1], [-1, 3], [-1, -1]])
    assert remove_padding(t, -1).tolist() == [[1, 2], [-1, 3]]


def test_remove_padding_3d_and_4d():
    t3 = torch.zeros(4, 2, 3)
    t3[1] = 7.0
    t3[3, 1, 2] = 7.0  # one real value keeps the entry
    out3 = remove_padding(t3, 7.0)
    assert out3.shape == (3, 2, 3) and torch.equal(out3[2], t3[3])

    t4 = torch.arange(5 * 2 * 2 * 2, dtype=torch.float32).reshape(5, 2, 2, 2)
    t4[0] = -100
    t4[4] = -100
    out4 = remove_padding(t4, -100)
    assert torch.equal(out4, t4[1:4])


def test_remove_padding_nan_and_errors():
    t = torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")]])
    assert remove_padding(t, float("nan")).shape == (1, 2)
    with pytest.raises(ValueError, match="0-D"):
        remove_padding(torch.tensor(3.0), 0)


# LimitBatches and DataLoaderSlice ------------------------------------------------------------


def test_limit_batches_sets_and_removes_the_variable(monkeypatch):
    monkeypatch.delenv(LIMIT_BATCHES_ENV_VAR, raising=False)
    assert LIMIT_BATCHES_ENV_VAR == "PT_ACC_LIMIT_BATCHES"
    with LimitBatches(3) as limit:
        assert os.environ[LIMIT_BATCHES_ENV_VAR] == "3" and limit.num_batches == 3
    assert LIMIT_BATCHES_ENV_VAR not in os.environ


def test_limit_batches_restores_a_previous_value_even_on_error(monkeypatch):
    monkeypatch.setenv(LIMIT_BATCHES_ENV_VAR, "7")
    with pytest.raises(RuntimeError), LimitBatches(2):
        assert os.environ[LIMIT_BATCHES_ENV_VAR] == "2"
        raise RuntimeError
    assert os.environ[LIMIT_BATCHES_ENV_VAR] == "7"
    with pytest.raises(ValueError, match="num_batches=0"):
        LimitBatches(0)


def test_dataloader_slice_length_items_and_attributes():
    dl = DataLoader(torch.arange(20), batch_size=4)  # 5 batches
    sliced = DataLoaderSlice(dl, 3)
    assert len(sliced) == 3
    assert [b.tolist() for b in sliced] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert [b.tolist() for b in sliced] == [b.tolist() for b in list(dl)[:3]]  # iterable again
    assert sliced.batch_size == 4 and sliced.dataset is dl.dataset
    longer = DataLoaderSlice(dl, 50)
    assert len(longer) == 5 and len(list(longer)) == 5
    assert len(DataLoaderSlice(iter(range(10)), 4)) == 4  # no len(): the slice size
    with pytest.raises(AttributeError):
        _ = sliced.not_an_attribute


# worker_init_fn ------------------------------------------------------------------------------


def test_worker_init_fn_seeds_random_and_numpy_from_torch_seed():
    np = pytest.importorskip("numpy")
    torch.manual_seed(1234)
    assert worker_init_fn(0) == 1234
    values = random.random(), np.random.rand()
    assert values == (random.Random(1234).random(), np.random.RandomState(1234).rand())


class RandomValues(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.tensor(random.random(), dtype=torch.float64)


def test_worker_init_fn_gives_workers_different_python_random_streams():
    torch.manual_seed(0)
    dl = DataLoader(RandomValues(), batch_size=1, num_workers=2, worker_init_fn=worker_init_fn)
    values = [b.item() for b in dl]  # worker 0 yields items 0 and 2, worker 1 items 1 and 3
    assert len(set(values)) == 4


# process decorators --------------------------------------------------------------------------


@local_process_zero_only
def local_only(value):
    return value


@world_process_zero_only
def world_only(value):
    return value


@local_process_zero_first
def first(marker: str):
    """Return whether ``marker`` existed when this process ran; process 0 then creates it."""
    existed = os.path.exists(marker)
    state = PartialState()
    if state.local_process_index == 0:
        if state.num_processes > 1:
            time.sleep(0.5)  # the other process would look for the marker meanwhile, were it not held back
        Path(marker).touch()
    return existed


@pytest.fixture
def fresh_partial_state():
    """Leave accelerate's process state as it was found."""
    was_initialized = bool(PartialState._shared_state)
    yield
    if not was_initialized:
        PartialState._reset_state()


def test_decorators_on_one_process(tmp_path, fresh_partial_state):
    assert local_only(5) == 5
    assert world_only("x") == "x"
    assert first(str(tmp_path / "marker")) is False
    assert (tmp_path / "marker").exists()
    assert local_only.__name__ == "local_only" and first.__doc__.startswith("Return whether")


def two_process_worker(out_dir: str) -> None:
    """Runs in each of two processes; writes what the decorators returned."""
    state = PartialState(cpu=True)
    assert state.num_processes == 2
    result = {
        "rank": state.process_index,
        "local_only": local_only(state.process_index + 10),
        "world_only": world_only(state.process_index + 20),
        "first_saw_marker": first(os.path.join(out_dir, "marker")),
    }
    Path(out_dir, f"rank{state.process_index}.json").write_text(json.dumps(result))


@pytest.mark.multiprocess
@pytest.mark.skipif(
    torch.cuda.is_available(), reason="forks the test process, which a used CUDA context does not survive"
)
def test_decorators_on_two_processes(tmp_path):
    run_on_processes(two_process_worker, str(tmp_path), num_processes=2)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert results[0] == {"rank": 0, "local_only": 10, "world_only": 20, "first_saw_marker": False}
    assert results[1] == {"rank": 1, "local_only": None, "world_only": None, "first_saw_marker": True}

"""Tests for pa_core.finetuning.ModelFreezer."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from pa_core import Trainer, hookimpl
from pa_core.finetuning import Layer, LayerGroup, ModelFreezer
from pa_core.testing import make_classification_dataset


class Scaled(nn.Module):
    """A module with a parameter of its own and a child."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))
        self.inner = nn.Linear(8, 8)

    def forward(self, x):
        return self.inner(x) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)  # group 0 / -4
        self.block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))  # group 1 / -3
        self.scaled = Scaled()  # group 2 / -2
        self.head = nn.Linear(8, 2)  # group 3 / -1

    def forward(self, x):
        return self.head(self.scaled(self.block(self.stem(x))))


def ids(params):
    return {id(p) for p in params}


def group_params(model):
    return {
        0: list(model.stem.parameters()),
        1: list(model.block[0].parameters()),
        "bn": list(model.block[1].parameters()),
        2: [model.scaled.scale, *model.scaled.inner.parameters()],
        3: list(model.head.parameters()),
    }


def trainable(params):
    return [p.requires_grad for p in params]


def test_layer_groups_and_layers():
    model = Net()
    freezer = ModelFreezer(model)
    groups = freezer.get_layer_groups()
    assert all(isinstance(g, LayerGroup) for g in groups)
    assert [g.layer_group_idx for g in groups] == [(0, -4), (1, -3), (2, -2), (3, -1)]
    assert [g.module for g in groups] == [model.stem, model.block, model.scaled, model.head]
    assert not any(g.is_frozen for g in groups)

    layers = freezer.get_layers()
    assert all(isinstance(layer, Layer) for layer in layers)
    assert [(layer.layer_group_idx[0], layer.module) for layer in layers] == [
        (0, model.stem),
        (1, model.block[0]),
        (1, model.block[1]),
        (1, model.block[2]),
        (2, model.scaled),
        (2, model.scaled.inner),
        (3, model.head),
    ]


def test_creating_a_freezer_unfreezes_everything():
    model = Net()
    model.stem.weight.requires_grad = False
    ModelFreezer(model)
    assert all(p.requires_grad for p in model.parameters())


def test_default_freeze_keeps_last_group_and_batch_norm_trainable():
    model = Net()
    freezer = ModelFreezer(model)
    freezer.freeze()
    params = group_params(model)
    assert not any(trainable(params[0] + params[1] + params[2]))
    assert all(trainable(params[3] + params["bn"]))
    assert ids(freezer.get_trainable_parameters()) == ids(params["bn"] + params[3])
    assert [g.is_frozen for g in freezer.get_layer_groups()] == [True, True, True, False]


@pytest.mark.parametrize(("from_index", "to_index"), [(1, 2), (-3, -2), (2, 1), (-2, 1)])
def test_freeze_range_is_inclusive_with_negative_indexes(from_index, to_index):
    model = Net()
    freezer = ModelFreezer(model)
    freezer.freeze(from_index, to_index)
    params = group_params(model)
    assert all(trainable(params[0] + params[3] + params["bn"]))
    assert not any(trainable(params[1] + params[2]))


def test_freeze_batch_norms_when_asked():
    model = Net()
    freezer = ModelFreezer(model, freeze_batch_norms=True)
    freezer.freeze(0, -1)
    assert freezer.get_trainable_parameters() == []
    unfrozen = freezer.unfreeze(1, 1)
    assert ids(unfrozen[1]["params"]) == ids(group_params(model)[1] + group_params(model)["bn"])


def test_set_modules_as_eval_puts_frozen_modules_in_eval_mode():
    model = Net().train()
    freezer = ModelFreezer(model)
    freezer.freeze(0, -2, set_modules_as_eval=True)
    assert not any(trainable(group_params(model)[0]))  # frozen as well as in eval mode
    for module in (model.stem, model.block, model.block[0], model.block[2], model.scaled, model.scaled.inner):
        assert not module.training, module
    assert model.block[1].training  # batch norm left alone
    assert model.head.training


def test_freeze_without_set_modules_as_eval_keeps_training_mode():
    model = Net().train()
    ModelFreezer(model).freeze(0, -2)
    assert all(module.training for module in model.modules())


def test_eval_mode_really_disables_dropout():
    torch.manual_seed(0)
    model = Net().train()
    ModelFreezer(model).freeze(0, 1, set_modules_as_eval=True)
    x = torch.randn(16, 8)
    assert torch.equal(model.block[2](x), x)


@pytest.mark.parametrize("set_training", [True, False])
def test_unfreeze_honours_set_modules_as_training(set_training):
    model = Net().train()
    freezer = ModelFreezer(model)
    freezer.freeze(0, -1, set_modules_as_eval=True)
    freezer.unfreeze(0, 1, set_modules_as_training=set_training)
    params = group_params(model)
    assert all(trainable(params[0] + params[1]))  # unfrozen either way
    assert model.stem.training is set_training
    assert model.block[2].training is set_training
    assert not model.head.training  # outside the range


def test_unfreeze_returns_exactly_the_newly_trainable_parameters():
    model = Net()
    freezer = ModelFreezer(model)
    freezer.freeze(0, -1)
    params = group_params(model)

    last = freezer.unfreeze(-1, -1)
    assert list(last) == [3] and ids(last[3]["params"]) == ids(params[3])

    middle = freezer.unfreeze(-2, 1)  # batch norm never frozen: not returned
    assert sorted(middle) == [1, 2]
    assert ids(middle[1]["params"]) == ids(params[1])
    assert ids(middle[2]["params"]) == ids(params[2])

    rest = freezer.unfreeze()  # all groups; only group 0 was still frozen
    assert list(rest) == [0] and ids(rest[0]["params"]) == ids(params[0])
    assert freezer.unfreeze() == {}


def test_unfrozen_parameters_can_be_added_to_the_optimizer_and_train():
    torch.manual_seed(0)
    model = Net()
    freezer = ModelFreezer(model)
    freezer.freeze()
    optimizer = torch.optim.SGD(freezer.get_trainable_parameters(), lr=0.1)
    for group in freezer.unfreeze(-2, -3).values():
        optimizer.add_param_group(group)  # raises if a parameter were already in the optimizer
    before = model.scaled.scale.detach().clone(), model.stem.weight.detach().clone()
    loss = model(torch.randn(4, 4)).pow(2).sum()
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.scaled.scale, before[0])  # newly unfrozen: updated
    assert torch.equal(model.stem.weight, before[1])  # still frozen: untouched
    assert model.stem.weight.grad is None


def test_out_of_range_index_is_an_error():
    freezer = ModelFreezer(Net())
    with pytest.raises(IndexError, match="index 4 is out of range; the model has 4 groups"):
        freezer.freeze(0, 4)
    with pytest.raises(IndexError, match="from -4 to 3"):
        freezer.unfreeze(-5)


def test_modules_frozen_as_eval_stay_in_eval_through_training_until_unfrozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    freezer = ModelFreezer(model)
    freezer.freeze(0, 1, set_modules_as_eval=True)
    modes = []

    class RecordModes:
        @hookimpl
        def on_train_step_start(self, trainer):
            modes.append([module.training for module in trainer.model])

    optimizer = torch.optim.SGD(freezer.get_trainable_parameters(), lr=0.1)
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, callbacks=[RecordModes()])
    data = make_classification_dataset(num_samples=16, seed=0)
    trainer.train(data, num_epochs=2, per_device_batch_size=8)  # model.train() at each epoch's start
    assert modes == [[False, False, True]] * 4
    copy.deepcopy(model).train()  # a copy (e.g. ModelEma's) keeps the behaviour, and pickles
    assert not pickle.loads(pickle.dumps(model))[0].train().training

    for params in freezer.unfreeze(0, 1).values():
        optimizer.add_param_group(params)
    modes.clear()
    trainer.train(data, num_epochs=1, per_device_batch_size=8)
    assert modes == [[True, True, True]] * 2

"""Freeze and unfreeze parts of a model for fine-tuning and transfer learning.

A *layer group* is one of the model's direct children (``model.children()``), numbered in
definition order from 0, or from -1 backwards. A *layer* is a module inside a group that holds
parameters of its own or has no children (a leaf). For::

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(8, 8)                                  # group 0 (or -3)
            self.body = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))  # group 1 (or -2)
            self.head = nn.Linear(8, 2)                                  # group 2 (or -1)

the groups are ``stem``, ``body``, ``head`` and the layers the three Linear modules and the
BatchNorm. Parameters registered directly on the model belong to no group and are never changed.

Typical gradual unfreezing::

    freezer = ModelFreezer(model)
    freezer.freeze()                          # all groups but the last
    optimizer = torch.optim.AdamW(freezer.get_trainable_parameters())
    ...
    for params in freezer.unfreeze(-2, -2).values():
        optimizer.add_param_group(params)
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterator
from typing import NamedTuple

from torch import nn

__all__ = ["BN_MODULES", "Layer", "LayerGroup", "ModelFreezer"]

BN_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
    nn.SyncBatchNorm,
)
"""The batch-norm module types that freezing leaves alone unless ``freeze_batch_norms=True``."""


class Layer(NamedTuple):
    """A layer: ``layer_group_idx`` is ``(index, negative index)`` of its group; ``is_frozen`` is
    True when any of its own parameters is frozen, or, for a layer without parameters, when it
    is in eval mode."""

    layer_group_idx: tuple[int, int]
    module: nn.Module
    is_frozen: bool


class LayerGroup(NamedTuple):
    """A layer group: ``layer_group_idx`` is ``(index, negative index)``; ``is_frozen`` is True
    when any of its parameters is frozen."""

    layer_group_idx: tuple[int, int]
    module: nn.Module
    is_frozen: bool


class ModelFreezer:
    """Freeze and unfreeze a model's layer groups (its direct children) by index.

    Indexes are inclusive at both ends and may be negative (-1 is the last group); the order
    of the two ends does not matter. Freezing sets ``requires_grad=False`` on the parameters of
    every layer in the range; unfreezing sets it back to True. Batch-norm layers
    (:data:`BN_MODULES`) are left trainable and in their current mode unless
    ``freeze_batch_norms=True``. Creating a ModelFreezer makes every parameter trainable.
    """

    def __init__(self, model: nn.Module, freeze_batch_norms: bool = False) -> None:
        """
        :param model: the model to freeze and unfreeze.
        :param freeze_batch_norms: also freeze (and unfreeze) batch-norm layers.
        """
        self.model = model
        self.freeze_bn = freeze_batch_norms
        for param in model.parameters():
            param.requires_grad = True
        self._layer_groups = list(model.children())
        self.num_groups = len(self._layer_groups)

    def _group_index(self, group_idx: int) -> tuple[int, int]:
        return group_idx, group_idx - self.num_groups

    def _iter_layers(self) -> Iterator[tuple[int, nn.Module]]:
        for group_idx, group in enumerate(self._layer_groups):
            for module in group.modules():
                has_own_params = next(module.parameters(recurse=False), None) is not None
                if has_own_params or next(module.children(), None) is None:
                    yield group_idx, module

    def get_layer_groups(self) -> list[LayerGroup]:
        """Every layer group, in order."""
        return [
            LayerGroup(
                self._group_index(group_idx),
                group,
                any(not param.requires_grad for param in group.parameters()),
            )
            for group_idx, group in enumerate(self._layer_groups)
        ]

    def get_layers(self) -> list[Layer]:
        """Every layer, in order, with the group it belongs to."""
        layers = []
        for group_idx, module in self._iter_layers():
            params = list(module.parameters(recurse=False))
            is_frozen = any(not param.requires_grad for param in params) if params else not module.training
            layers.append(Layer(self._group_index(group_idx), module, is_frozen))
        return layers

    def get_trainable_parameters(self) -> list[nn.Parameter]:
        """The model's parameters with ``requires_grad=True``: those an optimizer should update."""
        return [param for param in self.model.parameters() if param.requires_grad]

    def freeze(self, from_index: int = 0, to_index: int = -2, set_modules_as_eval: bool = False) -> None:
        """Freeze the layer groups ``from_index`` to ``to_index`` inclusive (by default every
        group except the last).

        :param from_index: the first group to freeze; negative counts from the end.
        :param to_index: the last group to freeze; negative counts from the end.
        :param set_modules_as_eval: also put the frozen modules in eval mode, so dropout stops
            and (frozen) batch norms stop updating their running statistics. They stay in eval
            mode when ``model.train()`` is called (the Trainer calls it at every epoch's start)
            until ``unfreeze(..., set_modules_as_training=True)``.
        :raises IndexError: when an index is outside the model's groups.
        """
        self._set_state(from_index, to_index, trainable=False, set_mode=set_modules_as_eval)

    def unfreeze(
        self, from_index: int = -1, to_index: int = 0, set_modules_as_training: bool = True
    ) -> dict[int, dict[str, list[nn.Parameter]]]:
        """Unfreeze the layer groups ``from_index`` to ``to_index`` inclusive (by default all).

        :param from_index: the first group to unfreeze; negative counts from the end.
        :param to_index: the last group to unfreeze; negative counts from the end.
        :param set_modules_as_training: also put the unfrozen modules in training mode.
        :return: ``{group_index: {"params": [...]}}`` holding exactly the parameters that were
            frozen and are now trainable, by (non-negative) group index; groups with none are
            left out. Each value can be passed to ``optimizer.add_param_group``.
        :raises IndexError: when an index is outside the model's groups.
        """
        return self._set_state(from_index, to_index, trainable=True, set_mode=set_modules_as_training)

    def _set_state(
        self, from_index: int, to_index: int, trainable: bool, set_mode: bool
    ) -> dict[int, dict[str, list[nn.Parameter]]]:
        first, last = sorted((self._convert_idx(from_index), self._convert_idx(to_index)))
        changed: dict[int, list[nn.Parameter]] = defaultdict(list)
        for group_idx in range(first, last + 1):
            for module in self._layer_groups[group_idx].modules():
                if isinstance(module, BN_MODULES) and not self.freeze_bn:
                    continue
                for param in module.parameters(recurse=False):
                    if param.requires_grad != trainable:
                        param.requires_grad = trainable
                        changed[group_idx].append(param)
                if set_mode and trainable:
                    module.__dict__.pop("train", None)  # train() is nn.Module's again
                    module.training = True
                elif set_mode:
                    # The Trainer calls model.train() at every epoch's start: keep this module out of it.
                    module.train = functools.partial(_train_kept_in_eval, module)  # type: ignore[method-assign]
                    module.training = False
        return {group_idx: {"params": params} for group_idx, params in changed.items()} if trainable else {}

    def _convert_idx(self, index: int) -> int:
        if not -self.num_groups <= index < self.num_groups:
            raise IndexError(
                f"layer group index {index} is out of range; the model has {self.num_groups} groups, "
                f"so indexes from {-self.num_groups} to {self.num_groups - 1} are accepted"
            )
        return index % self.num_groups


def _train_kept_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """``train()`` of a module frozen with ``set_modules_as_eval=True``: it stays in eval mode,
    whatever the mode asked, until ``unfreeze(..., set_modules_as_training=True)``."""
    return nn.Module.train(module, False)

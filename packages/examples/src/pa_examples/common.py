"""Data and small helpers that several examples share.

Everything here is plain PyTorch and scikit-learn, kept apart so that each example shows only
what it is about. Copy what you need next to an example when you take it away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.data import TensorDataset

__all__ = ["DigitsSplits", "accuracy", "digits_datasets", "leave_process_group", "mlp", "standardise"]


class DigitsSplits(NamedTuple):
    """Train, eval and test sets of scikit-learn's digits: ``(pixels, label)`` pairs, 64 float
    pixels per image, standardised with the training set's mean and deviation."""

    train: TensorDataset
    eval: TensorDataset
    test: TensorDataset
    num_classes: int


def digits_datasets(classes: Iterable[int] | None = None, seed: int = 0) -> DigitsSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), split 70/15/15
    with every digit in the same proportion in each split.

    :param classes: keep only these digits, relabelled 0, 1, ... in the order given (for
        transfer learning: pre-train on some digits, fine-tune on others); None keeps all ten.
    :param seed: the seed of the split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = torch.tensor(digits.data, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.long)
    num_classes = 10
    if classes is not None:
        classes = list(classes)
        keep = torch.isin(labels, torch.tensor(classes))
        pixels, labels = pixels[keep], labels[keep]
        relabel = {digit: index for index, digit in enumerate(classes)}
        labels = torch.tensor([relabel[int(label)] for label in labels])
        num_classes = len(classes)

    x_train, x_rest, y_train, y_rest = train_test_split(
        pixels, labels, test_size=0.3, random_state=seed, stratify=labels
    )
    x_eval, x_test, y_eval, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    x_train, x_eval, x_test = standardise(x_train, x_eval, x_test)
    return DigitsSplits(
        TensorDataset(x_train, y_train), TensorDataset(x_eval, y_eval), TensorDataset(x_test, y_test), num_classes
    )


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every tensor with the mean and standard deviation of ``train`` (all values at once).

    One mean and deviation for all pixels, not one per pixel: some border pixels are always 0
    in the training images, and scaling by their zero deviation would blow up the others.
    """
    mean, std = train.mean(), train.std()
    return [(t - mean) / std for t in (train, *others)]


def mlp(
    in_features: int = 64, num_classes: int = 10, hidden: Sequence[int] = (128,), dropout: float = 0.1
) -> nn.Module:
    """A multi-layer perceptron: Linear -> ReLU -> Dropout for each hidden size, then a Linear head."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


@torch.no_grad()
def accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    """The fraction of ``dataset`` that ``model`` classifies correctly (one forward pass, on the
    model's device).

    After ``trainer.train()`` every process holds the same weights, so each can compute this
    on its own; print it with ``trainer.print`` to see it once.
    """
    inputs, targets = dataset.tensors
    was_training = model.training
    model.eval()
    predictions = model(inputs.to(next(model.parameters()).device)).argmax(dim=-1).cpu()
    model.train(was_training)
    return (predictions == targets).float().mean().item()


def leave_process_group() -> None:
    """Leave the process group, if there is one, before the script ends.

    Launched on several processes (``torchrun``, ``accelerate launch``), each process joins a
    process group; leaving it explicitly lets every process exit cleanly and together. On one
    process this does nothing.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

"""Classify scikit-learn's bundled handwritten digits with the default Trainer and callbacks.

The README's main job. 1,797 images of 8x8 pixels ship with scikit-learn (no download); they
are split into train, eval and test sets, a small MLP is trained with AdamW while the default
callbacks print progress and the losses of every epoch, with the throughput monitor's samples per
second and peak memory, and the test accuracy is printed at the end: about 0.98 after 30 epochs,
in a few seconds on two CPU cores.

    pa-examples run digits                  # or: python -m pa_examples.digits
    pa-examples run digits --fast           # 3 epochs, for a quick check
    torchrun --nproc_per_node 2 -m pa_examples.digits     # the same script on two processes
    pa-examples run digits --dataset mnist --data-dir data   # MNIST instead (needs torchvision, downloads)
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pa_callbacks import ThroughputCallback, get_default_callbacks
from pa_core import Trainer
from pa_examples.common import accuracy, digits_datasets, leave_process_group, mlp, standardise

__all__ = ["load_mnist", "main"]


def load_mnist(data_dir: str) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """MNIST (70,000 images of 28x28 pixels) as flat, standardised vectors: 50,000 to train,
    10,000 to evaluate after each epoch, and the official 10,000 test images."""
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        raise SystemExit(
            "--dataset mnist needs torchvision: pip install torchvision (the same version line as your torch)."
        ) from None
    train = MNIST(data_dir, train=True, download=True)
    test = MNIST(data_dir, train=False, download=True)
    x, y = train.data.flatten(1).float(), train.targets
    x_train, x_eval, x_test = standardise(x[:50_000], x[50_000:], test.data.flatten(1).float())
    return TensorDataset(x_train, y[:50_000]), TensorDataset(x_eval, y[50_000:]), TensorDataset(x_test, test.targets)


def main(argv: list[str] | None = None) -> float:
    """Train, evaluate and print the test accuracy; return it."""
    parser = argparse.ArgumentParser(prog="pa-examples run digits", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size on each process (default: 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's learning rate (default: 0.003)")
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits", help="default: digits")
    parser.add_argument("--data-dir", default="data", help="where --dataset mnist is downloaded (default: ./data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 3 epochs only (for tests)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    torch.manual_seed(args.seed)
    if args.dataset == "mnist":
        train_set, eval_set, test_set = load_mnist(args.data_dir)
        model = mlp(in_features=784, hidden=(256,))
    else:
        train_set, eval_set, test_set, _ = digits_datasets()
        model = mlp(in_features=64, hidden=(128,))

    # The default callbacks (from pa-callbacks) move modules to the device, stop on a NaN loss,
    # print progress and a progress bar, and log the metrics of every epoch; the throughput monitor
    # adds samples and batches per second, seconds per update and peak memory to those metrics.
    trainer = Trainer(
        model=model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4),
        callbacks=(*get_default_callbacks(), ThroughputCallback()),
    )
    trainer.train(
        train_dataset=train_set,
        eval_dataset=eval_set,
        num_epochs=3 if args.fast else args.epochs,
        per_device_batch_size=args.batch_size,
    )

    # The test loss, through the same evaluation loop, then the accuracy with one forward pass.
    trainer.evaluate(test_set, per_device_batch_size=128)
    test_accuracy = accuracy(trainer.model, test_set)
    elapsed = time.perf_counter() - started
    trainer.print(f"test accuracy: {test_accuracy:.4f} ({len(test_set)} images, {elapsed:.1f} s)")
    leave_process_group()
    return test_accuracy


if __name__ == "__main__":
    main()

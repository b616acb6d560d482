"""Classify scikit-learn's bundled handwritten digits with the default Trainer and callbacks.

The README's main job: 1,797 8x8 images of digits, split into train, eval and test sets, a
small MLP, AdamW, the default progress and metric callbacks, and the test accuracy at the end.
No download: the data ships with scikit-learn.

    pa-examples run digits            # about 20 s on 2 CPU cores, >= 0.95 test accuracy
    pa-examples run digits --fast     # a few epochs, for tests
    torchrun --nproc_per_node 2 -m pa_examples.digits
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pa_core import Trainer


def load_digits_splits(seed: int = 0) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Standardised train (70%), eval (15%) and test (15%) sets of scikit-learn's digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    x_eval, x_test, y_eval, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    # One mean and scale for all pixels, from the training set only (some border pixels are
    # always 0 in training but not in the other splits, so per-pixel scaling would explode).
    mean, std = x_train.mean(), x_train.std()
    scale = lambda t: (t - mean) / std  # noqa: E731
    return (
        TensorDataset(scale(x_train), y_train),
        TensorDataset(scale(x_eval), y_eval),
        TensorDataset(scale(x_test), y_test),
    )


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))


def accuracy(trainer: Trainer, dataset: TensorDataset) -> float:
    """Test accuracy computed in the trainer's own evaluation loop, correct on any number of processes."""
    correct = []

    class CountCorrect:
        from pa_core import hookimpl

        @hookimpl
        def on_eval_step_end(self, batch, batch_output):
            correct.append((batch_output["model_outputs"].argmax(dim=-1) == batch[1]).sum())

    trainer.callback_handler.add_callback(CountCorrect())
    trainer.evaluate(dataset, per_device_batch_size=128)
    trainer.callback_handler.remove_callback(CountCorrect)
    local = torch.stack(correct).sum() if correct else torch.zeros((), device=trainer.device, dtype=torch.long)
    return trainer.gather(local.reshape(1)).sum().item() / len(dataset)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="pa-examples run digits", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="per device")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--fast", action="store_true", help="3 epochs (for tests)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    train_set, eval_set, test_set = load_digits_splits()
    model = make_model()
    trainer = Trainer(
        model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    )
    trainer.train(
        train_set,
        eval_dataset=eval_set,
        num_epochs=3 if args.fast else args.epochs,
        per_device_batch_size=args.batch_size,
    )
    test_accuracy = accuracy(trainer, test_set)
    trainer.print(f"test accuracy: {test_accuracy:.4f} ({len(test_set)} images, {time.perf_counter() - started:.1f} s)")
    if torch.distributed.is_initialized():  # on several processes, leave together and cleanly
        torch.distributed.destroy_process_group()
    return test_accuracy


if __name__ == "__main__":
    main()

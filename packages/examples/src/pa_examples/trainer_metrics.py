"""Compute accuracy inside the loop by subclassing the Trainer, correct on any number of processes.

Instead of a callback, override the Trainer's own steps: ``eval_epoch_start`` clears the
collected predictions, ``calculate_eval_batch_loss`` keeps each batch's predictions and targets
(on the device: no read per step), and ``eval_epoch_end`` gathers them from every process and
records the accuracy in the run history, before the callbacks see the end of the epoch.

On several processes evaluation batches are never padded with repeated samples, so the last
batches can differ in size between processes. ``trainer.gather(tensor, padding_value=-1)`` pads
them to a common size, gathers, and drops the padding again: every sample counts exactly once.

    pa-examples run trainer-metrics
    torchrun --nproc_per_node 2 -m pa_examples.trainer_metrics
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from pa_core import Trainer
from pa_examples.common import digits_datasets, leave_process_group, mlp

__all__ = ["TrainerWithAccuracy", "main"]


class TrainerWithAccuracy(Trainer):
    """Records ``eval_accuracy`` after each evaluation epoch of ``train()`` and
    ``evaluation_accuracy`` after ``evaluate()``."""

    accuracy_name = "eval_accuracy"

    def evaluation_run_start(self) -> None:
        super().evaluation_run_start()
        self.accuracy_name = "evaluation_accuracy"

    def evaluation_run_end(self) -> None:
        super().evaluation_run_end()
        self.accuracy_name = "eval_accuracy"

    def eval_epoch_start(self) -> None:
        super().eval_epoch_start()
        self._predictions: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def calculate_eval_batch_loss(self, batch: Any) -> dict[str, Any]:
        batch_output = super().calculate_eval_batch_loss(batch)
        self._predictions.append(batch_output["model_outputs"].argmax(dim=-1))
        self._targets.append(batch[1])
        return batch_output

    def eval_epoch_end(self) -> None:
        super().eval_epoch_end()
        # -1 is never a class: it marks the padding that gather removes.
        predictions = self.gather(torch.cat(self._predictions), padding_value=-1)
        targets = self.gather(torch.cat(self._targets), padding_value=-1)
        accuracy = (predictions == targets).float().mean().item()
        self.run_history.update_metric(self.accuracy_name, accuracy)
        self.print(f"{self.accuracy_name} over {len(targets)} samples: {accuracy:.4f}")


def main(argv: list[str] | None = None) -> float:
    """Train and evaluate with in-loop accuracy; return the test accuracy."""
    parser = argparse.ArgumentParser(prog="pa-examples run trainer-metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size on each process (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 2 epochs only (for tests)")
    args = parser.parse_args(argv)

    data = digits_datasets()
    torch.manual_seed(args.seed)
    model = mlp(in_features=64, num_classes=data.num_classes)
    trainer = TrainerWithAccuracy(model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=3e-3))
    trainer.train(
        data.train,
        num_epochs=2 if args.fast else args.epochs,
        eval_dataset=data.eval,
        per_device_batch_size=args.batch_size,
    )
    trainer.evaluate(data.test, per_device_batch_size=args.batch_size)
    test_accuracy = trainer.run_history.get_latest_metric("evaluation_accuracy")
    trainer.print(f"test accuracy: {test_accuracy:.4f}")
    leave_process_group()
    return test_accuracy


if __name__ == "__main__":
    main()

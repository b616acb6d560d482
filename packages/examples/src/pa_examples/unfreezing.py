"""Fine-tune a pre-trained model with gradual unfreezing (pa_core.finetuning.ModelFreezer).

Transfer learning in three steps, all on scikit-learn's digits:

1. pre-train a small network on the digits 0-4 (standing in for a model you downloaded);
2. give it a new head for the digits 5-9, freeze everything but the head and train the head;
3. unfreeze the next layer group, add its parameters to the optimizer with a lower learning
   rate, and call ``train()`` again with ``reset_run_history=False``: the run history, and the
   epoch count, carry on from step 2.

``ModelFreezer`` numbers a model's direct children (its *layer groups*) from 0, or from -1
backwards; ``freeze()`` freezes all groups but the last, and ``unfreeze(from, to)`` returns the
newly trainable parameters in the form ``optimizer.add_param_group`` takes. Batch norms stay
trainable unless you pass ``freeze_batch_norms=True``.

    pa-examples run unfreezing
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from pa_callbacks import get_default_callbacks
from pa_core import Trainer
from pa_core.finetuning import ModelFreezer
from pa_examples.common import accuracy, digits_datasets, leave_process_group

__all__ = ["DigitsNet", "count_trainable", "main"]


class DigitsNet(nn.Module):
    """Three layer groups: ``stem`` (0), ``body`` (1) and ``head`` (2)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU())
        self.body = nn.Sequential(nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch of flat 8x8 images."""
        return self.head(self.body(self.stem(x)))


def count_trainable(model: nn.Module) -> str:
    """How many of the model's parameters are trainable, as a sentence."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{trainable:,} of {sum(p.numel() for p in model.parameters()):,} parameters trainable"


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Pre-train, then fine-tune with gradual unfreezing; return test accuracies and eval losses."""
    parser = argparse.ArgumentParser(prog="pa-examples run unfreezing", description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=8, help="epochs on the digits 0-4 (default: 8)")
    parser.add_argument("--head-epochs", type=int, default=5, help="epochs training the head only (default: 5)")
    parser.add_argument("--unfrozen-epochs", type=int, default=5, help="epochs after unfreezing (default: 5)")
    parser.add_argument("--lr", type=float, default=1e-2, help="the head's learning rate (default: 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="1 epoch per step (for tests)")
    args = parser.parse_args(argv)
    if args.fast:
        args.pretrain_epochs = args.head_epochs = args.unfrozen_epochs = 1
    callbacks = get_default_callbacks(progress_bar=False)

    # 1. The "pre-trained" model: trained on the digits 0-4.
    torch.manual_seed(args.seed)
    first_digits, second_digits = digits_datasets(classes=range(5)), digits_datasets(classes=range(5, 10))
    model = DigitsNet(num_classes=5)
    pretrainer = Trainer(model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=3e-3), callbacks)
    pretrainer.train(first_digits.train, num_epochs=args.pretrain_epochs, per_device_batch_size=32)
    pretrainer.print(
        f"pre-trained on the digits 0-4: test accuracy {accuracy(pretrainer.model, first_digits.test):.4f}"
    )

    # 2. A new head for the digits 5-9; only the head trains.
    model.head = nn.Linear(64, second_digits.num_classes)
    freezer = ModelFreezer(model)
    freezer.freeze(from_index=0, to_index=-2)
    optimizer = torch.optim.AdamW(freezer.get_trainable_parameters(), lr=args.lr)
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, callbacks=get_default_callbacks(progress_bar=False))
    trainer.print(f"\nTraining the new head: {count_trainable(model)}")
    trainer.train(
        second_digits.train, num_epochs=args.head_epochs, eval_dataset=second_digits.eval, per_device_batch_size=32
    )
    head_only = accuracy(trainer.model, second_digits.test)

    # 3. Unfreeze the body (group -2) and train on, at a tenth of the head's learning rate.
    for group in freezer.unfreeze(from_index=-2, to_index=-2).values():
        trainer.optimizer.add_param_group({**group, "lr": args.lr / 10})
    trainer.print(f"\nUnfroze the body: {count_trainable(model)}")
    trainer.train(
        second_digits.train,
        num_epochs=args.unfrozen_epochs,
        eval_dataset=second_digits.eval,
        per_device_batch_size=32,
        reset_run_history=False,
    )
    unfrozen = accuracy(trainer.model, second_digits.test)
    eval_losses = trainer.run_history.get_metric_values("eval_loss_epoch")
    trainer.print(
        f"digits 5-9: test accuracy {head_only:.4f} with the head trained, {unfrozen:.4f} after unfreezing the body "
        f"({len(eval_losses)} epochs in the run history)"
    )
    leave_process_group()
    return {"head_only_accuracy": head_only, "unfrozen_accuracy": unfrozen, "eval_losses": eval_losses}


if __name__ == "__main__":
    main()

"""Train from a streaming Hugging Face datasets IterableDataset, counting the samples of every epoch.

A synthetic classification task (8 features, 3 classes; generated here, nothing is downloaded)
is written with ``datasets.Dataset.from_dict`` and turned into an ``IterableDataset`` with
``to_iterable_dataset(num_shards=4)``, the form a streaming dataset
(``load_dataset(..., streaming=True)``) has: no length, no indexing, an epoch ends when the data
does. The training stream is shuffled with a buffer; pa calls its ``set_epoch`` before every
epoch, so each epoch is reshuffled. On several processes pa gives each process its share of the
shards (``datasets.distributed.split_dataset_by_node``), and every process runs the same number
of steps: one that runs out of data first steps with an empty batch (``batch_size`` 0).

What the code shows:

- ``DictBatchTrainer``: a ``Trainer`` subclass for dict batches (``{"features", "label"}``),
  overriding ``calculate_train_batch_loss`` and ``calculate_eval_batch_loss``.
- ``SamplesPerEpoch``: a callback that adds up ``batch_output["batch_size"]`` of the non-empty
  steps, sums the counts over the processes with ``trainer.gather`` at the end of each epoch and
  prints ``epoch N: trained on X samples, evaluated Y``. X and Y are the dataset sizes exactly,
  whatever the number of processes; the example checks it.
- A learning-rate schedule sized with numbers, since a stream has no length (see ``main``).

    pa-examples run streaming
    pa-examples run streaming --fast                          # 2 epochs
    torchrun --nproc_per_node 2 -m pa_examples.streaming      # the same counts, summed over 2 processes
    torchrun --nproc_per_node 2 -m pa_examples.streaming --num-train 1025 --num-eval 65 --batch-size 16
    # ^ shares of different sizes: one process ends each epoch on an empty batch; the counts still add up

Needs Hugging Face datasets: ``pip install "pa-examples[streaming]"``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import nn

from pa_callbacks import get_default_callbacks
from pa_core import Trainer, hookimpl
from pa_core.data import is_empty_step
from pa_core.schedulers import CosineLrScheduler
from pa_examples.common import leave_process_group, mlp

__all__ = ["DictBatchTrainer", "SamplesPerEpoch", "classification_streams", "main"]

NUM_FEATURES, NUM_CLASSES = 8, 3


def classification_streams(num_train: int, num_eval: int, seed: int = 0, num_shards: int = 4) -> tuple[Any, Any]:
    """A training and an evaluation ``datasets.IterableDataset`` of ``{"features", "label"}`` rows:
    8 random features, labelled with the largest of 3 fixed random linear scores.

    The training stream is shuffled (shards, then a buffer of 1,000 rows) with ``seed``, and
    reshuffled each epoch by ``set_epoch``; the evaluation stream keeps its order. Each has
    ``num_shards`` shards, so that up to that many processes (or DataLoader workers) read a
    share each.
    """
    import datasets  # the optional dependency: main() says what to install when it is missing

    generator = torch.Generator().manual_seed(0)  # the same task whatever the seed of the weights
    weights = torch.randn(NUM_FEATURES, NUM_CLASSES, generator=generator)

    def rows(count: int) -> Any:
        features = torch.randn(count, NUM_FEATURES, generator=generator)
        labels = (features @ weights).argmax(dim=1)
        table = datasets.Dataset.from_dict({"features": features.numpy(), "label": labels.numpy()})
        return table.to_iterable_dataset(num_shards=num_shards)

    train = rows(num_train).shuffle(seed=seed, buffer_size=1000).with_format("torch")
    evaluation = rows(num_eval).with_format("torch")
    return train, evaluation


class DictBatchTrainer(Trainer):
    """A Trainer for batches that are dicts: ``batch["features"]`` in, ``batch["label"]`` out."""

    def calculate_train_batch_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The loss of one batch; ``batch_size`` is a Python int (0 for an empty batch)."""
        logits = self.model(batch["features"])
        loss = self.loss_func(logits, batch["label"])
        return {"loss": loss, "model_outputs": logits, "batch_size": batch["label"].size(0)}

    def calculate_eval_batch_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The same as in training (pa runs it under ``torch.no_grad()``)."""
        return self.calculate_train_batch_loss(batch)


class SamplesPerEpoch:
    """Counts the samples of every training and evaluation epoch, summed over all processes.

    Per step it only adds a Python int (no read from the device); once per epoch it sums the
    processes' counts with ``trainer.gather``, a collective call that every process makes.
    Intermediate evaluations (in the middle of a training epoch) are left out.
    """

    def __init__(self) -> None:
        self.train_counts: list[int] = []  # one total per epoch, the same on every process
        self.eval_counts: list[int] = []
        self.train_seen = self.eval_seen = 0  # this process's samples in the current epoch

    @staticmethod
    def sum_over_processes(trainer: Trainer, count: int) -> int:
        """``count`` added up over the processes (a collective: call it on every process)."""
        return int(trainer.gather(torch.tensor([count], device=trainer.device)).sum())

    @hookimpl
    def on_train_epoch_start(self) -> None:
        """Start this process's count of the epoch at 0."""
        self.train_seen = 0

    @hookimpl
    def on_train_step_end(self, batch_output: dict[str, Any]) -> None:
        """Add the batch's rows (a Python int: nothing is read from the device)."""
        # A process that has run out of data steps with an empty batch while the others finish:
        # skip it (its batch_size is 0 anyway). Count samples, never steps.
        if not is_empty_step(batch_output):
            self.train_seen += batch_output["batch_size"]

    @hookimpl
    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Record the epoch's total over the processes."""
        self.train_counts.append(self.sum_over_processes(trainer, self.train_seen))

    @hookimpl
    def on_eval_epoch_start(self) -> None:
        """Start this process's count of the evaluation at 0."""
        self.eval_seen = 0

    @hookimpl
    def on_eval_step_end(self, batch_output: dict[str, Any]) -> None:
        """Add the batch's rows, skipping empty steps as in training."""
        if not is_empty_step(batch_output):
            self.eval_seen += batch_output["batch_size"]

    @hookimpl
    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool) -> None:
        """Record the evaluation's total over the processes."""
        if not is_intermediate:
            self.eval_counts.append(self.sum_over_processes(trainer, self.eval_seen))

    @hookimpl
    def on_training_run_epoch_end(self, trainer: Trainer) -> None:
        """Print the epoch's counts, once (on the main process)."""
        evaluated = f", evaluated {self.eval_counts[-1]}" if self.eval_counts else ""
        trainer.print(
            f"epoch {trainer.run_history.current_epoch}: trained on {self.train_counts[-1]} samples{evaluated}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train from the streams; return the samples counted per epoch and the last eval loss."""
    parser = argparse.ArgumentParser(prog="pa-examples run streaming", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    parser.add_argument("--num-train", type=int, default=4000, help="rows of the training stream (default: 4000)")
    parser.add_argument("--num-eval", type=int, default=1000, help="rows of the evaluation stream (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size on each process (default: 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's peak learning rate (default: 0.003)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffle (default: 0)")
    parser.add_argument("--fast", action="store_true", help="train for 2 epochs only (for tests)")
    args = parser.parse_args(argv)
    num_epochs = 2 if args.fast else args.epochs

    try:
        train_stream, eval_stream = classification_streams(args.num_train, args.num_eval, seed=args.seed)
    except ImportError as error:
        raise SystemExit(
            f'This example needs Hugging Face datasets: pip install "pa-examples[streaming]" ({error})'
        ) from None

    torch.manual_seed(args.seed)
    model = mlp(in_features=NUM_FEATURES, num_classes=NUM_CLASSES, hidden=(32,))
    counter = SamplesPerEpoch()
    trainer = DictBatchTrainer(
        model,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=args.lr),
        callbacks=(counter, *get_default_callbacks()),
    )
    # A stream has no length, so pa cannot know how many optimizer updates an epoch makes: the
    # placeholders NUM_EPOCHS and NUM_UPDATE_STEPS_PER_EPOCH (the defaults of create_scheduler_fn)
    # are refused before the first step. Size the schedule with numbers instead. We generated the
    # data, so we can work them out: at each step every process takes a batch of its share of the
    # rows (trainer.num_processes is known once the Trainer exists: 1, or torchrun's
    # --nproc_per_node). DataLoader workers each end on a part-filled batch, so an epoch can take a
    # few more updates than this; the cosine schedule then stays at its minimum for them.
    # For a stream of unknown length, choose a number of updates N and pass both
    # CosineLrScheduler.create_scheduler_fn(total_num_epochs=1, num_update_steps_per_epoch=N) and
    # train(max_num_train_steps=N), so that training ends where the schedule does.
    updates_per_epoch = math.ceil(args.num_train / (args.batch_size * trainer.num_processes))
    schedule = CosineLrScheduler.create_scheduler_fn(
        total_num_epochs=num_epochs, num_update_steps_per_epoch=updates_per_epoch, num_warmup_epochs=1
    )
    trainer.train(
        train_stream,
        num_epochs=num_epochs,
        eval_dataset=eval_stream,
        per_device_batch_size=args.batch_size,
        create_scheduler_fn=schedule,
    )

    expected = ([args.num_train] * num_epochs, [args.num_eval] * num_epochs)
    if (counter.train_counts, counter.eval_counts) != expected:
        raise RuntimeError(
            f"samples per epoch: trained on {counter.train_counts}, evaluated {counter.eval_counts}; "
            f"expected {args.num_train} and {args.num_eval} in each of {num_epochs} epochs"
        )
    processes = f"{trainer.num_processes} process" + ("es" if trainer.num_processes > 1 else "")
    trainer.print(
        f"sample counts match the data: {args.num_train} trained on and {args.num_eval} evaluated "
        f"in each of {num_epochs} epochs, summed over {processes}"
    )
    eval_loss = trainer.run_history.get_latest_metric("eval_loss_epoch")
    leave_process_group()
    return {"train_samples": counter.train_counts, "eval_samples": counter.eval_counts, "eval_loss": eval_loss}


if __name__ == "__main__":
    main()

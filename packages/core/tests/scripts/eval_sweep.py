"""Distributed evaluation for every eval-set size from 1 to 3 x processes x batch + 1.

python eval_sweep.py OUT_DIR   (under torchrun; on one process it computes the reference)
For each size: evaluate(), an evaluation after a training epoch (learning rate 0, so the model is
the same as evaluate()'s) and an intermediate evaluation started from a hook with
trainer.run_eval_epoch. A callback gathers the labels with trainer.gather(..., padding_value=-1)
and calls torch.distributed.all_reduce on every evaluation step, as metric plugins do. Writes
OUT_DIR/rank<r>.json: per size, the losses recorded and the labels gathered per evaluation.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pa_core import Trainer, hookimpl
from pa_core.testing import make_index_dataset, tiny_classifier

BATCH = 2


class CollectiveEveryStep:
    """Gathers each step's labels across processes and all-reduces a counter on every eval step."""

    def __init__(self):
        self.gathered, self.steps = [], []

    @hookimpl
    def on_eval_epoch_start(self):
        self.gathered.append([])
        self.steps.append(0)

    @hookimpl
    def on_eval_step_end(self, trainer, batch):
        self.gathered[-1] += trainer.gather(batch[1], padding_value=-1).tolist()
        if dist.is_initialized():
            counter = torch.ones(1)
            dist.all_reduce(counter)
            assert int(counter) == dist.get_world_size()
        self.steps[-1] += 1


class EvaluateMidEpoch:
    """Starts one intermediate evaluation after the first update (what step-based evaluation does)."""

    @hookimpl
    def on_train_update_end(self, trainer, num_updates):
        if num_updates == 1:
            trainer.run_eval_epoch(is_intermediate=True)


def run_size(size):
    collector = CollectiveEveryStep()
    model = tiny_classifier(num_features=1, num_classes=32)
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.0),
        callbacks=[collector, EvaluateMidEpoch()],
    )
    trainer.evaluate(make_index_dataset(size), per_device_batch_size=BATCH)
    evaluation_loss = trainer.run_history.get_latest_metric("evaluation_loss")
    trainer.train(
        make_index_dataset(8), num_epochs=1, eval_dataset=make_index_dataset(size), per_device_batch_size=BATCH
    )
    history = trainer.run_history
    return {
        "evaluation_loss": evaluation_loss,
        "eval_loss_epoch": history.get_latest_metric("eval_loss_epoch"),
        "intermediate_eval_loss": history.get_latest_metric("intermediate_eval_loss"),
        "gathered": collector.gathered,
        "steps": collector.steps,
    }


def main():
    out_dir, num_processes = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    results = {size: run_size(size) for size in range(1, 3 * num_processes * BATCH + 2)}
    rank = dist.get_rank() if dist.is_initialized() else 0
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # as torch asks of every multi-process script

"""Run by test_wandb.py (under torchrun, or alone): train with a WandbCallback.

W&B is configured only through its environment (WANDB_MODE, WANDB_DIR), as a user's launch
script would be. Each rank writes what it saw to ``<out_dir>/rank<N>.json``.
"""

import json
import os
import sys
from pathlib import Path

import torch
import wandb

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, tiny_classifier
from pa_wandb import WandbCallback

torch.set_num_threads(1)


def main(out_dir: Path) -> None:
    callback = WandbCallback(project="pa-two-process", settings=wandb.Settings(x_disable_stats=True, console="off"))
    model = tiny_classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=[callback])
    opened_run = []
    trainer.callback_handler.add_callback(_RunSpy(callback, opened_run))
    trainer.train(
        make_classification_dataset(num_samples=32),
        num_epochs=2,
        eval_dataset=make_classification_dataset(num_samples=16, seed=1),
        per_device_batch_size=4,
    )
    history = trainer.run_history
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun
    result = {
        "opened_run": opened_run[0],
        "wandb_run_after": wandb.run is not None,
        "metrics": {name: history.get_metric_values(name) for name in history.get_metric_names()},
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))


class _RunSpy:
    """Notes whether this process's WandbCallback holds a W&B run during training."""

    def __init__(self, callback: WandbCallback, found: list) -> None:
        self.callback, self.found = callback, found

    @hookimpl
    def on_train_epoch_start(self) -> None:
        if not self.found:
            self.found.append(self.callback.run is not None)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

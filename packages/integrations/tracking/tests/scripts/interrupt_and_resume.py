"""Run by test_tensorboard.py in a fresh process: a training run with a TensorBoardCallback that fails in
epoch 2, after a training state was saved at the end of epoch 1, then the same run resumed from that state.

TensorBoard reads a folder's event files in the order of their names, which hold the second the writer
was made, the process id and a counter of writers made in the process. A resumed run is a new process in
real life; a fresh process here keeps the counter to one digit, so the names sort in the order written.

    python interrupt_and_resume.py OUT_DIR ORDER    (ORDER: tracker-then-saver or saver-then-tracker)
"""

import json
import os
import sys

import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, tiny_classifier
from pa_tracking import TensorBoardCallback

torch.set_num_threads(1)


class SaveStateAtEpochEnd:
    @hookimpl
    def on_training_run_epoch_end(self, trainer):
        if trainer.run_history.current_epoch == 1:
            trainer.save_training_state("state")


class FailAfterUpdate9:
    @hookimpl
    def on_train_update_end(self, num_updates):
        if num_updates == 9:
            raise RuntimeError("boom")


def train(callbacks, **kwargs):
    model = tiny_classifier()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks)
    trainer.train(
        make_classification_dataset(num_samples=40, seed=0),
        num_epochs=3,
        eval_dataset=make_classification_dataset(num_samples=20, seed=1),
        per_device_batch_size=8,
        **kwargs,
    )


def callbacks(order, extra=()):
    tracker, saver = TensorBoardCallback(log_every_n_updates=2), SaveStateAtEpochEnd()
    return tracker, ([saver, tracker] if order == "saver-then-tracker" else [tracker, saver]) + list(extra)


def main(out_dir, order):
    os.chdir(out_dir)
    first, first_callbacks = callbacks(order, extra=[FailAfterUpdate9()])
    try:
        train(first_callbacks)
    except RuntimeError as error:
        assert str(error) == "boom", error
    # A callback given no folder: the training state names the run's folder.
    resumed, resumed_callbacks = callbacks(order)
    train(resumed_callbacks, resume_from="state")
    print(json.dumps({"first": first.run_dir, "resumed": resumed.run_dir}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

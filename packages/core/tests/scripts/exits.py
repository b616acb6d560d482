"""A script that leaves its Trainer alive until the interpreter exits, with DataLoader workers.

python exits.py MODE   MODE: "ends" (a normal run), "raises" (a callback raises mid-epoch) or
"preempted" (SIGTERM mid-epoch). The script must then exit (0, 1 or 143), never hang: the run's
workers ignore preemption signals, so the Trainer stops them itself when a run ends.
"""

import os
import signal
import sys

import torch
from torch.utils.data import Dataset

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, tiny_classifier


class Samples(Dataset):  # not a TensorDataset: pa gives it worker processes
    data = make_classification_dataset(num_samples=64)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index]


class Interrupt:
    def __init__(self, mode):
        self.mode = mode

    @hookimpl
    def on_train_step_end(self, step):
        if step == 3 and self.mode == "raises":
            raise RuntimeError("a callback fails mid-epoch")
        if step == 3 and self.mode == "preempted":
            os.kill(os.getpid(), signal.SIGTERM)


mode = sys.argv[1]
model = tiny_classifier()
trainer = Trainer(
    model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[Interrupt(mode)]
)
workers = {"num_workers": 2, "persistent_workers": True}
trainer.train(
    Samples(), num_epochs=2, eval_dataset=Samples(), per_device_batch_size=8,
    train_dataloader_kwargs=workers, eval_dataloader_kwargs=workers,
)  # fmt: skip
trainer.evaluate(Samples(), per_device_batch_size=8, dataloader_kwargs=workers)
print("trained", flush=True)

"""Which samples each process sees, for every kind of dataset pa accepts.

python sample_counts.py OUT_DIR   (or under torchrun)
Trains 2 epochs (evaluating after each) and runs evaluate() once for each case below, and writes
OUT_DIR/rank<r>.json: per case, the sample ids this process saw in each training and evaluation
epoch, its number of steps per epoch, and the warnings raised.
"""

import json
import sys
import warnings
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, TensorDataset, get_worker_info

from pa_core import Trainer, hookimpl
from pa_core.data import is_empty_step, split_by_worker

TRAIN_SIZE, EVAL_SIZE, BATCH = 37, 13, 4


class Stream(IterableDataset):
    """Yields (id as a float feature, id) for ids 0..n-1; optionally splits them between workers
    itself and reports a length (the true one, or a wrong one)."""

    def __init__(self, n, splits_by_worker=False, length=None):
        self.n, self.splits_by_worker, self.length = n, splits_by_worker, length

    def __iter__(self):
        ids = range(self.n)
        info = get_worker_info()
        if self.splits_by_worker and info is not None:
            ids = ids[info.id :: info.num_workers]
        for i in ids:
            yield torch.tensor([float(i)]), torch.tensor(i)


class SizedStream(Stream):
    def __len__(self):
        return self.length


def index_dataset(n):
    ids = torch.arange(n)
    return TensorDataset(ids.float().unsqueeze(1), ids)


def hf_stream(n):
    import datasets

    ids = list(range(n))
    dataset = datasets.Dataset.from_dict({"x": [[float(i)] for i in ids], "y": ids})
    return dataset.to_iterable_dataset(num_shards=4).with_format("torch")


CASES = {
    # name: (train dataset, eval dataset, DataLoader workers)
    "map": (lambda n: index_dataset(n), 0),
    "map-2-workers": (lambda n: index_dataset(n), 2),
    "stream": (lambda n: Stream(n), 0),
    "stream-with-len": (lambda n: SizedStream(n, length=n), 0),
    "self-splitting-1-worker": (lambda n: Stream(n, splits_by_worker=True), 1),
    "self-splitting-2-workers": (lambda n: Stream(n, splits_by_worker=True), 2),
    "self-splitting-with-len-2-workers": (lambda n: SizedStream(n, splits_by_worker=True, length=n), 2),
    "split-by-worker-2-workers": (lambda n: split_by_worker(Stream(n)), 2),
    "wrong-len": (lambda n: SizedStream(n, length=n + 5), 0),
    "hf-stream": (hf_stream, 0),
    "hf-stream-2-workers": (hf_stream, 2),
}


def unpack(batch):
    """Batches are (x, id) tuples or {"x", "y"} dicts (Hugging Face datasets)."""
    return (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])


class IdTrainer(Trainer):
    """The model maps the id feature to 2 logits; the label is the id's parity."""

    def calculate_train_batch_loss(self, batch):
        x, y = unpack(batch)
        out = self.model(x)
        return {"loss": self.loss_func(out, y % 2), "model_outputs": out, "batch_size": y.size(0)}

    calculate_eval_batch_loss = calculate_train_batch_loss


class Seen:
    """The ids of this process's real (non-empty) steps, per epoch, and its step counts."""

    def __init__(self):
        self.train, self.eval, self.train_steps, self.eval_steps = [], [], [], []

    @hookimpl
    def on_train_epoch_start(self):
        self.train.append([])
        self.train_steps.append(0)

    @hookimpl
    def on_train_step_end(self, batch, batch_output):
        self.train_steps[-1] += 1
        if not is_empty_step(batch_output):
            self.train[-1] += unpack(batch)[1].tolist()

    @hookimpl
    def on_eval_epoch_start(self):
        self.eval.append([])
        self.eval_steps.append(0)

    @hookimpl
    def on_eval_step_end(self, batch, batch_output):
        self.eval_steps[-1] += 1
        if not is_empty_step(batch_output):
            self.eval[-1] += unpack(batch)[1].tolist()


def run_case(make_dataset, workers):
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 2)
    seen = Seen()
    trainer = IdTrainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01), callbacks=[seen]
    )
    kwargs = {"num_workers": workers}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(
            make_dataset(TRAIN_SIZE),
            num_epochs=2,
            eval_dataset=make_dataset(EVAL_SIZE),
            per_device_batch_size=BATCH,
            train_dataloader_kwargs=kwargs,
            eval_dataloader_kwargs=kwargs,
        )
        trainer.evaluate(make_dataset(EVAL_SIZE), per_device_batch_size=BATCH, dataloader_kwargs=kwargs)
    return {
        "train": seen.train,
        "eval": seen.eval,
        "train_steps": seen.train_steps,
        "eval_steps": seen.eval_steps,
        "num_updates": trainer.run_state.num_updates,
        "evaluation_loss": trainer.run_history.get_latest_metric("evaluation_loss"),
        "warnings": [str(w.message) for w in caught if issubclass(w.category, UserWarning)],
    }


def main():
    out_dir = Path(sys.argv[1])
    torch.set_num_threads(1)
    results = {name: run_case(make, workers) for name, (make, workers) in CASES.items()}
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # as torch asks of every multi-process script

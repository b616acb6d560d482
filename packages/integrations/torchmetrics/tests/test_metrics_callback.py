"""MetricsCallback on real Trainer runs: values equal hand-computed ones, on one process and two."""

from __future__ import annotations

import faulthandler
import json
import math
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from torch.utils.data import IterableDataset
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassAveragePrecision

from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, run_on_processes, tiny_classifier
from pa_torchmetrics import MetricsCallback

NUM_CLASSES = 3
TRAIN = make_classification_dataset(num_samples=48, num_classes=NUM_CLASSES, seed=0)
EVAL = make_classification_dataset(num_samples=27, num_classes=NUM_CLASSES, seed=1)  # uneven on purpose


def accuracy_metrics() -> dict:
    return {
        "accuracy": MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro"),
        "macro_accuracy": MulticlassAccuracy(num_classes=NUM_CLASSES, average="macro"),
    }


def make_trainer(callbacks, lr=0.05, model=None) -> Trainer:
    model = model if model is not None else tiny_classifier(num_classes=NUM_CLASSES)
    return Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=lr), callbacks=callbacks)


def hand_accuracies(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Micro accuracy (correct / all) and macro accuracy (mean over classes of correct / class size)."""
    correct = logits.argmax(dim=-1) == labels
    per_class = [correct[labels == c].float().mean().item() for c in range(NUM_CLASSES)]
    return correct.float().mean().item(), sum(per_class) / NUM_CLASSES


class HandComputed:
    """Collects each epoch's outputs and labels and, at epoch end, the hand-computed accuracies
    next to the values MetricsCallback recorded; listed *before* MetricsCallback on purpose."""

    def __init__(self, prefix: str = "eval_"):
        self.prefix = prefix
        self.outputs, self.labels = [], []
        self.train_outputs, self.train_labels = [], []
        self.epochs: list[dict] = []
        self.train_epochs: list[dict] = []

    @hookimpl
    def on_eval_step_end(self, batch, batch_output):
        self.outputs.append(batch_output["model_outputs"])
        self.labels.append(batch[1])

    @hookimpl
    def on_train_step_end(self, batch, batch_output):
        self.train_outputs.append(batch_output["model_outputs"].detach())
        self.train_labels.append(batch[1])

    @hookimpl
    def on_eval_epoch_end(self, trainer, is_intermediate):
        prefix = "intermediate_eval_" if is_intermediate else self.prefix
        self.epochs.append(self._compare(trainer, self.outputs, self.labels, prefix))
        self.outputs, self.labels = [], []

    @hookimpl
    def on_train_epoch_end(self, trainer):
        if "train_accuracy" in trainer.run_history.get_metric_names():
            self.train_epochs.append(self._compare(trainer, self.train_outputs, self.train_labels, "train_"))
        self.train_outputs, self.train_labels = [], []

    @staticmethod
    def _compare(trainer, outputs, labels, prefix):
        history = trainer.run_history
        return {
            "hand": hand_accuracies(torch.cat(outputs), torch.cat(labels)),
            "recorded": (
                history.get_latest_metric(f"{prefix}accuracy"),
                history.get_latest_metric(f"{prefix}macro_accuracy"),
            ),
        }


def test_eval_metrics_equal_hand_computed_values_every_epoch():
    hand = HandComputed()
    trainer = make_trainer([hand, MetricsCallback(accuracy_metrics())])
    trainer.train(TRAIN, num_epochs=3, eval_dataset=EVAL, per_device_batch_size=4)

    assert len(hand.epochs) == 3
    for epoch in hand.epochs:
        assert epoch["recorded"] == pytest.approx(epoch["hand"], abs=1e-6)
    # The model learns, so the epochs differ: equal values above mean the metrics were reset.
    assert hand.epochs[0]["hand"] != hand.epochs[-1]["hand"]
    assert trainer.run_history.get_metric_values("eval_accuracy") == pytest.approx([e["hand"][0] for e in hand.epochs])
    assert all(isinstance(v, float) for v in trainer.run_history.get_metric_values("eval_accuracy"))
    assert "train_accuracy" not in trainer.run_history.get_metric_names()


def test_train_metrics_cover_every_batch_with_gradient_accumulation():
    hand = HandComputed()
    trainer = make_trainer([hand, MetricsCallback(accuracy_metrics(), train_metrics=True)])
    trainer.train(TRAIN, num_epochs=2, per_device_batch_size=5, gradient_accumulation_steps=3)

    assert len(hand.train_epochs) == 2
    for epoch in hand.train_epochs:
        assert epoch["recorded"] == pytest.approx(epoch["hand"], abs=1e-6)
    assert len(trainer.run_history.get_metric_values("train_accuracy")) == 2


def test_train_metrics_are_separate_objects_from_the_eval_metrics():
    callback = MetricsCallback(accuracy_metrics(), train_metrics={"accuracy": MulticlassAccuracy(num_classes=3)})
    assert callback.train_metrics is not callback.eval_metrics
    copied = MetricsCallback(accuracy_metrics(), train_metrics=True)
    assert copied.train_metrics["accuracy"] is not copied.eval_metrics["accuracy"]


def test_evaluate_records_evaluation_names_and_training_goes_back_to_eval_names():
    hand = HandComputed(prefix="evaluation_")
    trainer = make_trainer([hand, MetricsCallback(accuracy_metrics())])
    trainer.evaluate(EVAL, per_device_batch_size=4)

    (epoch,) = hand.epochs
    assert epoch["recorded"] == pytest.approx(epoch["hand"], abs=1e-6)
    names = trainer.run_history.get_metric_names()
    assert {"evaluation_accuracy", "evaluation_macro_accuracy", "evaluation_loss"} <= names
    assert not any(name.startswith("eval_") for name in names)

    hand.prefix = "eval_"
    trainer.train(TRAIN, num_epochs=1, eval_dataset=EVAL, per_device_batch_size=4)
    assert {"eval_accuracy", "eval_macro_accuracy"} <= trainer.run_history.get_metric_names()


def test_intermediate_evaluations_use_their_own_names():
    class EvaluateEveryFourUpdates:
        @hookimpl
        def on_train_update_end(self, trainer, num_updates):
            if num_updates % 4 == 0:
                trainer.run_eval_epoch(is_intermediate=True)

    hand = HandComputed()
    trainer = make_trainer([EvaluateEveryFourUpdates(), hand, MetricsCallback(accuracy_metrics())])
    trainer.train(TRAIN, num_epochs=2, eval_dataset=EVAL, per_device_batch_size=8)  # 6 updates per epoch

    history = trainer.run_history
    assert len(history.get_metric_values("intermediate_eval_accuracy")) == 3  # updates 4, 8, 12
    assert len(history.get_metric_values("eval_accuracy")) == 2
    for epoch in hand.epochs:
        assert epoch["recorded"] == pytest.approx(epoch["hand"], abs=1e-6)


def test_metrics_are_in_run_history_for_callbacks_that_watch_them():
    """Early stopping and best-model saving read metrics by name at the epoch's end."""
    seen = []

    class Watcher:  # listed first: runs before MetricsCallback for every event except the tryfirst ones
        @hookimpl
        def on_eval_epoch_end(self, trainer):
            seen.append(("eval_epoch_end", trainer.run_history.get_latest_metric("eval_accuracy")))

        @hookimpl
        def on_training_run_epoch_end(self, trainer):
            seen.append(("run_epoch_end", trainer.run_history.get_latest_metric("eval_accuracy")))

    trainer = make_trainer([Watcher(), MetricsCallback(accuracy_metrics())])
    trainer.train(TRAIN, num_epochs=2, eval_dataset=EVAL, per_device_batch_size=4)
    values = trainer.run_history.get_metric_values("eval_accuracy")
    assert seen == [
        ("eval_epoch_end", values[0]),
        ("run_epoch_end", values[0]),
        ("eval_epoch_end", values[1]),
        ("run_epoch_end", values[1]),
    ]


def _catalogue(name):
    found = [ep for ep in entry_points(group="pa.callbacks") if ep.name == name]
    if not found:
        pytest.skip(f"the {name!r} callback (pa-callbacks) is not installed")
    return found[0].load()


def test_save_best_model_and_early_stopping_watch_a_metric(tmp_path):
    save_best = _catalogue("save-best-model")
    early_stopping = _catalogue("early-stopping")

    class Worsen:  # makes eval accuracy drop after epoch 1 so early stopping triggers
        @hookimpl
        def on_train_epoch_end(self, trainer):
            if trainer.run_history.current_epoch >= 2:
                with torch.no_grad():
                    for p in trainer.model.parameters():
                        p.add_(torch.randn_like(p) * 3)

    trainer = make_trainer(
        [
            Worsen(),
            MetricsCallback(accuracy_metrics()),
            save_best(
                save_path=str(tmp_path / "best.pt"),
                watch_metric="eval_accuracy",
                greater_is_better=True,
                load_saved_checkpoint=False,
            ),
            early_stopping(
                early_stopping_patience=1,
                watch_metric="eval_accuracy",
                greater_is_better=True,
                early_stopping_threshold=0.0,
            ),
        ],
        lr=0.1,
    )
    trainer.train(TRAIN, num_epochs=6, eval_dataset=EVAL, per_device_batch_size=4)
    assert (tmp_path / "best.pt").exists()
    assert len(trainer.run_history.get_metric_values("eval_accuracy")) < 6


def test_metric_forms_and_names():
    single = MetricsCallback(MulticlassAccuracy(num_classes=NUM_CLASSES))
    collection = MetricsCallback(MetricCollection([MulticlassAccuracy(num_classes=NUM_CLASSES)], prefix="m_"))
    per_class = MetricsCallback({"class_accuracy": MulticlassAccuracy(num_classes=NUM_CLASSES, average=None)})
    for callback in (single, collection, per_class):
        trainer = make_trainer([callback])
        trainer.evaluate(EVAL, per_device_batch_size=4)
    history = trainer.run_history
    values = history.get_latest_metric("evaluation_class_accuracy")
    assert isinstance(values, list) and len(values) == NUM_CLASSES
    assert set(single.eval_metrics.keys()) == {"multiclass_accuracy"}
    assert set(collection.eval_metrics.keys()) == {"m_MulticlassAccuracy"}


class CountAndHalf(Metric):
    """Returns a dict of two results: how many predictions it saw, and half that."""

    def __init__(self):
        super().__init__()
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds, target):
        self.count += target.numel()

    def compute(self):
        return {"count": self.count, "half": self.count / 2}


def test_a_metric_returning_a_dict_records_each_entry():
    trainer = make_trainer([MetricsCallback({"sizes": CountAndHalf()})])
    trainer.evaluate(EVAL, per_device_batch_size=4)
    history = trainer.run_history
    assert history.get_latest_metric("evaluation_count") == len(EVAL)
    assert history.get_latest_metric("evaluation_half") == len(EVAL) / 2


def test_metrics_are_moved_to_the_trainer_device():
    callback = MetricsCallback(accuracy_metrics(), train_metrics=True)

    class CheckDevice:
        devices = []

        @hookimpl
        def on_train_epoch_start(self, trainer):
            metrics = [*callback.eval_metrics.values(), *callback.train_metrics.values()]
            expected = torch.empty(0, device=trainer.device).device  # "cuda" -> "cuda:0"
            self.devices.append({m.device for m in metrics} == {expected})

    trainer = make_trainer([callback, CheckDevice()])
    trainer.train(TRAIN, num_epochs=1, eval_dataset=EVAL, per_device_batch_size=4)
    assert CheckDevice.devices == [True]


def test_other_layouts_through_the_override_points():
    class ArgmaxThenCompare(MetricsCallback):
        """Predictions as labels, target from the second element of a (x, y, weight) batch."""

        def preds_from(self, batch, batch_output):
            return batch_output["model_outputs"].argmax(dim=-1)

        def target_from(self, batch, batch_output):
            return batch[1]

    class ThreeElementTrainer(Trainer):
        def calculate_eval_batch_loss(self, batch):
            x, y, _weight = batch
            outputs = self.model(x)
            return {"loss": self.loss_func(outputs, y), "model_outputs": outputs, "batch_size": y.size(0)}

    x, y = EVAL.tensors
    data = torch.utils.data.TensorDataset(x, y, torch.ones(len(y)))
    model = tiny_classifier(num_classes=NUM_CLASSES)
    trainer = ThreeElementTrainer(
        model,
        torch.nn.CrossEntropyLoss(),
        None,
        callbacks=[ArgmaxThenCompare({"accuracy": MulticlassAccuracy(num_classes=3)})],
    )
    trainer.evaluate(data, per_device_batch_size=4)
    with torch.no_grad():
        expected, _ = hand_accuracies(trainer.model.cpu()(x), y)
    assert trainer.run_history.get_latest_metric("evaluation_accuracy") == pytest.approx(expected)


def test_a_batch_without_a_target_or_outputs_gets_a_clear_error():
    callback = MetricsCallback(accuracy_metrics())
    with pytest.raises(TypeError, match="override target_from"):
        callback.target_from({"x": torch.zeros(1)}, {})
    with pytest.raises(KeyError, match="override preds_from"):
        callback.preds_from((torch.zeros(1), torch.zeros(1)), {"loss": torch.tensor(0.0)})


def test_one_metric_object_for_training_and_evaluation_is_refused():
    accuracy = MulticlassAccuracy(num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="same metric object"):
        MetricsCallback({"accuracy": accuracy}, train_metrics={"accuracy": accuracy})


@pytest.mark.parametrize("metrics", [None, {}, {"accuracy": "acc"}, torch.nn.Linear(1, 1)])
def test_anything_but_metrics_is_refused(metrics):
    with pytest.raises(TypeError, match="metrics"):
        MetricsCallback(metrics)


def test_catalogue_name_gives_the_callback():
    (entry,) = [ep for ep in entry_points(group="pa.callbacks") if ep.name == "torchmetrics"]
    assert entry.load() is MetricsCallback


class OneShotStream(IterableDataset):
    """Samples whose iterator is made once: the first epoch has them, every later epoch none."""

    def __init__(self, dataset):
        self.iterator = iter(dataset)

    def __iter__(self):
        return self.iterator


class EmptyStream(IterableDataset):
    def __iter__(self):
        return iter(())


def _compute_warnings(caught) -> list[str]:
    """torchmetrics' warning for a compute() without any update, among the caught warnings."""
    return [str(w.message) for w in caught if "called before the ``update`` method" in str(w.message)]


def test_an_epoch_without_samples_records_no_metric_and_does_not_compute():
    """No NaN and no torchmetrics warning for an epoch without samples: nothing is recorded for it,
    as pa-core records no loss (training and evaluation epochs, and a whole evaluate())."""
    trainer = make_trainer([MetricsCallback(accuracy_metrics(), train_metrics=True)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(OneShotStream(TRAIN), num_epochs=2, eval_dataset=OneShotStream(EVAL), per_device_batch_size=4)
        trained = {name: trainer.run_history.get_metric_values(name) for name in trainer.run_history.get_metric_names()}
        trainer.evaluate(EmptyStream(), per_device_batch_size=4)

    assert _compute_warnings(caught) == []
    # Epoch 1 only, like pa-core's own losses.
    assert set(trained) == {
        *("train_accuracy", "train_macro_accuracy", "eval_accuracy", "eval_macro_accuracy"),
        *("train_loss_epoch", "eval_loss_epoch"),
    }
    for name, values in trained.items():
        assert len(values) == 1 and not math.isnan(values[0]), name
    # Nothing at all for an evaluation without samples.
    assert trainer.run_history.get_metric_names() == set()


def test_a_metric_that_no_batch_updated_is_not_recorded():
    class AccuracyOnly(MetricsCallback):
        """Updates the micro accuracy only: the macro accuracy sees no sample."""

        def update(self, metrics, batch, batch_output):
            metrics["m_accuracy"].update(batch_output["model_outputs"].detach(), batch[1])

    metrics = MetricCollection(accuracy_metrics(), prefix="m_")
    reference = make_trainer([MetricsCallback(MetricCollection(accuracy_metrics(), prefix="m_"))])
    reference.evaluate(EVAL, per_device_batch_size=4)
    trainer = make_trainer([AccuracyOnly(metrics)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.evaluate(EVAL, per_device_batch_size=4)

    assert _compute_warnings(caught) == []
    history = trainer.run_history
    assert history.get_latest_metric("evaluation_m_accuracy") == pytest.approx(
        reference.run_history.get_latest_metric("evaluation_m_accuracy")
    )
    assert "evaluation_m_macro_accuracy" not in history.get_metric_names()


# -- two processes --------------------------------------------------------------------------


class LocalOnlyMetrics(MetricsCallback):
    """The same accuracy without cross-process synchronisation: what a naive callback would record."""


def _eval_metrics() -> dict:
    return {**accuracy_metrics(), "auroc": MulticlassAUROC(num_classes=NUM_CLASSES)}


def _two_process_run(out_dir: str) -> None:
    rank = torch.distributed.get_rank()
    local = LocalOnlyMetrics({"local_accuracy": MulticlassAccuracy(num_classes=NUM_CLASSES, sync_on_compute=False)})
    evaluator = make_trainer([MetricsCallback(_eval_metrics()), local])
    evaluator.evaluate(EVAL, per_device_batch_size=4)  # 7 batches: rank 0 gets 4 (16 samples), rank 1 gets 3 (11)
    results = {name: evaluator.run_history.get_latest_metric(name) for name in evaluator.run_history.get_metric_names()}

    trainer = make_trainer([MetricsCallback(_eval_metrics(), train_metrics=True)], lr=0.1)
    trainer.train(TRAIN, num_epochs=2, eval_dataset=EVAL, per_device_batch_size=4)
    history = trainer.run_history
    results["trained"] = {name: history.get_metric_values(name) for name in history.get_metric_names()}
    if rank == 0:
        torch.save(trainer.model.state_dict(), Path(out_dir) / "trained.pt")
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(results))


@pytest.mark.multiprocess
def test_two_processes_with_an_uneven_eval_set_give_the_one_process_values(tmp_path):
    run_on_processes(_two_process_run, str(tmp_path), num_processes=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # The same untrained model evaluated on one process.
    single = make_trainer([MetricsCallback(_eval_metrics())])
    single.evaluate(EVAL, per_device_batch_size=4)
    for rank in ranks:
        for name in ("evaluation_accuracy", "evaluation_macro_accuracy", "evaluation_auroc"):
            assert rank[name] == pytest.approx(single.run_history.get_latest_metric(name), abs=1e-6), name
    # Without synchronisation the processes disagree with each other: the check above has teeth.
    assert ranks[0]["evaluation_local_accuracy"] != ranks[1]["evaluation_local_accuracy"]

    # After two-process training, eval_accuracy is the whole eval set's accuracy under the final model.
    model = tiny_classifier(num_classes=NUM_CLASSES)
    model.load_state_dict(torch.load(tmp_path / "trained.pt", weights_only=True))
    x, y = EVAL.tensors
    with torch.no_grad():
        expected_accuracy, expected_macro = hand_accuracies(model(x), y)
    for rank in ranks:
        assert rank["trained"]["eval_accuracy"][-1] == pytest.approx(expected_accuracy, abs=1e-6)
        assert rank["trained"]["eval_macro_accuracy"][-1] == pytest.approx(expected_macro, abs=1e-6)
        assert len(rank["trained"]["train_accuracy"]) == 2
    assert ranks[0]["trained"] == ranks[1]["trained"]


class CountSamples:
    """Counts the evaluation samples this process saw."""

    seen = 0

    @hookimpl
    def on_eval_step_end(self, batch_output):
        self.seen += batch_output["batch_size"]


def _empty_epochs_run(out_dir: str) -> None:
    # A process that disagreed with the other about computing would wait for it for ever: end this
    # one instead (its exit ends the run, and the test fails) after a minute.
    faulthandler.dump_traceback_later(60, exit=True)
    warnings.filterwarnings("error", message=".*called before the ``update`` method")

    # One batch of 4 samples: process 0 has them all, process 1 none (it runs one empty step).
    counter = CountSamples()
    evaluator = make_trainer([MetricsCallback({"accuracy": accuracy_metrics()["accuracy"]}), counter])
    evaluator.evaluate(
        make_classification_dataset(num_samples=4, num_classes=NUM_CLASSES, seed=1), per_device_batch_size=4
    )
    results = {"uneven": evaluator.run_history.get_latest_metric("evaluation_accuracy"), "own_samples": counter.seen}
    evaluator.evaluate(EmptyStream(), per_device_batch_size=2)
    results["after_empty"] = sorted(evaluator.run_history.get_metric_names())

    # Epoch 2 has no sample on any process, for training and for evaluation.
    trainer = make_trainer([MetricsCallback(_eval_metrics(), train_metrics=True)])
    train = OneShotStream(make_classification_dataset(num_samples=16, num_classes=NUM_CLASSES, seed=0))
    evaluation = OneShotStream(make_classification_dataset(num_samples=10, num_classes=NUM_CLASSES, seed=1))
    trainer.train(train, num_epochs=2, eval_dataset=evaluation, per_device_batch_size=2)
    history = trainer.run_history
    results["trained"] = {name: history.get_metric_values(name) for name in history.get_metric_names()}
    faulthandler.cancel_dump_traceback_later()
    (Path(out_dir) / f"rank{torch.distributed.get_rank()}.json").write_text(json.dumps(results))


@pytest.mark.multiprocess
def test_two_processes_agree_on_epochs_without_samples(tmp_path):
    """A process without samples computes whenever another has some (torchmetrics synchronises in
    compute(), so a process skipping it alone would leave the other waiting); with no sample on
    any process, none computes."""
    run_on_processes(_empty_epochs_run, str(tmp_path), num_processes=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [rank.pop("own_samples") for rank in ranks] == [4, 0]  # process 1 updated no metric
    assert ranks[0] == ranks[1]

    single = make_trainer([MetricsCallback({"accuracy": accuracy_metrics()["accuracy"]})])
    single.evaluate(
        make_classification_dataset(num_samples=4, num_classes=NUM_CLASSES, seed=1), per_device_batch_size=4
    )
    assert ranks[0]["uneven"] == pytest.approx(single.run_history.get_latest_metric("evaluation_accuracy"))
    assert ranks[0]["after_empty"] == []  # an evaluation without samples records nothing
    trained = ranks[0]["trained"]
    assert set(trained) == {
        *("train_accuracy", "train_macro_accuracy", "train_auroc", "train_loss_epoch"),
        *("eval_accuracy", "eval_macro_accuracy", "eval_auroc", "eval_loss_epoch"),
    }
    for name, values in trained.items():  # epoch 1 only
        assert len(values) == 1 and not math.isnan(values[0]), name


# -- list states (AUROC, average precision) with a process short of samples ---------------------


def _list_state_metrics() -> MetricCollection:
    """Accuracy next to two metrics whose states are lists of the predictions and targets, which
    torchmetrics concatenates across processes (and puts in one compute group)."""
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro"),
            "auroc": MulticlassAUROC(num_classes=NUM_CLASSES),
            "average_precision": MulticlassAveragePrecision(num_classes=NUM_CLASSES),
        }
    )


#: 4 samples: process 0 has the one batch, process 1 only an empty step. 9 samples: both have a
#: batch of 4, then one process has the last sample and the other an empty step.
SHORT_SETS = {"one_batch": 4, "uneven_last_step": 9}


class StepSizes:
    """The size of each evaluation step this process ran (0 for an empty step)."""

    def __init__(self):
        self.sizes = []

    @hookimpl
    def on_eval_step_end(self, batch_output):
        self.sizes.append(batch_output["batch_size"])


def _list_state_results(num_samples: int, step_sizes: StepSizes | None = None) -> dict:
    """Training (learning rate 0: the same model throughout, so the training metrics are those of
    the whole set too) and an evaluation, with training and evaluation metrics."""
    data = make_classification_dataset(num_samples=num_samples, num_classes=NUM_CLASSES, seed=2)
    callbacks = [MetricsCallback(_list_state_metrics(), train_metrics=True)]
    trainer = make_trainer([*callbacks, *([step_sizes] if step_sizes else [])], lr=0.0)
    results = {}
    trainer.train(data, num_epochs=2, eval_dataset=data, per_device_batch_size=4)
    results.update(_all_values(trainer.run_history))
    trainer.evaluate(data, per_device_batch_size=4)  # starts a run history of its own
    results.update(_all_values(trainer.run_history))
    return results


def _all_values(history) -> dict:
    return {name: history.get_metric_values(name) for name in history.get_metric_names()}


def _list_states_run(out_dir: str) -> None:
    faulthandler.dump_traceback_later(60, exit=True)  # a process left waiting fails the test
    warnings.filterwarnings("error", message=".*called before the ``update`` method")
    results = {}
    for name, num_samples in SHORT_SETS.items():
        step_sizes = StepSizes()
        results[name] = _list_state_results(num_samples, step_sizes)
        results[f"{name}_evaluate_steps"] = step_sizes.sizes[-(len(step_sizes.sizes) // 3) :]
    faulthandler.cancel_dump_traceback_later()
    (Path(out_dir) / f"rank{torch.distributed.get_rank()}.json").write_text(json.dumps(results))


@pytest.mark.multiprocess
def test_list_state_metrics_on_two_processes_when_one_is_short_of_samples(tmp_path):
    """AUROC and average precision keep every prediction in list states; a process with no sample
    in the epoch has empty lists, which torchmetrics alone cannot gather with the other's. Training
    and evaluation metrics still give the one-process values."""
    run_on_processes(_list_states_run, str(tmp_path), num_processes=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # The setups are what they claim: an empty step, and for 4 samples no sample at all on process 1.
    assert [rank.pop("one_batch_evaluate_steps") for rank in ranks] == [[4], [0]]
    last_steps = sorted(rank.pop("uneven_last_step_evaluate_steps")[-1] for rank in ranks)
    assert last_steps == [0, 1]
    assert ranks[0] == ranks[1]

    for name, num_samples in SHORT_SETS.items():
        single = _list_state_results(num_samples)
        expected = {
            f"{run}_{metric}"
            for run in ("train", "eval", "evaluation")
            for metric in ("accuracy", "auroc", "average_precision")
        }
        assert expected <= set(single), name
        for metric in expected:
            assert ranks[0][name][metric] == pytest.approx(single[metric], abs=1e-6), (name, metric)

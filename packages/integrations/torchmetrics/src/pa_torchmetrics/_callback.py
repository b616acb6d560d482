"""The :class:`MetricsCallback`: torchmetrics metrics updated in the loop and written to run history."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat

from pa_core import hookimpl
from pa_core.data import is_empty_step

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["MetricsCallback"]

MetricsLike = Metric | MetricCollection | Mapping[str, Metric]

# torchmetrics' warning for a compute() without any update on this process.
_COMPUTE_BEFORE_UPDATE = r".*was called before the ``update`` method"


class MetricsCallback:
    """Compute torchmetrics metrics during training and evaluation, into the run history.

    Each batch, :meth:`preds_from` and :meth:`target_from` pick the predictions and the
    target (by default ``batch_output["model_outputs"]`` and ``batch[1]``) and every metric
    is updated with them, on the device. At the end of each epoch the metrics are computed,
    synchronised across processes by torchmetrics, written to the run history and reset. A
    metric that no process updated in the epoch (an epoch without samples) is not computed and
    nothing is recorded for it, as pa-core records no loss for such an epoch.

    Names written to the run history, for a metric called ``accuracy``:

    - ``eval_accuracy`` after each evaluation epoch of ``train()``;
    - ``intermediate_eval_accuracy`` after an evaluation started mid-epoch (step-based);
    - ``evaluation_accuracy`` after ``evaluate()`` (alongside ``evaluation_loss``);
    - ``train_accuracy`` after each training epoch, when ``train_metrics`` are given.

    The run history's prefix applies as usual (an EMA evaluation writes ``ema_model_eval_accuracy``).
    Metrics are computed before the other callbacks see ``on_train_epoch_end`` and
    ``on_eval_epoch_end`` (the hooks are marked ``tryfirst``), so loggers, early stopping and
    best-model saving can read them by name whatever the callbacks' order.

    :param metrics: the metrics for evaluation: a dict of names to metrics, a
        ``MetricCollection`` (named by its keys) or one metric (named after its class, in
        snake case: ``MulticlassAccuracy`` -> ``multiclass_accuracy``).
    :param train_metrics: metrics for training batches, in the same forms; ``True`` uses a
        copy of ``metrics``; None (the default) computes no training metrics.
    """

    def __init__(self, metrics: MetricsLike, train_metrics: MetricsLike | bool | None = None) -> None:
        self.eval_metrics = _as_collection(metrics, "metrics")
        if train_metrics is True:
            self.train_metrics: MetricCollection | None = copy.deepcopy(self.eval_metrics)
        elif train_metrics is None or train_metrics is False:
            self.train_metrics = None
        else:
            self.train_metrics = _as_collection(train_metrics, "train_metrics")
            shared = {id(m) for m in self.eval_metrics.values()} & {id(m) for m in self.train_metrics.values()}
            if shared:
                raise ValueError(
                    "metrics and train_metrics hold the same metric object, so training and evaluation would "
                    "update one state; pass separate metric instances, or train_metrics=True for copies."
                )
        self._in_evaluation_run = False

    # -- override points --------------------------------------------------------------------

    def preds_from(self, batch: Any, batch_output: dict[str, Any]) -> Any:
        """The predictions to update the metrics with; override for other model outputs."""
        try:
            return batch_output["model_outputs"]
        except KeyError:
            raise KeyError(
                "MetricsCallback reads the predictions from batch_output['model_outputs'], which the batch output "
                f"lacks (it has {sorted(batch_output)}); return it from calculate_*_batch_loss, or subclass "
                "MetricsCallback and override preds_from(batch, batch_output)."
            ) from None

    def target_from(self, batch: Any, batch_output: dict[str, Any]) -> Any:
        """The target to update the metrics with; override for other batch layouts (e.g. dicts)."""
        try:
            return batch[1]
        except (TypeError, IndexError, KeyError) as error:
            raise TypeError(
                f"MetricsCallback reads the target as batch[1], which a {type(batch).__name__} batch does not "
                "have; subclass MetricsCallback and override target_from(batch, batch_output)."
            ) from error

    def update(self, metrics: MetricCollection, batch: Any, batch_output: dict[str, Any]) -> None:
        """Update ``metrics`` with one batch; override to call the metrics differently."""
        preds = _detached(self.preds_from(batch, batch_output))
        target = _detached(self.target_from(batch, batch_output))
        metrics.update(preds, target)

    # -- moving to the device -------------------------------------------------------------

    @hookimpl
    def on_training_run_start(self, trainer: Trainer) -> None:
        """Move the metrics to the trainer's device."""
        self._in_evaluation_run = False
        self._to_device(trainer.device)

    @hookimpl
    def on_evaluation_run_start(self, trainer: Trainer) -> None:
        """Move the metrics to the trainer's device; name what follows ``evaluation_<name>``."""
        self._in_evaluation_run = True
        self._to_device(trainer.device)

    # -- training epochs ------------------------------------------------------------------

    @hookimpl
    def on_train_epoch_start(self) -> None:
        """Start the epoch's training metrics from scratch."""
        if self.train_metrics is not None:
            self.train_metrics.reset()

    @hookimpl
    def on_train_step_end(self, batch: Any, batch_output: dict[str, Any]) -> None:
        """Update the training metrics with the batch (not with an empty one)."""
        if self.train_metrics is not None and not is_empty_step(batch_output):
            self.update(self.train_metrics, batch, batch_output)

    @hookimpl(tryfirst=True)
    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Compute the training metrics (across processes) and record them as ``train_<name>``."""
        if self.train_metrics is not None:
            self._record(trainer, self.train_metrics, "train_")

    # -- evaluation epochs ----------------------------------------------------------------

    @hookimpl
    def on_eval_epoch_start(self) -> None:
        """Start the evaluation metrics from scratch."""
        self.eval_metrics.reset()

    @hookimpl
    def on_eval_step_end(self, batch: Any, batch_output: dict[str, Any]) -> None:
        """Update the evaluation metrics with the batch (not with an empty one)."""
        if not is_empty_step(batch_output):
            self.update(self.eval_metrics, batch, batch_output)

    @hookimpl(tryfirst=True)
    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool) -> None:
        """Compute the evaluation metrics (across processes) and record them."""
        if is_intermediate:
            prefix = "intermediate_eval_"
        else:
            prefix = "evaluation_" if self._in_evaluation_run else "eval_"
        self._record(trainer, self.eval_metrics, prefix)

    @hookimpl
    def on_evaluation_run_end(self) -> None:
        """Back to naming evaluation metrics ``eval_<name>``."""
        self._in_evaluation_run = False

    # -- internals ------------------------------------------------------------------------

    def _to_device(self, device: torch.device) -> None:
        self.eval_metrics.to(device)
        if self.train_metrics is not None:
            self.train_metrics.to(device)

    def _record(self, trainer: Trainer, metrics: MetricCollection, prefix: str) -> None:
        # copy_state=False points the members of a compute group at their first member's state and
        # update count, as compute() does, without copying the state.
        members = dict(metrics.items(keep_base=True, copy_state=False))
        here = [metric.update_called for metric in members.values()]
        # Whether a list state torchmetrics concatenates is empty here: it could not gather it (see
        # _fill_empty_concatenated_states). Asked in the same all-reduce; never on one process.
        distributed = _is_distributed(trainer)
        lacking_here = [_has_empty_concatenated_state(metric) for metric in members.values()] if distributed else []
        agreed = _true_on_any_process(trainer, here + lacking_here)
        anywhere, lacking = agreed[: len(here)], agreed[len(here) :]
        to_fill = [metric for metric, flag, lack in zip(members.values(), anywhere, lacking) if flag and lack]
        if to_fill:  # the same on every process, from the agreed flags
            _fill_empty_concatenated_states(trainer, to_fill)
        with warnings.catch_warnings():
            if not all(here):  # computed here for the processes that have samples: nothing to warn about
                warnings.filterwarnings("ignore", message=_COMPUTE_BEFORE_UPDATE, category=UserWarning)
            if all(anywhere):
                results = metrics.compute()
            elif any(anywhere):  # those metrics only, named as the whole collection names them
                updated = {name: metric for (name, metric), flag in zip(members.items(), anywhere, strict=True) if flag}
                subset = MetricCollection(updated, prefix=metrics.prefix, postfix=metrics.postfix, compute_groups=False)
                results = subset.compute()
            else:  # no sample on any process (computing would warn, then give NaN): nothing to record
                results = {}
        metrics.reset()
        for name, value in _flatten(results).items():
            trainer.run_history.update_metric(f"{prefix}{name}", _to_python(value))


def _is_distributed(trainer: Trainer) -> bool:
    return trainer.num_processes > 1 and dist.is_available() and dist.is_initialized()


def _true_on_any_process(trainer: Trainer, flags: list[bool]) -> list[bool]:
    """For each flag, whether it is true on any process: the same answer on every process, so that
    all of them compute (and synchronise) the same metrics. One small all-reduce, on the host
    through the run's control group (gloo) where there is one."""
    if not _is_distributed(trainer) or not flags:
        return flags
    group = trainer.run_state.control_group
    device = torch.device("cpu") if dist.get_backend(group) == "gloo" else trainer.device
    values = torch.tensor([int(flag) for flag in flags], dtype=torch.int64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=group)
    return [bool(value) for value in values.tolist()]


def _concatenated_states(metric: Metric) -> list[tuple[Metric, str]]:
    """The list states that torchmetrics concatenates across processes (``dist_reduce_fx="cat"``:
    AUROC's predictions, for one) of ``metric`` and of the metrics it wraps, in module order."""
    found = []
    for module in metric.modules():
        if isinstance(module, Metric) and module.sync_on_compute:
            reductions = getattr(module, "_reductions", {})
            for name, value in module.metric_state.items():
                if isinstance(value, list) and reductions.get(name) is dim_zero_cat:
                    found.append((module, name))
    return found


def _has_empty_concatenated_state(metric: Metric) -> bool:
    return any(not getattr(module, name) for module, name in _concatenated_states(metric))


def _fill_empty_concatenated_states(trainer: Trainer, metrics: list[Metric]) -> None:
    """Give each concatenated list state that is empty on this process a tensor of zero rows shaped
    like another process's rows, so that torchmetrics can gather it with theirs.

    torchmetrics gathers an empty list state as a flat empty tensor of the metric's float dtype,
    which does not match the ``(N, C)`` predictions or the integer targets of a process that has
    samples: the gather fails. Zero rows of the right shape and dtype add nothing to the gathered
    data, so the value is the one over the samples the processes had. Every process calls this
    alike (the caller decides from flags all processes agreed on): one gather of the shapes."""
    states = [state for metric in metrics for state in _concatenated_states(metric)]
    layouts = [_layout(getattr(module, name)) for module, name in states]
    gathered: list[Any] = [None] * trainer.num_processes
    dist.all_gather_object(gathered, layouts, group=trainer.run_state.control_group)
    for index, (module, name) in enumerate(states):
        state = getattr(module, name)
        known = [theirs[index] for theirs in gathered if theirs[index] is not None]
        if not state and known:  # appended in place: the members of a compute group share the list
            shape, dtype = known[0]
            device = torch.device("cpu") if module.compute_on_cpu else module.device
            state.append(torch.empty((0, *shape), dtype=dtype, device=device))


def _layout(state: list[torch.Tensor]) -> tuple[tuple[int, ...], torch.dtype] | None:
    """The shape of a row of a list state, and its dtype; None for an empty list."""
    return (tuple(state[0].shape[1:]), state[0].dtype) if state else None


def _as_collection(metrics: Any, argument: str) -> MetricCollection:
    """``metrics`` as a MetricCollection; a clear error for anything that is not metrics."""
    if isinstance(metrics, MetricCollection):
        return metrics
    if isinstance(metrics, Metric):
        return MetricCollection({_snake_case(type(metrics).__name__): metrics})
    if isinstance(metrics, Mapping) and metrics:
        wrong = {name: type(m).__name__ for name, m in metrics.items() if not isinstance(m, (Metric, MetricCollection))}
        if wrong:
            raise TypeError(f"{argument} must map names to torchmetrics metrics; these are not: {wrong}.")
        return MetricCollection(dict(metrics))
    raise TypeError(
        f"{argument} must be a torchmetrics Metric, a MetricCollection or a non-empty dict of names to metrics, "
        f"got {metrics!r}."
    )


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _detached(value: Any) -> Any:
    """``value`` with every tensor in it detached, so metric states never hold the autograd graph."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, Mapping):
        return {key: _detached(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(item) for item in value)
    return value


def _flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested result dicts (from metrics that return several values) as ``outer_inner`` names."""
    flat: dict[str, Any] = {}
    for name, value in results.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{prefix}{name}_"))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _to_python(value: Any) -> Any:
    """A computed value as run history keeps it: a float for one number, a list otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    return value

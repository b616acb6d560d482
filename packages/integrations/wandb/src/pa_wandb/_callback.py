"""The :class:`WandbCallback`: a Weights & Biases run that follows a pa Trainer's runs."""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pa_core import hookimpl

if TYPE_CHECKING:
    from pa_core import Trainer

__all__ = ["WandbCallback"]

#: The step metrics every logged value is plotted against in the W&B UI.
EPOCH_KEY = "epoch"
UPDATES_KEY = "num_updates"
#: The name of the mean training loss logged every ``log_every_n_steps`` optimizer updates.
STEP_LOSS_KEY = "train_loss_step"

_WATCH_CHOICES = ("gradients", "parameters", "all")
_ARTIFACT_NAME = re.compile(r"^[\w.-]+$")

PathLike = str | os.PathLike[str]


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as error:  # pragma: no cover - wandb is a dependency of pa-wandb
        raise ImportError(
            "WandbCallback needs the wandb package, which pa-wandb depends on; reinstall it with "
            "`pip install pa-wandb`."
        ) from error
    return wandb


class WandbCallback:
    """Log a pa Trainer's runs to Weights & Biases.

    On the world main process only, ``train()`` starts a W&B run (``evaluate()`` too, when no
    run is active) whose config is ``trainer.run_config.to_dict()`` updated with ``config``.
    Every run-history metric with a new value is logged at the end of each epoch against
    the ``epoch`` step metric, and at the end of each intermediate evaluation against
    ``num_updates``. The run is finished when ``train()`` or ``evaluate()`` ends, and marked
    failed (exit code 1) when they raise. A run the user started with ``wandb.init()`` before
    training is logged into and left open.

    W&B's own environment is honoured: ``WANDB_MODE=offline`` or ``disabled``, ``WANDB_DIR``,
    ``WANDB_PROJECT`` and the others apply whenever the matching argument is not given.

    :param project: the W&B project.
    :param name: the run's display name.
    :param entity: the W&B user or team owning the project.
    :param group: groups related runs in the UI.
    :param tags: tags for the run.
    :param notes: a longer description of the run.
    :param config: extra config values; they win over run-config values of the same name.
    :param dir: where W&B writes the run's files (``WANDB_DIR`` when not given).
    :param mode: ``"online"``, ``"offline"`` or ``"disabled"`` (``WANDB_MODE`` when not given).
    :param settings: a ``wandb.Settings``, e.g. ``wandb.Settings(x_disable_stats=True)`` to
        skip system metrics.
    :param init_kwargs: any other ``wandb.init`` arguments (``id``, ``resume``, ``job_type``...).
    :param log_every_n_steps: also log, every this many optimizer updates, the mean training
        loss over the batches since the previous log (``train_loss_step``) and the learning
        rates. Reading the loss from the device happens only then. None: never.
    :param log_learning_rates: log each parameter group's learning rate (``lr``, or
        ``lr_group_<i>`` for several groups): every ``log_every_n_steps`` updates when that is
        set, else at each epoch end.
    :param watch: ``"gradients"``, ``"parameters"`` or ``"all"`` to record histograms with
        ``wandb.watch`` every ``watch_log_freq`` batches; None (the default) records none.
    :param watch_log_freq: batches between ``wandb.watch`` histograms.
    :param log_checkpoints: files or folders to upload as one ``model`` artifact when
        training ends successfully: a path or glob pattern, or a list of them (e.g. the
        ``save_path`` of a SaveBestModelCallback). Each is read when training ends, so the
        artifact holds the final version of every file.
    :param checkpoint_artifact_name: the artifact's name; ``model-<run id>`` by default.
    """

    def __init__(
        self,
        project: str | None = None,
        *,
        name: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        tags: Sequence[str] | None = None,
        notes: str | None = None,
        config: Mapping[str, Any] | None = None,
        dir: PathLike | None = None,
        mode: str | None = None,
        settings: Any = None,
        init_kwargs: Mapping[str, Any] | None = None,
        log_every_n_steps: int | None = None,
        log_learning_rates: bool = True,
        watch: str | None = None,
        watch_log_freq: int = 100,
        log_checkpoints: PathLike | Sequence[PathLike] | None = None,
        checkpoint_artifact_name: str | None = None,
    ) -> None:
        if log_every_n_steps is not None and (
            isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int) or log_every_n_steps < 1
        ):
            raise ValueError(f"log_every_n_steps must be a positive integer or None, got {log_every_n_steps!r}.")
        if watch is not None and watch not in _WATCH_CHOICES:
            raise ValueError(f"watch must be one of {_WATCH_CHOICES} or None, got {watch!r}.")
        if isinstance(watch_log_freq, bool) or not isinstance(watch_log_freq, int) or watch_log_freq < 1:
            raise ValueError(f"watch_log_freq must be a positive integer, got {watch_log_freq!r}.")
        if mode is not None and mode not in ("online", "offline", "disabled"):
            raise ValueError(f"mode must be 'online', 'offline', 'disabled' or None, got {mode!r}.")
        if checkpoint_artifact_name is not None and not _ARTIFACT_NAME.match(checkpoint_artifact_name):
            raise ValueError(
                f"checkpoint_artifact_name may hold only letters, digits, '-', '_' and '.', "
                f"got {checkpoint_artifact_name!r}."
            )
        if isinstance(log_checkpoints, (str, os.PathLike)):
            log_checkpoints = [log_checkpoints]
        self.init_kwargs: dict[str, Any] = {
            key: value
            for key, value in {
                "project": project,
                "name": name,
                "entity": entity,
                "group": group,
                "tags": list(tags) if tags is not None else None,
                "notes": notes,
                "dir": os.fspath(dir) if dir is not None else None,
                "mode": mode,
                "settings": settings,
            }.items()
            if value is not None
        }
        self.init_kwargs.update(init_kwargs or {})
        self.config = dict(config or {})
        self.log_every_n_steps = log_every_n_steps
        self.log_learning_rates = log_learning_rates
        self.watch = watch
        self.watch_log_freq = watch_log_freq
        self.log_checkpoints = [os.fspath(p) for p in log_checkpoints] if log_checkpoints else []
        self.checkpoint_artifact_name = checkpoint_artifact_name

        self.run: Any = None  # the W&B run, on the world main process while one is open
        self._owns_run = False
        self._watched: torch.nn.Module | None = None
        self._resume_run_id: str | None = None
        self._logged_counts: dict[str, int] = {}
        self._step_metrics: dict[str, str] = {}
        self._epoch = 1
        self._num_updates = 0
        self._loss_mark: tuple[Any, int] = (0, 0)

    # -- training run ---------------------------------------------------------------------

    @hookimpl
    def on_training_run_start(self, trainer: Trainer) -> None:
        """Start (or join) the W&B run on the world main process and start watching the model."""
        if not _is_world_main(trainer):
            return
        run_config = trainer.run_config.to_dict() if trainer.run_config is not None else {}
        self._open_run({**run_config, **self.config}, job_type="train")
        self._remember_logged_values(trainer)
        if self.watch is not None:
            self._watched = trainer.get_model()
            self.run.watch(self._watched, log=self.watch, log_freq=self.watch_log_freq)

    @hookimpl
    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Log values written late for the previous epoch, and mark the loss window's start."""
        if self.run is None:
            return
        self._log_new_metrics(trainer, step_metric=EPOCH_KEY)
        self._epoch = trainer.run_history.current_epoch
        tracker = trainer.loss_tracker
        self._loss_mark = (tracker.total_loss, tracker.running_count)

    @hookimpl(tryfirst=True)  # before other callbacks, which may start an intermediate evaluation here
    def on_train_update_end(self, trainer: Trainer, num_updates: int) -> None:
        """Every ``log_every_n_steps`` updates: the mean loss since the last log and the learning rates."""
        self._num_updates = num_updates
        if self.run is None or self.log_every_n_steps is None or num_updates % self.log_every_n_steps:
            return
        tracker = trainer.loss_tracker
        total, count = tracker.total_loss, tracker.running_count
        mark_total, mark_count = self._loss_mark
        values: dict[str, Any] = {}
        if count > mark_count:
            values[STEP_LOSS_KEY] = float((total - mark_total) / (count - mark_count))
        self._loss_mark = (total, count)
        if self.log_learning_rates:
            values.update(_learning_rates(trainer))
        self._log(values, UPDATES_KEY)

    @hookimpl
    def on_eval_epoch_end(self, trainer: Trainer, is_intermediate: bool) -> None:
        """After an intermediate evaluation, log its metrics against ``num_updates``."""
        if self.run is not None and is_intermediate:
            self._log_new_metrics(trainer, step_metric=UPDATES_KEY)

    @hookimpl
    def on_training_run_epoch_end(self, trainer: Trainer) -> None:
        """Log every run-history metric that has a new value, against the epoch."""
        if self.run is None:
            return
        extra = _learning_rates(trainer) if self.log_learning_rates and self.log_every_n_steps is None else {}
        self._log_new_metrics(trainer, step_metric=EPOCH_KEY, extra=extra)

    @hookimpl
    def on_training_run_end(self, trainer: Trainer) -> None:
        """Log what is left, upload the checkpoints, and finish the run if this callback started it."""
        if self.run is None:
            return
        self._log_new_metrics(trainer, step_metric=EPOCH_KEY)
        self._stop_watching()
        if self.log_checkpoints:
            self._upload_checkpoints(trainer)
        self._close_run(exit_code=0)

    # -- evaluation run -------------------------------------------------------------------

    @hookimpl
    def on_evaluation_run_start(self, trainer: Trainer) -> None:
        """Start (or join) a W&B run for ``evaluate()`` on the world main process."""
        if _is_world_main(trainer):
            self._open_run(dict(self.config), job_type="evaluation")
            self._remember_logged_values(trainer)

    @hookimpl
    def on_evaluation_run_end(self, trainer: Trainer) -> None:
        """Log the evaluation metrics and finish the run if this callback started it."""
        if self.run is None:
            return
        new_values = self._take_new_values(trainer)
        if new_values:
            self.run.log(new_values)
        self._close_run(exit_code=0)

    # -- failure --------------------------------------------------------------------------

    @hookimpl
    def on_exception(self, trainer: Trainer, exception: BaseException) -> None:
        """Log the metrics recorded so far, then mark the run failed (exit code 1) and finish it,
        if this callback started it."""
        if self.run is None:
            return
        self._log_new_metrics(trainer, step_metric=EPOCH_KEY)
        self._stop_watching()
        self._close_run(exit_code=1)

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The W&B run id, saved with the training state so a resumed run logs into the same W&B run."""
        run_id = self.run.id if self.run is not None else self._resume_run_id
        return {"run_id": run_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the saved W&B run (``resume="allow"``) when training continues from a saved state."""
        self._resume_run_id = state.get("run_id")

    # -- internals ------------------------------------------------------------------------

    def _open_run(self, config: dict[str, Any], job_type: str) -> None:
        wandb = _import_wandb()
        self._step_metrics = {}
        if wandb.run is not None:  # started by the user: log into it, leave it open
            self.run, self._owns_run = wandb.run, False
            self.run.config.update(config, allow_val_change=True)
            return
        kwargs: dict[str, Any] = {"job_type": job_type, **self.init_kwargs, "config": config}
        if self._resume_run_id is not None and "id" not in kwargs:
            kwargs.update(id=self._resume_run_id, resume="allow")
        self._resume_run_id = None
        self.run, self._owns_run = wandb.init(**kwargs), True

    def _stop_watching(self) -> None:
        if self._watched is not None:
            self.run.unwatch(self._watched)
            self._watched = None

    def _close_run(self, exit_code: int) -> None:
        run, owned = self.run, self._owns_run
        self.run, self._owns_run = None, False
        if owned:
            run.finish(exit_code=exit_code)

    def _remember_logged_values(self, trainer: Trainer) -> None:
        # Values already in the run history (a resumed run, or reset_run_history=False) were
        # logged by an earlier run: log only what this run adds.
        history = trainer.run_history
        self._logged_counts = {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}
        self._epoch = history.current_epoch
        self._num_updates = 0

    def _take_new_values(self, trainer: Trainer) -> dict[str, Any]:
        history = trainer.run_history
        new_values: dict[str, Any] = {}
        for name in sorted(history.get_metric_names()):
            values = history.get_metric_values(name)
            if values and len(values) != self._logged_counts.get(name, 0):
                new_values[name] = _loggable(values[-1])
                self._logged_counts[name] = len(values)
        return new_values

    def _log_new_metrics(self, trainer: Trainer, step_metric: str, extra: Mapping[str, Any] | None = None) -> None:
        values = {**self._take_new_values(trainer), **(extra or {})}
        if values:
            self._log(values, step_metric)

    def _log(self, values: dict[str, Any], step_metric: str) -> None:
        if not self._step_metrics:
            self.run.define_metric(EPOCH_KEY)
            self.run.define_metric(UPDATES_KEY)
            self._step_metrics = {EPOCH_KEY: EPOCH_KEY, UPDATES_KEY: UPDATES_KEY}
        for name in values:
            if name not in self._step_metrics:
                self.run.define_metric(name, step_metric=step_metric)
                self._step_metrics[name] = step_metric
        self.run.log({**values, EPOCH_KEY: self._epoch, UPDATES_KEY: self._num_updates})

    def _upload_checkpoints(self, trainer: Trainer) -> None:
        wandb = _import_wandb()
        paths = _expand(self.log_checkpoints)
        if not paths:
            warnings.warn(
                f"WandbCallback(log_checkpoints={self.log_checkpoints!r}) matched no files when training ended; "
                "no checkpoint artifact was logged.",
                UserWarning,
                stacklevel=2,
            )
            return
        history = trainer.run_history
        metadata = {name: _loggable(history.get_latest_metric(name)) for name in history.get_metric_names()}
        metadata[EPOCH_KEY] = self._epoch
        name = self.checkpoint_artifact_name or f"model-{self.run.id}"
        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        for path in paths:
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            else:
                artifact.add_file(str(path), name=path.name)
        self.run.log_artifact(artifact, aliases=["latest"])


def _is_world_main(trainer: Trainer) -> bool:
    if trainer.run_config is not None:
        return trainer.run_config.is_world_process_zero
    return trainer.is_world_process_zero


def _learning_rates(trainer: Trainer) -> dict[str, float]:
    groups = trainer.optimizer.param_groups if trainer.optimizer is not None else []
    if len(groups) == 1:
        return {"lr": float(groups[0]["lr"])}
    return {f"lr_group_{index}": float(group["lr"]) for index, group in enumerate(groups)}


def _loggable(value: Any) -> Any:
    """A run-history value as W&B should see it: one-element tensors become numbers."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value
    return value


def _expand(patterns: Sequence[str]) -> list[Path]:
    """Existing paths named by ``patterns`` (paths or glob patterns), each once, in order."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        is_pattern = any(char in pattern for char in "*?[")
        matches = sorted(glob.glob(pattern, recursive=True)) if is_pattern else [pattern]
        for match in matches:
            path = Path(match)
            if path.exists():
                found.setdefault(path, None)
    return list(found)

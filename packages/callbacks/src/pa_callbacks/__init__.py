"""pa-callbacks: every built-in callback for the pa Trainer.

Callbacks are upstream-style :class:`pa_core.TrainerCallback` subclasses, so subclassing one and
overriding its ``on_*`` methods (or ``LogMetricsCallback.log_metrics``) works as in
pytorch-accelerated. Each is also published under a catalogue name in the ``pa.callbacks``
entry-point group, so ``Trainer(callbacks=["progress-bar", "early-stopping"])`` works too.
"""

from pa_callbacks.__about__ import __version__
from pa_callbacks.checkpoints import SaveBestModelCallback, SaveTrainingStateCallback, WSDCheckpointCallback
from pa_callbacks.device import ConvertSyncBatchNormCallback, MoveModulesToDeviceCallback
from pa_callbacks.early_stopping import EarlyStoppingCallback
from pa_callbacks.ema import ModelEmaCallback
from pa_callbacks.evaluation import StepBasedEvaluationCallback
from pa_callbacks.limits import LimitBatchesCallback, LimitEvalStepsCallback
from pa_callbacks.metrics import LogMetricsCallback, MetricsFileCallback
from pa_callbacks.nan import NonFiniteLossError, TerminateOnNaNCallback
from pa_callbacks.profiler import ProfilerCallback
from pa_callbacks.progress import PrintProgressCallback, ProgressBarCallback
from pa_callbacks.throughput import ThroughputCallback
from pa_core import CallbackHandler, StopTrainingError, TrainerCallback

__all__ = [
    "DEFAULT_CALLBACK_CLASSES",
    "CallbackHandler",
    "ConvertSyncBatchNormCallback",
    "EarlyStoppingCallback",
    "LimitBatchesCallback",
    "LimitEvalStepsCallback",
    "LogMetricsCallback",
    "MetricsFileCallback",
    "ModelEmaCallback",
    "MoveModulesToDeviceCallback",
    "NonFiniteLossError",
    "PrintProgressCallback",
    "ProfilerCallback",
    "ProgressBarCallback",
    "SaveBestModelCallback",
    "SaveTrainingStateCallback",
    "StepBasedEvaluationCallback",
    "StopTrainingError",
    "TerminateOnNaNCallback",
    "ThroughputCallback",
    "TrainerCallback",
    "WSDCheckpointCallback",
    "__version__",
    "get_default_callbacks",
]


#: The classes of the callbacks a Trainer uses by default, in ``pa_core.DEFAULT_CALLBACKS``'s order.
#: pytorch-accelerated's ``DEFAULT_CALLBACKS`` held these classes, so code that filters it by class
#: (``[cb for cb in DEFAULT_CALLBACKS if cb is not ProgressBarCallback]``) works on this tuple;
#: ``pa migrate`` imports it under the name ``DEFAULT_CALLBACKS`` in such code.
DEFAULT_CALLBACK_CLASSES: tuple[type[TrainerCallback], ...] = (
    MoveModulesToDeviceCallback,
    TerminateOnNaNCallback,
    PrintProgressCallback,
    ProgressBarCallback,
    LogMetricsCallback,
)


def get_default_callbacks(progress_bar: bool = True) -> tuple[TrainerCallback, ...]:
    """New instances of the callbacks a Trainer uses by default (``pa_core.DEFAULT_CALLBACKS``),
    in order: move modules to the device, terminate on NaN, print progress, the progress bar
    (unless ``progress_bar`` is False) and log metrics.

    Use it to add to the defaults: ``Trainer(..., callbacks=(*get_default_callbacks(), MyCallback()))``.
    """
    callbacks: list[TrainerCallback] = [
        MoveModulesToDeviceCallback(),
        TerminateOnNaNCallback(),
        PrintProgressCallback(),
    ]
    if progress_bar:
        callbacks.append(ProgressBarCallback())
    callbacks.append(LogMetricsCallback())
    return tuple(callbacks)

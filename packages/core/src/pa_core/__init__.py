"""pa-core: a minimal, transparent, extensible PyTorch training loop over Hugging Face Accelerate.

The :class:`Trainer` runs the loop; callbacks and plugins hook into it through the hooks
documented in :mod:`pa_core.hookspecs`.
"""

from pa_core.__about__ import __version__
from pa_core._preemption import TrainingPreempted
from pa_core._serialization import CheckpointError, UnsafeCheckpointError
from pa_core.callbacks import CallbackHandler, StopTrainingError, TrainerCallback
from pa_core.hookspecs import hookimpl, hookspec
from pa_core.placeholders import TrainerPlaceholderValues, replace_trainer_placeholder_values
from pa_core.run_config import TrainerRunConfig
from pa_core.run_state import RunState
from pa_core.tracking import InMemoryRunHistory, LossTracker, RunHistory
from pa_core.trainer import DEFAULT_CALLBACKS, Trainer, TrainerWithTimmScheduler
from pa_core.training_state import latest_training_state, read_training_state

__all__ = [
    "DEFAULT_CALLBACKS",
    "CallbackHandler",
    "CheckpointError",
    "InMemoryRunHistory",
    "LossTracker",
    "RunHistory",
    "RunState",
    "StopTrainingError",
    "Trainer",
    "TrainerCallback",
    "TrainerPlaceholderValues",
    "TrainerRunConfig",
    "TrainerWithTimmScheduler",
    "TrainingPreempted",
    "UnsafeCheckpointError",
    "__version__",
    "hookimpl",
    "hookspec",
    "latest_training_state",
    "read_training_state",
    "replace_trainer_placeholder_values",
]

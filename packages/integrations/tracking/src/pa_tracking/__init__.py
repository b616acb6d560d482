"""pa-tracking: log pa Trainer runs to TensorBoard, MLflow or any other tracker Accelerate supports.

Add a callback (or its catalogue name) to a Trainer's callbacks::

    from pa_core import DEFAULT_CALLBACKS, Trainer
    from pa_tracking import MLflowCallback, TensorBoardCallback, TrackerCallback

    trainer = Trainer(model, loss_func, optimizer,
                      callbacks=[*DEFAULT_CALLBACKS, TensorBoardCallback("runs/baseline")])
    # or callbacks=[..., "tensorboard"], [..., "mlflow"], [..., TrackerCallback("aim", project_name="digits")]

Each tracker's library comes with an extra: ``pip install "pa-tracking[tensorboard]"``,
``"pa-tracking[mlflow]"``, ... Only the world main process writes.
"""

from pa_tracking.__about__ import __version__
from pa_tracking._mlflow import MLflowCallback
from pa_tracking._tensorboard import TensorBoardCallback
from pa_tracking._tracker import TrackerCallback

__all__ = ["MLflowCallback", "TensorBoardCallback", "TrackerCallback", "__version__"]

"""pa-torchmetrics: torchmetrics metrics computed in the pa training loop, correct across processes.

Add a :class:`MetricsCallback` to a Trainer's callbacks::

    from torchmetrics.classification import MulticlassAccuracy
    from pa_torchmetrics import MetricsCallback

    trainer = Trainer(model, loss_func, optimizer,
                      callbacks=[MetricsCallback({"accuracy": MulticlassAccuracy(num_classes=10)}), ...])

and read ``eval_accuracy`` from ``trainer.run_history`` after each epoch.
"""

from pa_torchmetrics.__about__ import __version__
from pa_torchmetrics._callback import MetricsCallback

__all__ = ["MetricsCallback", "__version__"]

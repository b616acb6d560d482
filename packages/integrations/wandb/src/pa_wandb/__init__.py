"""pa-wandb: log pa Trainer runs to Weights & Biases.

Add :class:`WandbCallback` (or its catalogue name ``"wandb"``) to a Trainer's callbacks::

    from pa_core import DEFAULT_CALLBACKS, Trainer
    from pa_wandb import WandbCallback

    trainer = Trainer(model, loss_func, optimizer,
                      callbacks=[*DEFAULT_CALLBACKS, WandbCallback(project="my-project")])

``wandb`` itself is imported only when the first W&B run starts.
"""

from pa_wandb.__about__ import __version__
from pa_wandb._callback import WandbCallback

__all__ = ["WandbCallback", "__version__"]

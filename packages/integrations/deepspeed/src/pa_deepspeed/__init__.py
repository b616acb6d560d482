"""pa-deepspeed: run a pa Trainer with DeepSpeed (ZeRO stages 0-3, offload, bf16/fp16).

Add :class:`DeepSpeedCallback` to a Trainer and launch the script on every process (for
example with ``torchrun`` or ``accelerate launch``); the Trainer's model and optimizer then
run inside a DeepSpeed engine configured through Accelerate's ``DeepSpeedPlugin``::

    from pa_core import Trainer
    from pa_deepspeed import DeepSpeedCallback

    trainer = Trainer(model, loss_func, optimizer, callbacks=[DeepSpeedCallback(zero_stage=2)])
    trainer.train(train_dataset, num_epochs=3, per_device_batch_size=8, gradient_accumulation_steps=4)

The callback is also in the ``pa.callbacks`` catalogue as ``"deepspeed"``. Importing this
package is cheap: DeepSpeed itself is imported when the first Accelerator is configured.
"""

from pa_deepspeed.__about__ import __version__
from pa_deepspeed._callback import DeepSpeedCallback, DeepSpeedConfigError

__all__ = ["DeepSpeedCallback", "DeepSpeedConfigError", "__version__"]

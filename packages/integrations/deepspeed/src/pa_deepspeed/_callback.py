"""The DeepSpeed callback: a Trainer run becomes a DeepSpeed run through Accelerate's DeepSpeed plugin.

How it fits the Trainer:

- ``pa_configure_accelerator`` fires before each Accelerator is created (at construction and
  in every ``train()``/``evaluate()``). The callback adds a fresh ``DeepSpeedPlugin`` built from
  its configuration, and on a machine without an accelerator a gloo process group, so that
  ``accelerator.prepare`` wraps the model and optimizer in a DeepSpeed engine.
- ``on_training_run_start`` fires once ``train()`` has prepared everything and knows its
  arguments. The engine's micro-batch size and gradient-accumulation steps are then set from
  ``train()``'s ``per_device_batch_size`` and ``gradient_accumulation_steps`` (config values
  left at ``"auto"``) or checked against them (explicit config values).

The Trainer does the rest: under DeepSpeed it tells the engine where each accumulation window
ends and leaves the division of the loss by the accumulation steps to the engine, which also
clips gradients (by norm) and steps the optimizer inside ``accelerator.backward``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pa_core import hookimpl

if TYPE_CHECKING:
    from accelerate.utils import DeepSpeedPlugin

    from pa_core import Trainer

__all__ = ["DeepSpeedCallback", "DeepSpeedConfigError"]

AUTO = "auto"
_ZERO_STAGES = (0, 1, 2, 3)
_OFFLOAD_DEVICES = ("none", "cpu", "nvme")
_MIXED_PRECISIONS = ("no", "bf16", "fp16")
#: Batch-size entries of a DeepSpeed config that must agree with ``Trainer.train()``'s arguments.
_BATCH_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")
#: Config sections that would make DeepSpeed build its own optimizer or scheduler.
_OWNED_BY_THE_TRAINER = {
    "optimizer": (
        "the Trainer's optimizer object is handed to DeepSpeed. Remove the 'optimizer' section and create the "
        "optimizer yourself, e.g. torch.optim.AdamW(model.parameters(), lr=...) (DeepSpeed's own optimizers, "
        "such as deepspeed.ops.adam.DeepSpeedCPUAdam, can be passed the same way; naming one in the config also "
        "compiles its kernels, which takes minutes)"
    ),
    "scheduler": (
        "the Trainer steps its own scheduler. Remove the 'scheduler' section and pass "
        "train(create_scheduler_fn=...) instead"
    ),
}


class DeepSpeedConfigError(ValueError):
    """The DeepSpeed configuration is invalid, contradicts itself, or contradicts ``Trainer.train()``'s arguments."""


class DeepSpeedCallback:
    """Run the Trainer's model and optimizer in a DeepSpeed engine, through Accelerate's ``DeepSpeedPlugin``.

    Launch the script on every process (``torchrun --nproc_per_node N script.py`` or
    ``accelerate launch --num_processes N script.py``); a plain ``python script.py`` runs one
    process. The Trainer's own arguments keep their meaning: ``per_device_batch_size`` and
    ``gradient_accumulation_steps`` of ``train()`` set DeepSpeed's micro-batch size and
    accumulation steps, the engine steps exactly at the Trainer's optimizer updates (also on the
    last, shorter window of an epoch), and training states saved with
    ``trainer.save_training_state(dir)`` hold DeepSpeed's sharded engine checkpoint, restored by
    ``train(resume_from=dir)``.

    :param config: a DeepSpeed configuration: the path of a JSON file or a dict (copied, never
        modified). Leave ``train_micro_batch_size_per_gpu``, ``gradient_accumulation_steps`` and
        ``train_batch_size`` out or at ``"auto"`` to take them from ``train()``; explicit values
        must agree with ``train()``'s arguments. It must not have an ``optimizer`` or
        ``scheduler`` section: the Trainer owns both.
    :param zero_stage: ZeRO stage 0 (plain data parallelism), 1 (optimizer states sharded),
        2 (and gradients) or 3 (and parameters). Default: the config's value, else the one from
        ``accelerate launch``/``accelerate config``, else 2.
    :param offload_optimizer_device: ``"cpu"`` (or ``"nvme"``) keeps optimizer states and the
        optimizer step off the accelerator (ZeRO stage 1-3); ``"none"`` does not.
    :param offload_param_device: ``"cpu"`` (or ``"nvme"``) keeps parameters off the accelerator
        between uses (ZeRO stage 3 only); ``"none"`` does not.
    :param mixed_precision: ``"bf16"``, ``"fp16"`` or ``"no"``; DeepSpeed keeps fp32 master weights.
        Default: the config's ``bf16``/``fp16`` sections, else the Accelerator's setting
        (``accelerate launch --mixed_precision``).
    :param gradient_clipping: clip the global gradient norm to this value before each update
        (DeepSpeed's ``gradient_clipping``); 0 or None (the default, unless the config sets it)
        does not clip. ``train(gradient_clip_value=...)`` clips by value, which DeepSpeed cannot
        do, and is refused.
    :param zero3_save_16bit_model: under ZeRO stage 3, let ``trainer.save_checkpoint`` gather the
        sharded weights into one file (DeepSpeed's ``stage3_gather_16bit_weights_on_model_save``;
        the weights keep their training dtype, fp32 unless mixed precision is on). Default True.
    :param cast_inputs: DeepSpeed's bf16 and fp16 modes hold the model itself in 16 bits; cast
        32- and 64-bit floating-point tensors passed to the model (positionally or by keyword,
        also inside lists, tuples and dicts) to the model's dtype, so a model fed float32
        features trains unchanged. Integer inputs (token ids, labels) are left alone.

    Keyword arguments and explicit config values must agree; a keyword fills a config value that
    is missing or ``"auto"``.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        zero_stage: int | None = None,
        offload_optimizer_device: str | None = None,
        offload_param_device: str | None = None,
        mixed_precision: str | None = None,
        gradient_clipping: float | None = None,
        zero3_save_16bit_model: bool | None = None,
        cast_inputs: bool = True,
    ) -> None:
        _check_installed()
        _check_choice("zero_stage", zero_stage, _ZERO_STAGES)
        _check_choice("offload_optimizer_device", offload_optimizer_device, _OFFLOAD_DEVICES)
        _check_choice("offload_param_device", offload_param_device, _OFFLOAD_DEVICES)
        _check_choice("mixed_precision", mixed_precision, _MIXED_PRECISIONS)
        if gradient_clipping is not None and (
            isinstance(gradient_clipping, bool)
            or not isinstance(gradient_clipping, (int, float))
            or gradient_clipping < 0
        ):
            raise ValueError(
                f"gradient_clipping must be a maximum gradient norm (a number >= 0) or None, got {gradient_clipping!r}."
            )
        if zero3_save_16bit_model is not None and not isinstance(zero3_save_16bit_model, bool):
            raise TypeError(f"zero3_save_16bit_model must be True, False or None, got {zero3_save_16bit_model!r}.")
        if not isinstance(cast_inputs, bool):
            raise TypeError(f"cast_inputs must be True or False, got {cast_inputs!r}.")
        self.cast_inputs = cast_inputs
        self._cast_handle: Any = None

        self._config = _load_config(config)
        if config is None or isinstance(config, Mapping):
            source = "the DeepSpeed config"
        else:
            source = f"the DeepSpeed config file {os.fspath(config)!r}"
        self._source = source
        for section, reason in _OWNED_BY_THE_TRAINER.items():
            if section in self._config:
                raise DeepSpeedConfigError(f"{_upper(source)} has a {section!r} section, but {reason}.")
        zero = self._config.setdefault("zero_optimization", {})
        if not isinstance(zero, dict):
            raise DeepSpeedConfigError(f"{_upper(source)}: 'zero_optimization' must be a dict, got {zero!r}.")
        # A stage left open comes from `accelerate launch` (or Accelerate's default, 2), as for a
        # plain Accelerator; so do the offload devices when the config is built from keywords.
        zero.setdefault("stage", AUTO)
        if config is None:
            zero.setdefault("offload_optimizer", {"device": AUTO})
            zero.setdefault("offload_param", {"device": AUTO})

        self._merge("zero_optimization.stage", zero_stage, "zero_stage")
        self._merge("zero_optimization.offload_optimizer.device", offload_optimizer_device, "offload_optimizer_device")
        self._merge("zero_optimization.offload_param.device", offload_param_device, "offload_param_device")
        self._merge(
            "zero_optimization.stage3_gather_16bit_weights_on_model_save",
            zero3_save_16bit_model,
            "zero3_save_16bit_model",
        )
        self._merge(
            "gradient_clipping", None if gradient_clipping is None else float(gradient_clipping), "gradient_clipping"
        )
        if mixed_precision is not None:
            self._merge("bf16.enabled", mixed_precision == "bf16", "mixed_precision")
            self._merge("fp16.enabled", mixed_precision == "fp16", "mixed_precision")
            if mixed_precision == "fp16" and _get(self._config, "fp16.auto_cast") is None:
                self._config["fp16"]["auto_cast"] = True  # as Accelerate's own fp16 setting does
        if _get(self._config, "bf16.enabled") is True and _get(self._config, "fp16.enabled") is True:
            raise DeepSpeedConfigError(f"{_upper(source)} enables both bf16 and fp16; enable at most one.")
        # With optimizer offload Accelerate would swap the Trainer's optimizer for DeepSpeedCPUAdam
        # (whatever its class, compiling a kernel on first use); pa keeps the optimizer it was given.
        self._config.setdefault("zero_force_ds_cpu_optimizer", False)
        if _get(self._config, "gradient_clipping") in (None, AUTO):
            # pa clips only when asked; Accelerate's "auto" would clip the norm to 1.0.
            self._config["gradient_clipping"] = 0.0
        for key in _BATCH_KEYS:
            value = self._config.get(key, AUTO)
            if value != AUTO and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DeepSpeedConfigError(
                    f"{_upper(source)}: {key} must be a positive integer or 'auto', got {value!r}."
                )
            self._config[key] = value
        stage = _get(self._config, "zero_optimization.stage")
        if stage != AUTO:
            _check_stage_options(self._config, source)

    # ------------------------------------------------------------------------------------
    # Public
    # ------------------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the DeepSpeed configuration this callback starts every Accelerator with.

        ``"auto"`` values are filled per run: the ZeRO stage and offload devices from
        ``accelerate launch`` (or Accelerate's defaults), the batch sizes from ``train()``.
        """
        return copy.deepcopy(self._config)

    def create_plugin(self) -> DeepSpeedPlugin:
        """A new ``accelerate.utils.DeepSpeedPlugin`` for this configuration.

        The callback makes one per Accelerator. Call it yourself to build an Accelerator
        with the same settings outside a Trainer.
        """
        from accelerate.utils import DeepSpeedPlugin

        config = copy.deepcopy(self._config)
        # Placeholders until train() says the real values (on_training_run_start checks explicit
        # values and sizes the engine); an evaluate() Accelerator prepares a model without a data
        # loader, so the engine cannot wait for Accelerate to read the batch size from one.
        for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
            if config[key] == AUTO:
                config[key] = 1
        config["train_batch_size"] = AUTO  # Accelerate fills in micro-batch x accumulation x processes
        plugin = DeepSpeedPlugin(hf_ds_config=config)
        resolved = plugin.deepspeed_config
        gather_key = "zero_optimization.stage3_gather_16bit_weights_on_model_save"
        if plugin.zero_stage == 3 and _get(self._config, gather_key) in (None, AUTO):
            # save_checkpoint gathers the sharded weights into one file.
            resolved["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
        _check_stage_options(resolved, self._source)
        return plugin

    # ------------------------------------------------------------------------------------
    # Hooks
    # ------------------------------------------------------------------------------------

    @hookimpl
    def pa_configure_accelerator(self, trainer: Trainer, accelerator_kwargs: dict[str, Any]) -> None:
        """Add a fresh ``DeepSpeedPlugin`` (and on CPU a gloo process group) to the Accelerator's arguments."""
        for key in ("deepspeed_plugin", "deepspeed_plugins", "fsdp_plugin"):
            if accelerator_kwargs.get(key) is not None:
                raise DeepSpeedConfigError(
                    f"The Accelerator already has a {key} (set by another callback or an overridden "
                    "Trainer._create_accelerator), and DeepSpeedCallback would add a second engine configuration. "
                    "Use one of them."
                )
        _set_single_process_environment()
        on_cpu = _deepspeed_device_is_cpu()
        if on_cpu:
            _skip_shared_memory_comm_build()
        # Accelerator(cpu=True) silently runs without DeepSpeed; DeepSpeed finds the CPU itself.
        accelerator_kwargs.pop("cpu", None)
        _forget_previous_accelerator_state()
        plugin = self.create_plugin()
        _check_precision_supported(plugin.deepspeed_config, self._source)
        accelerator_kwargs["deepspeed_plugin"] = plugin
        if on_cpu:
            from accelerate.utils import InitProcessGroupKwargs

            handlers = list(accelerator_kwargs.get("kwargs_handlers") or [])
            if not any(isinstance(handler, InitProcessGroupKwargs) for handler in handlers):
                handlers.append(InitProcessGroupKwargs(backend="gloo"))
            accelerator_kwargs["kwargs_handlers"] = handlers

    @hookimpl(tryfirst=True)
    def on_training_run_start(self, trainer: Trainer) -> None:
        """Check the configuration against ``train()``'s arguments and size the engine's batches.

        Runs before the other callbacks' ``on_training_run_start``, so they see the engine as it trains.
        """
        from deepspeed import DeepSpeedEngine

        engine = trainer.model
        if not isinstance(engine, DeepSpeedEngine):
            raise RuntimeError(
                "DeepSpeedCallback is active but the model was not wrapped in a DeepSpeed engine "
                f"(it is a {type(engine).__name__}). Accelerate ignores DeepSpeed when the Accelerator is created "
                "with cpu=True: if Trainer._create_accelerator is overridden, build on self._accelerator_kwargs() "
                "and do not pass cpu=True."
            )
        run_config = trainer.run_config
        if run_config.gradient_clip_value is not None:
            raise DeepSpeedConfigError(
                f"train(gradient_clip_value={run_config.gradient_clip_value!r}) clips gradients by value, which "
                "DeepSpeed cannot do: its engine clips the global gradient norm inside its optimizer step. Remove "
                "gradient_clip_value and pass DeepSpeedCallback(gradient_clipping=<max norm>) instead."
            )
        micro_batch = run_config.train_per_device_batch_size
        accumulation = run_config.gradient_accumulation_steps
        global_batch = micro_batch * accumulation * engine.dp_world_size
        expected = {
            "train_micro_batch_size_per_gpu": (micro_batch, "train(per_device_batch_size=...)"),
            "gradient_accumulation_steps": (accumulation, "train(gradient_accumulation_steps=...)"),
            "train_batch_size": (
                global_batch,
                "per_device_batch_size x gradient_accumulation_steps x "
                f"{engine.dp_world_size} process{'es' if engine.dp_world_size != 1 else ''}",
            ),
        }
        for key, (value, origin) in expected.items():
            configured = self._config[key]
            if configured != AUTO and configured != value:
                raise DeepSpeedConfigError(
                    f"{_upper(self._source)} sets {key}={configured}, but this run uses {value} ({origin}). Make them "
                    f"agree, or set {key} to 'auto' (or leave it out) to take it from train()."
                )
        engine.set_train_micro_batch_size(micro_batch)
        engine.set_train_batch_size(global_batch)
        # ZeRO optimizers keep their own copy, read when accumulating offloaded gradients.
        zero_optimizer = engine.optimizer
        if zero_optimizer is not None and hasattr(zero_optimizer, "gradient_accumulation_steps"):
            zero_optimizer.gradient_accumulation_steps = accumulation
        self._start_casting_inputs(trainer)

    @hookimpl
    def on_evaluation_run_start(self, trainer: Trainer) -> None:
        """Cast floating-point inputs to a 16-bit model's dtype during ``evaluate()`` (see ``cast_inputs``)."""
        self._start_casting_inputs(trainer)

    @hookimpl
    def on_training_run_end(self, trainer: Trainer) -> None:
        """Leave the user's model without the input-casting hook."""
        self._stop_casting_inputs()

    @hookimpl
    def on_evaluation_run_end(self, trainer: Trainer) -> None:
        """Leave the user's model without the input-casting hook."""
        self._stop_casting_inputs()

    @hookimpl
    def on_exception(self, trainer: Trainer, exception: BaseException) -> None:
        """Leave the user's model without the input-casting hook when a run fails."""
        self._stop_casting_inputs()

    # ------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------

    def _start_casting_inputs(self, trainer: Trainer) -> None:
        self._stop_casting_inputs()
        if not self.cast_inputs:
            return
        module = getattr(trainer.model, "module", trainer.model)
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
        if dtype in (torch.bfloat16, torch.float16):
            self._cast_handle = module.register_forward_pre_hook(_InputCaster(dtype), with_kwargs=True)

    def _stop_casting_inputs(self) -> None:
        if self._cast_handle is not None:
            self._cast_handle.remove()
            self._cast_handle = None

    def _merge(self, dotted_key: str, value: Any, argument: str) -> None:
        """Put a keyword argument into the config, refusing to overwrite a different explicit value."""
        if value is None:
            return
        current = _get(self._config, dotted_key)
        if current not in (None, AUTO) and current != value:
            raise DeepSpeedConfigError(
                f"{argument}={value!r} contradicts {self._source}, which sets {dotted_key} to {current!r}. Drop one "
                f"of them, or set {dotted_key} to 'auto' in the config."
            )
        node = self._config
        *parents, leaf = dotted_key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise DeepSpeedConfigError(f"{_upper(self._source)}: {part!r} must be a dict, got {child!r}.")
            node = child
        node[leaf] = value

    def __repr__(self) -> str:
        return f"DeepSpeedCallback(config={self._config!r})"


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


class _InputCaster:
    """A forward pre-hook casting 32/64-bit floating-point inputs to a 16-bit model's dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._cast(args), self._cast(kwargs)

    def _cast(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(self.dtype) if value.dtype in (torch.float32, torch.float64) else value
        if isinstance(value, dict):
            return {key: self._cast(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(self._cast(item) for item in value)
        return value


def _check_installed() -> None:
    missing = [name for name in ("deepspeed", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"DeepSpeedCallback needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            "installed (Accelerate's DeepSpeed support imports transformers too). Install pa-deepspeed with its "
            "dependencies: `DS_BUILD_OPS=0 pip install pa-deepspeed` (DS_BUILD_OPS=0 builds DeepSpeed without "
            "compiling any op ahead of time; ops are compiled on first use instead)."
        )


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))} or None, got {value!r}.")


def _load_config(config: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config={os.fspath(config)!r}: no such DeepSpeed config file.")
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DeepSpeedConfigError(f"config={os.fspath(config)!r} is not valid JSON: {exc}.") from exc
        if not isinstance(loaded, dict):
            raise DeepSpeedConfigError(
                f"config={os.fspath(config)!r} must hold a JSON object, got {type(loaded).__name__}."
            )
        return loaded
    raise TypeError(f"config must be the path of a DeepSpeed JSON file, a dict, or None; got {type(config).__name__}.")


def _get(config: Mapping[str, Any], dotted_key: str) -> Any:
    node: Any = config
    for part in dotted_key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _check_stage_options(config: Mapping[str, Any], source: str) -> None:
    stage = _get(config, "zero_optimization.stage")
    if stage not in _ZERO_STAGES:
        raise DeepSpeedConfigError(f"{_upper(source)}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}.")
    param_device = _get(config, "zero_optimization.offload_param.device")
    if param_device not in (None, AUTO, "none") and stage != 3:
        raise DeepSpeedConfigError(
            f"{_upper(source)}: offloading parameters (offload_param device {param_device!r}) needs ZeRO stage 3, "
            f"but the stage is {stage}. Use zero_stage=3, or offload only the optimizer (offload_optimizer_device)."
        )
    optimizer_device = _get(config, "zero_optimization.offload_optimizer.device")
    if optimizer_device not in (None, AUTO, "none") and stage == 0:
        raise DeepSpeedConfigError(
            f"{_upper(source)}: offloading the optimizer (offload_optimizer device {optimizer_device!r}) needs ZeRO "
            "stage 1, 2 or 3, but the stage is 0."
        )


def _check_precision_supported(config: Mapping[str, Any], source: str) -> None:
    from deepspeed.accelerator import get_accelerator

    device = get_accelerator()
    for name, supported in (("fp16", device.is_fp16_supported), ("bf16", device.is_bf16_supported)):
        if _get(config, f"{name}.enabled") is True and not supported():
            other = "bf16" if name == "fp16" else "no"
            raise DeepSpeedConfigError(
                f"{_upper(source)} (or mixed_precision / accelerate launch --mixed_precision) enables {name}, which "
                f"DeepSpeed does not support on this device ({device.device_name()}). Use mixed_precision={other!r}."
            )


def _set_single_process_environment() -> None:
    """DeepSpeed always joins a process group: give a single, unlaunched process a group of one."""
    if "LOCAL_RANK" in os.environ or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but LOCAL_RANK is not set, so DeepSpeed cannot tell which "
            "process this is. Start the script with torchrun or accelerate launch, which set both."
        )
    defaults = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if "MASTER_PORT" not in os.environ:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])


def _deepspeed_device_is_cpu() -> bool:
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().device_name() == "cpu"


def _skip_shared_memory_comm_build() -> None:
    """On CPU, DeepSpeed compiles a shared-memory collective op (about two minutes) when it first
    joins a process group, unless told the op is unavailable; gloo does the same job."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _forget_previous_accelerator_state() -> None:
    """Let the next Accelerator start from this callback's plugin.

    Accelerate keeps one process-wide ``AcceleratorState`` and refuses a ``deepspeed_plugin``
    once a DeepSpeed state exists, while the Trainer creates a fresh Accelerator for every run.
    Dropping the previous Accelerator's state (the process group, in ``PartialState``, stays)
    gives each run a plugin whose ``"auto"`` values are filled anew.
    """
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)

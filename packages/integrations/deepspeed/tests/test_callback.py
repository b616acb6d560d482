"""DeepSpeedCallback's configuration, validation and Accelerator arguments, in this process (no engine).

The runs that build real DeepSpeed engines are in test_runs.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections import namedtuple
from importlib.metadata import entry_points

import pytest
import torch
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

import pa_deepspeed
from pa_deepspeed import DeepSpeedCallback, DeepSpeedConfigError
from pa_deepspeed._callback import _InputCaster


@pytest.fixture(autouse=True)
def launched_environment(monkeypatch):
    """As if started by a launcher: the callback then leaves the process environment alone."""
    for name, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"):
        monkeypatch.delenv(name, raising=False)


def test_public_names_and_catalogue_entry():
    assert set(pa_deepspeed.__all__) == {"DeepSpeedCallback", "DeepSpeedConfigError", "__version__"}
    (entry,) = [ep for ep in entry_points(group="pa.callbacks") if ep.name == "deepspeed"]
    assert entry.load() is DeepSpeedCallback
    assert issubclass(DeepSpeedConfigError, ValueError)


def test_defaults_follow_the_trainer():
    config = DeepSpeedCallback().config
    assert config == {
        "zero_optimization": {
            "stage": "auto",
            "offload_optimizer": {"device": "auto"},
            "offload_param": {"device": "auto"},
        },
        "zero_force_ds_cpu_optimizer": False,  # keep the Trainer's optimizer when offloading
        "gradient_clipping": 0.0,  # no clipping unless asked (DeepSpeed's own default is 1.0)
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
    }


def test_keywords_fill_the_config():
    callback = DeepSpeedCallback(
        zero_stage=3,
        offload_optimizer_device="cpu",
        offload_param_device="cpu",
        mixed_precision="bf16",
        gradient_clipping=1,
        zero3_save_16bit_model=False,
    )
    config = callback.config
    assert config["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu"},
        "offload_param": {"device": "cpu"},
        "stage3_gather_16bit_weights_on_model_save": False,
    }
    assert config["bf16"] == {"enabled": True} and config["fp16"] == {"enabled": False}
    assert config["gradient_clipping"] == 1.0
    assert DeepSpeedCallback(mixed_precision="fp16").config["fp16"] == {"enabled": True, "auto_cast": True}


def test_config_from_a_dict_or_a_file_is_copied(tmp_path):
    user_config = {"zero_optimization": {"stage": 1}, "gradient_clipping": 0.5, "train_micro_batch_size_per_gpu": 8}
    callback = DeepSpeedCallback(user_config)
    assert user_config == {  # untouched
        "zero_optimization": {"stage": 1},
        "gradient_clipping": 0.5,
        "train_micro_batch_size_per_gpu": 8,
    }
    assert callback.config["gradient_clipping"] == 0.5
    assert callback.config["train_micro_batch_size_per_gpu"] == 8
    callback.config["gradient_clipping"] = 9.0  # a copy
    assert callback.config["gradient_clipping"] == 0.5

    path = tmp_path / "ds.json"
    path.write_text(json.dumps(user_config))
    assert DeepSpeedCallback(path).config == callback.config
    assert DeepSpeedCallback(str(path), zero_stage=1).config == callback.config


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        ({"zero_optimization": {"stage": 2}}, {"zero_stage": 3}, "zero_stage=3 contradicts the DeepSpeed config"),
        ({"gradient_clipping": 1.0}, {"gradient_clipping": 2.0}, "sets gradient_clipping to 1.0"),
        ({"bf16": {"enabled": True}}, {"mixed_precision": "fp16"}, "sets bf16.enabled to True"),
        ({"optimizer": {"type": "Adam"}}, {}, "'optimizer' section"),
        ({"scheduler": {"type": "WarmupLR"}}, {}, "create_scheduler_fn"),
        ({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}, {}, "needs ZeRO stage 3"),
        ({"zero_optimization": {"stage": 0}}, {"offload_optimizer_device": "cpu"}, "needs ZeRO stage 1, 2 or 3"),
        ({"zero_optimization": {"stage": 5}}, {}, "must be 0, 1, 2 or 3, got 5"),
        ({"bf16": {"enabled": True}, "fp16": {"enabled": True}}, {}, "enables both bf16 and fp16"),
        ({"gradient_accumulation_steps": 0}, {}, "gradient_accumulation_steps must be a positive integer"),
        ({"zero_optimization": "3"}, {}, "'zero_optimization' must be a dict"),
    ],
)
def test_contradictory_configurations_are_refused(config, kwargs, message):
    with pytest.raises(DeepSpeedConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DeepSpeedCallback(config, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"zero_stage": 4}, "zero_stage must be one of 0, 1, 2, 3"),
        ({"zero_stage": True}, "zero_stage must be one of"),
        ({"offload_optimizer_device": "gpu"}, "offload_optimizer_device must be one of 'none', 'cpu', 'nvme'"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of 'no', 'bf16', 'fp16'"),
        ({"gradient_clipping": -1}, "gradient_clipping must be a maximum gradient norm"),
    ],
)
def test_invalid_keywords_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepSpeedCallback(**kwargs)


def test_unreadable_configs_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such DeepSpeed config file"):
        DeepSpeedCallback(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{stage: 2")
    with pytest.raises(DeepSpeedConfigError, match="is not valid JSON"):
        DeepSpeedCallback(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(DeepSpeedConfigError, match="must hold a JSON object, got list"):
        DeepSpeedCallback(listed)
    with pytest.raises(TypeError, match="config must be the path of a DeepSpeed JSON file, a dict, or None"):
        DeepSpeedCallback(42)


def test_missing_deepspeed_is_a_clear_error(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match=r"needs deepspeed, which is not installed.*DS_BUILD_OPS=0 pip install"):
        DeepSpeedCallback()


def test_plugin_fills_open_values_from_accelerate_launch(monkeypatch):
    plugin = DeepSpeedCallback().create_plugin()
    assert isinstance(plugin, DeepSpeedPlugin)
    assert plugin.zero_stage == 2  # Accelerate's default
    assert plugin.deepspeed_config["zero_optimization"]["offload_optimizer"]["device"] == "none"
    # Placeholders until train() sizes the engine; Accelerate computes the global batch.
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 1
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == 1
    assert plugin.deepspeed_config["train_batch_size"] == "auto"

    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")  # what `accelerate launch --zero_stage 3` sets
    plugin = DeepSpeedCallback().create_plugin()
    assert plugin.zero_stage == 3
    # save_checkpoint gathers ZeRO-3 shards unless told otherwise.
    assert plugin.deepspeed_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    plugin = DeepSpeedCallback(zero3_save_16bit_model=False).create_plugin()
    assert plugin.deepspeed_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is False

    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")
    with pytest.raises(DeepSpeedConfigError, match="offloading parameters .* needs ZeRO stage 3, but the stage is 1"):
        DeepSpeedCallback(offload_param_device="cpu").create_plugin()


def test_accelerator_arguments(monkeypatch):
    callback = DeepSpeedCallback(zero_stage=2)
    kwargs = {"cpu": True}  # what pa-core passes on a CPU machine started with several processes
    callback.pa_configure_accelerator(trainer=None, accelerator_kwargs=kwargs)
    assert "cpu" not in kwargs  # Accelerator(cpu=True) would silently run without DeepSpeed
    assert isinstance(kwargs["deepspeed_plugin"], DeepSpeedPlugin)
    assert kwargs["deepspeed_plugin"].zero_stage == 2
    (handler,) = kwargs["kwargs_handlers"]
    assert isinstance(handler, InitProcessGroupKwargs) and handler.backend == "gloo"  # this machine has no GPU

    import deepspeed.ops

    assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False  # no two-minute compile on CPU

    own = InitProcessGroupKwargs(backend="gloo", timeout=None)
    kwargs = {"kwargs_handlers": [own]}
    callback.pa_configure_accelerator(trainer=None, accelerator_kwargs=kwargs)
    assert kwargs["kwargs_handlers"] == [own]

    with pytest.raises(DeepSpeedConfigError, match="already has a fsdp_plugin"):
        callback.pa_configure_accelerator(trainer=None, accelerator_kwargs={"fsdp_plugin": object()})


def test_unlaunched_process_gets_a_group_of_one(monkeypatch):
    names = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    for name in names:  # set, then removed: monkeypatch restores each one after the test
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="WORLD_SIZE is 2 but LOCAL_RANK is not set"):
        DeepSpeedCallback().pa_configure_accelerator(trainer=None, accelerator_kwargs={})

    monkeypatch.delenv("WORLD_SIZE")
    DeepSpeedCallback().pa_configure_accelerator(trainer=None, accelerator_kwargs={})
    assert {name: os.environ[name] for name in names[:-1]} == {
        "LOCAL_RANK": "0",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
    }
    assert 0 < int(os.environ["MASTER_PORT"]) < 65536  # a free port


def test_input_caster_casts_only_wide_floats():
    caster = _InputCaster(torch.bfloat16)
    Pair = namedtuple("Pair", "a b")
    args, kwargs = caster(
        torch.nn.Identity(),
        (torch.ones(2), torch.ones(2, dtype=torch.float64), torch.arange(3), [torch.ones(1)], Pair(1, 2)),
        {"mask": torch.ones(2, dtype=torch.float16), "extra": {"x": torch.ones(1)}},
    )
    assert [a.dtype for a in args[:3]] == [torch.bfloat16, torch.bfloat16, torch.int64]
    assert args[3][0].dtype == torch.bfloat16
    assert args[4] == Pair(1, 2)
    assert kwargs["mask"].dtype == torch.float16  # already 16-bit: left alone
    assert kwargs["extra"]["x"].dtype == torch.bfloat16

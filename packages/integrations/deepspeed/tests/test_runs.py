"""Real DeepSpeed runs on two CPU processes, compared with a plain (DDP) run of the same model.

Every run trains the same two-layer classifier with AdamW on the same data: 3 epochs, 4 samples
per process per batch, 2 gradient-accumulation steps. In fp32, DeepSpeed at every ZeRO stage
computes what DDP computes, so loss curves must agree to RTOL and weights to ATOL; bf16 runs to
BF16_LOSS_TOL. Each test starts its own processes (about 10-15 s each on a 2-core machine).
"""

from __future__ import annotations

import pytest
import torch

from pa_core import CheckpointError, Trainer
from pa_core.testing import make_classification_dataset, tiny_classifier

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

RTOL = 1e-5  # epoch losses, fp32 DeepSpeed vs DDP
ATOL = 1e-5  # weights, fp32 DeepSpeed vs DDP
BF16_LOSS_TOL = 0.02  # epoch losses, bf16 DeepSpeed vs fp32 DDP (absolute)
# accelerate launch alone: DeepSpeed clips the gradient norm at 1.0 (which no launch flag turns
# off), a different algorithm from the unclipped plain run: train losses agree only this well (absolute).
LAUNCH_LOSS_TOL = 0.05


def load_weights(path):
    """The ``model_state_dict`` of a file written by ``Trainer.save_checkpoint``, loaded safely."""
    return torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]


def assert_curves_close(history, expected, rtol=RTOL, atol=0.0):
    for metric, values in expected.items():
        assert history[metric] == pytest.approx(values, rel=rtol, abs=atol), metric


def assert_weights_close(weights, expected, atol=ATOL):
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(weights[name].float(), value, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_run_converges_like_ddp_saves_resumes_and_exports(stage, reference, tmp_path, run_script):
    expected, reference_dir = reference
    results = run_script(tmp_path, "zero", "--stage", str(stage))
    name = f"zero{stage}"

    # The engine is sized from train()'s arguments, shards what the stage shards, and clips nothing.
    engine = results["engine"]
    assert engine["engine"] == "DeepSpeedEngine"
    assert engine["zero_stage"] == stage
    assert engine["gradient_accumulation_steps"] == 2
    assert engine["train_micro_batch_size_per_gpu"] == 4
    assert engine["train_batch_size"] == 4 * 2 * 2
    assert engine["gradient_clipping"] == 0.0
    assert engine["base_optimizer"] == "AdamW"  # the Trainer's own optimizer, inside the ZeRO optimizer
    if stage == 3:
        assert engine["local_numel"] == engine["full_numel"] // 2  # each process holds half of every parameter
    else:
        assert engine["local_numel"] == engine["full_numel"]

    # Same loss curves and weights as the plain run.
    assert_curves_close(results["history"], expected["history"])
    reference_weights = load_weights(reference_dir / "reference.pt")
    weights = load_weights(tmp_path / f"{name}.pt")
    assert_weights_close(weights, reference_weights)

    # The exported file is one ordinary state dict: it loads into a plain model, with exactly the
    # weights DeepSpeed's own tool (zero_to_fp32) recovers from the engine's sharded checkpoint.
    plain = tiny_classifier(hidden=16)
    plain.load_state_dict(weights)
    assert set(torch.load(tmp_path / f"{name}.pt", weights_only=True)) == {"model_state_dict"}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(tmp_path / f"{name}-final-state"), tag="pytorch_model")
    assert_weights_close(plain.state_dict(), consolidated, atol=0)
    assert_weights_close(weights, consolidated, atol=0)
    # A checkpoint saved inside the run (end of epoch 1) is gathered the same way.
    tiny_classifier(hidden=16).load_state_dict(load_weights(tmp_path / f"{name}-epoch1.pt"))

    # The training state holds DeepSpeed's engine checkpoint, one optimizer shard per process.
    files = results["state_files"]
    assert "pa_trainer_state.pt" in files
    assert sum(f.startswith("pytorch_model/") and f.endswith("optim_states.pt") for f in files) == 2

    # Interrupted after update 7 (mid-epoch 2) and resumed by a new Trainer: the same run.
    assert_weights_close(load_weights(tmp_path / f"{name}-resumed.pt"), weights, atol=1e-6)
    resumed = results["resumed_history"]
    assert resumed["eval_loss_epoch"] == pytest.approx(results["history"]["eval_loss_epoch"], rel=1e-6)
    # Epoch 2 is left out: its train loss mixes batches from before and after the interruption,
    # and pa-core restores that partial sum from process 0 only (a pa-core matter, also under DDP).
    for epoch in (0, 2):
        assert resumed["train_loss_epoch"][epoch] == pytest.approx(results["history"]["train_loss_epoch"][epoch])

    # The engine's checkpoint holds one shard per process: resuming it on another number of
    # processes is refused before anything is loaded, saying what to do.
    single = Trainer(plain, torch.nn.CrossEntropyLoss(), torch.optim.AdamW(plain.parameters()), callbacks=[])
    with pytest.raises(CheckpointError, match="saved by DeepSpeed ZeRO on 2 processes.*zero_to_fp32"):
        single.train(make_classification_dataset(num_samples=8), num_epochs=1, resume_from=tmp_path / f"{name}-state")

    # evaluate() after training sees the trained weights.
    assert results["evaluation_loss"] == pytest.approx(results["history"]["eval_loss_epoch"][-1], rel=1e-6)


def test_other_stages_offload_and_bf16(reference, tmp_path, run_script):
    expected, reference_dir = reference
    results = run_script(tmp_path, "variants")
    reference_weights = load_weights(reference_dir / "reference.pt")

    for name in ("stage0", "stage1", "stage2-offload", "stage3-offload"):
        assert results[name]["engine"]["engine"] == "DeepSpeedEngine", name
        assert results[name]["engine"]["base_optimizer"] == "AdamW", name  # offload keeps the Trainer's optimizer
        assert_curves_close(results[name]["history"], expected["history"])
        assert_weights_close(load_weights(tmp_path / f"{name}.pt"), reference_weights)
    assert results["stage3-offload"]["engine"]["local_numel"] < results["stage3-offload"]["engine"]["full_numel"]

    bf16 = results["stage2-bf16"]
    assert bf16["engine"]["param_dtype"] == "torch.bfloat16"  # float32 inputs were cast for the 16-bit model
    assert_curves_close(bf16["history"], expected["history"], rtol=0, atol=BF16_LOSS_TOL)
    tiny_classifier(hidden=16).load_state_dict(load_weights(tmp_path / "stage2-bf16.pt"))


def test_contradictions_with_train_arguments_are_refused(tmp_path, run_script):
    # One process without a launcher: the callback gives it a process group of one.
    results = run_script(tmp_path, "errors", launcher="python")
    assert "train_micro_batch_size_per_gpu=16" in results["micro_batch"]
    assert "train(per_device_batch_size=...)" in results["micro_batch"]
    assert "gradient_accumulation_steps=4" in results["accumulation"]
    assert "uses 2 (train(gradient_accumulation_steps=...))" in results["accumulation"]
    assert "train_batch_size=64" in results["train_batch_size"]
    assert "gradient_clip_value=0.5" in results["clip_value"]
    assert "DeepSpeedCallback(gradient_clipping=<max norm>)" in results["clip_value"]
    if results["fp16_supported"]:
        assert results["fp16_on_cpu"] is None  # this CPU runs fp16: DeepSpeed's fp16 mode is not refused
    else:
        assert "fp16" in results["fp16_on_cpu"] and "mixed_precision='bf16'" in results["fp16_on_cpu"]
    # A config file whose batch entries agree with train(), and the catalogue name, both train.
    assert results["catalogue_engine"] == "DeepSpeedEngine"
    for key in ("config_file_history", "catalogue_history"):
        losses = results[key]["train_loss_epoch"]
        assert len(losses) == 1 and 0 < losses[0] < 0.7, key


def test_accelerate_launch_alone_runs_deepspeed(reference, tmp_path, run_script):
    """`accelerate launch --use_deepspeed --zero_stage 2 --gradient_accumulation_steps 2`, no callback."""
    expected, _ = reference
    results = run_script(tmp_path, "launch", launcher="accelerate")
    engine = results["engine"]
    assert engine["engine"] == "DeepSpeedEngine"
    assert engine["zero_stage"] == 2
    assert engine["gradient_accumulation_steps"] == 2
    assert engine["gradient_clipping"] == 1.0  # Accelerate's and DeepSpeed's default when nothing says otherwise
    train_losses = results["history"]["train_loss_epoch"]
    assert train_losses == pytest.approx(expected["history"]["train_loss_epoch"], abs=LAUNCH_LOSS_TOL)
    assert train_losses == sorted(train_losses, reverse=True) and train_losses[-1] < 0.1
    assert max(results["history"]["eval_loss_epoch"]) < 0.5  # (the unclipped run's are 0.15-0.25)

"""Every example runs in its fast mode and does what its docstring says; digits meets its target."""

import importlib.util
import math
import sys
import time
from pathlib import Path

import pytest
import torch

from pa_examples.transformer import LanguageModelTrainer, TinyGPT


def test_digits_fast_mode_prints_the_test_accuracy(run_python):
    out = run_python("-m", "pa_examples.cli", "run", "digits", "--fast").stdout
    accuracy = float(out.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.85
    # The throughput monitor's figures are part of every epoch's line.
    assert out.count("samples_per_second_epoch: ") == 3 and "peak_memory_mib: " in out


@pytest.mark.slow
def test_digits_reaches_095_test_accuracy_in_under_a_minute(run_example, capsys):
    started = time.perf_counter()
    accuracy, out = run_example("digits")
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\ndigits (30 epochs): test accuracy {accuracy:.4f} in {elapsed:.1f} s (wall time of main())")
    assert "epoch 30/30" in out
    assert accuracy >= 0.95
    assert elapsed < 60


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_digits_mnist_variant_says_what_to_install(run_example):
    with pytest.raises(SystemExit, match="--dataset mnist needs torchvision: pip install torchvision"):
        run_example("digits", "--dataset", "mnist")


def test_metrics_records_torchmetrics_values_for_eval_and_test(run_example):
    results, out = run_example("metrics", "--fast")
    assert "eval_accuracy:" in out and "train_f1:" in out and "evaluation_accuracy:" in out
    assert 0.85 < results["test_accuracy"] <= 1 and 0.85 < results["test_f1"] <= 1


def test_custom_callback_fires_and_answers_a_custom_event(run_example):
    accuracy, out = run_example("custom-callback", "--fast", "--patience", "1", "--min-improvement", "10")
    # Every epoch after the first is a "plateau" with an improvement threshold of 10.
    assert "on_plateau at epoch 2: learning rate halved to 0.005" in out
    assert "on_plateau at epoch 3: learning rate halved to 0.0025" in out
    assert "learning rate halved 2 times" in out
    assert "SamplesSeen: this process trained on 3771 samples" in out  # 1,257 training images x 3 epochs
    assert "lr: 0.005 " in out  # epoch 3's rate, recorded in the run history and printed by the default logger
    assert accuracy > 0.85


def test_trainer_subclass_computes_accuracy_over_every_sample(run_example):
    accuracy, out = run_example("trainer-metrics", "--fast")
    assert out.count("eval_accuracy over 270 samples") == 2
    assert f"evaluation_accuracy over 270 samples: {accuracy:.4f}" in out
    assert accuracy > 0.85


def test_unfreezing_trains_the_head_then_the_unfrozen_body(run_example):
    results, out = run_example("unfreezing", "--fast")
    assert "709 of 17,285 parameters trainable" in out  # the new head, and the batch norms left trainable
    assert "8,965 of 17,285 parameters trainable" in out  # ... and the body, added to the optimizer
    assert len(results["eval_losses"]) == 2  # one epoch per stage, in one run history
    assert 0 < results["head_only_accuracy"] <= 1 and 0 < results["unfrozen_accuracy"] <= 1


def test_ema_saves_and_reloads_the_best_average(run_example, tmp_path):
    results, out = run_example("ema", "--fast", "--output-dir", "ema")
    assert (tmp_path / "ema" / "ema_model.pt").is_file()
    assert "ema_model_eval_loss_epoch:" in out
    assert results["ema_best_epoch"] in (1, 2)
    assert results["ema_accuracy"] > 0.5 and results["model_accuracy"] > 0.85


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "onecycle"])
def test_schedules_are_sized_from_placeholders(run_example, schedule):
    lrs, out = run_example("schedule", "--fast", "--schedule", schedule, "--gradient-accumulation-steps", "2")
    assert len(lrs) == 2 * 20  # 2 epochs of 40 batches, one update every 2 batches
    peak = max(lrs)
    assert 0.009 < peak <= 0.01
    assert lrs[0] < peak and lrs[-1] < 0.1 * peak  # warms up, and has decayed by the end of the run
    assert f"{schedule} schedule over 40 optimizer updates" in out


def test_early_stopping_stops_and_the_best_model_is_kept(run_example, tmp_path):
    results, out = run_example("early-stopping", "--fast", "--patience", "1", "--threshold", "10", "--output-dir", "es")
    assert results["epochs_run"] == 2 and results["best_epoch"] in (1, 2)
    assert "Stopping training due to no improvement in eval_loss_epoch after 1 epochs" in out
    assert (tmp_path / "es" / "best_model.pt").is_file()
    assert f"from epoch {results['best_epoch']}" in out  # SaveBestModelCallback loaded it back


def test_resume_continues_an_interrupted_run_to_the_same_weights(run_example, tmp_path):
    results, out = run_example("resume", "--fast", "--compare", "--output-dir", "states")
    assert "*** training interrupted after epoch 1 ***" in out
    assert results["resumed_from"] == Path("states", "epoch_1")
    assert len(results["eval_losses"]) == 2
    assert results["same_weights_as_uninterrupted"] is True


def test_resume_from_a_given_state(run_example, tmp_path):
    run_example("resume", "--fast", "--output-dir", "states")
    results, out = run_example(
        "resume", "--fast", "--output-dir", "again", "--resume-from", "states/epoch_1", "--interrupt-after-epoch", "0"
    )
    assert "Resuming from states/epoch_1" in out
    assert len(results["eval_losses"]) == 2 and (tmp_path / "again" / "epoch_2").is_dir()


def test_transformer_trains_with_dict_batches_and_writes_from_the_prompt(run_example):
    results, out = run_example("transformer", "--fast", "--prompt", "The sea")
    assert math.isfinite(results["eval_loss"]) and results["eval_loss"] < math.log(45) + 0.5
    assert results["sample"].startswith("The sea") and len(results["sample"]) == len("The sea") + 40
    assert "17,741 parameters, 45 characters" in out


def test_transformer_trains_on_a_text_file(run_example, tmp_path):
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    results, out = run_example("transformer", "--fast", "--text-file", "book.txt", "--prompt", "the ")
    assert "characters" in out and results["sample"].startswith("the ")


def test_transformer_trainer_takes_the_loss_the_model_returns():
    model = TinyGPT(vocab_size=5, block_size=8, d_model=16, n_heads=2, n_layers=1).eval()
    trainer = LanguageModelTrainer(model, loss_func=None, optimizer=None, callbacks=())
    batch = {"input_ids": torch.randint(5, (3, 8)), "labels": torch.randint(5, (3, 8))}
    output = trainer.calculate_train_batch_loss(batch)
    assert output["batch_size"] == 3 and output["model_outputs"].shape == (3, 8, 5)
    assert torch.allclose(output["loss"], model(**batch)["loss"])


def test_wandb_runs_offline_by_default_and_writes_the_run(run_python, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = run_python(
        "-m", "pa_examples.cli", "run", "wandb", "--fast", "--dir", str(tmp_path / "wb"), env={"WANDB_SILENT": "true"}
    ).stdout
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert f"W&B run written to {runs[0]}" in out
    assert (tmp_path / "wb" / "best_model.pt").is_file()


def test_tensorboard_writes_a_run_and_prints_how_to_open_it(run_example, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, out = run_example("tensorboard", "--fast")
    assert run_dir.parent == tmp_path / "runs"
    assert f"tensorboard --logdir {run_dir.parent}" in out
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train_loss_epoch", "eval_loss_epoch", "train_loss_step", "lr", "samples_per_second"} <= tags
    assert [event.step for event in accumulator.Scalars("train_loss_epoch")] == [40, 80]  # 40 updates per epoch


def test_streaming_counts_every_sample_of_each_epoch_on_one_process(run_example):
    results, out = run_example("streaming", "--fast")
    assert "epoch 1: trained on 4000 samples, evaluated 1000" in out
    assert "epoch 2: trained on 4000 samples, evaluated 1000" in out
    assert "sample counts match the data: 4000 trained on and 1000 evaluated in each of 2 epochs" in out
    assert results["train_samples"] == [4000, 4000] and results["eval_samples"] == [1000, 1000]
    assert results["eval_loss"] < 0.8  # learned: chance is log(3) = 1.1


def test_streaming_says_what_to_install_without_datasets(run_example, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails as if it were not installed
    with pytest.raises(SystemExit, match=r'needs Hugging Face datasets: pip install "pa-examples\[streaming\]"'):
        run_example("streaming", "--fast")

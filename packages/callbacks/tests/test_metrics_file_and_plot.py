"""MetricsFileCallback writes JSON lines; ``pa plot`` draws them."""

import json
import sys

import pytest

from pa_callbacks import MetricsFileCallback, StepBasedEvaluationCallback
from pa_callbacks.plot import main as plot_main
from pa_core import hookimpl
from pa_core.cli import main as pa_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class BatchLosses:
    def __init__(self):
        self.losses = []

    @hookimpl
    def on_train_step_end(self, batch_output):
        self.losses.append(batch_output["loss"].item())  # a test may read every step


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def metrics_file(make_trainer, train_data, eval_data, tmp_path):
    """A metrics file from 2 epochs of 5 updates, the loss written every 2 updates, with
    intermediate evaluations after update 3 of each epoch, then an evaluate() run."""
    path = tmp_path / "logs" / "metrics.jsonl"
    losses = BatchLosses()
    trainer = make_trainer(
        callbacks=[losses, StepBasedEvaluationCallback(3), MetricsFileCallback(path, log_train_loss_every_n_steps=2)]
    )
    trainer.train(train_data, num_epochs=2, eval_dataset=eval_data, per_device_batch_size=8)
    history = {
        name: list(trainer.run_history.get_metric_values(name)) for name in trainer.run_history.get_metric_names()
    }
    trainer.evaluate(eval_data)
    return path, history, losses.losses, trainer.run_history.get_latest_metric("evaluation_loss")


def test_each_epoch_and_every_n_steps_get_a_line(metrics_file):
    path, history, batch_losses, evaluation_loss = metrics_file
    lines = read_lines(path)
    assert [(line["kind"], line["epoch"], line["step"]) for line in lines] == [
        ("step", 1, 2),
        ("intermediate_eval", 1, 3),
        ("step", 1, 4),
        ("epoch", 1, 5),
        ("step", 2, 6),
        ("intermediate_eval", 2, 8),
        ("step", 2, 8),
        ("step", 2, 10),
        ("epoch", 2, 10),
        ("evaluation", 1, 10),
    ]
    epochs = [line for line in lines if line["kind"] == "epoch"]
    for i, line in enumerate(epochs):
        assert line.keys() == {"kind", "epoch", "step", "elapsed", "train_loss_epoch", "eval_loss_epoch"}
        assert line["train_loss_epoch"] == pytest.approx(history["train_loss_epoch"][i])
        assert line["eval_loss_epoch"] == pytest.approx(history["eval_loss_epoch"][i])
    # The loss of the updates since the previous line of the epoch (batches of 8: all the same size).
    steps = [line["train_loss"] for line in lines if line["kind"] == "step"]
    b = batch_losses
    assert steps == pytest.approx([(b[0] + b[1]) / 2, (b[2] + b[3]) / 2, b[5], (b[6] + b[7]) / 2, (b[8] + b[9]) / 2])
    assert all("intermediate_eval_loss" in line for line in lines if line["kind"] == "intermediate_eval")
    assert lines[-1]["evaluation_loss"] == pytest.approx(evaluation_loss)
    elapsed = [line["elapsed"] for line in lines[:-1]]
    assert elapsed == sorted(elapsed)


def test_pa_plot_draws_the_file(metrics_file, tmp_path, capsys):
    path = metrics_file[0]
    assert pa_main(["plot", str(path), "-o", str(tmp_path / "curves.png")]) == 0  # through the pa command
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    out = capsys.readouterr().out
    assert "curves.png" in out and "train_loss" in out and "eval_loss_epoch" in out

    assert plot_main([str(path), "-o", str(tmp_path / "some.png"), "--metrics", "train_loss", "--log-y"]) == 0
    assert (tmp_path / "some.png").read_bytes().startswith(PNG_SIGNATURE)


def test_pa_plot_explains_what_is_wrong(metrics_file, tmp_path, capsys):
    path = metrics_file[0]
    assert plot_main([str(path), "--metrics", "accuracy"]) == 2
    assert "no values for accuracy" in capsys.readouterr().err
    assert plot_main([str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"step": 1, "loss": 1.0}\nnot json\n{"step": 2, "loss": 0.5}\n')
    assert plot_main([str(broken)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_a_line_cut_short_at_the_end_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train_loss": 1.0}\n{"step": 2, "train_loss": 0.5}\n{"step": 3, "tra')
    assert plot_main([str(path), "-o", str(tmp_path / "c.png")]) == 0


def test_without_matplotlib_pa_plot_says_what_to_install(metrics_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert plot_main([str(metrics_file[0]), "-o", str(tmp_path / "c.png")]) == 1
    assert 'pip install "pa-callbacks[plot]"' in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()

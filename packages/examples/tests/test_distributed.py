"""The examples run unchanged on two processes, launched with torchrun (gloo on the CPU)."""

import re

import pytest

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def torchrun(run_python, tmp_path, monkeypatch):
    """``torchrun("pa_examples.digits", "--fast")``: run a module on two processes, from a temporary
    folder, and return its standard output."""
    monkeypatch.chdir(tmp_path)

    def run(module: str, *args: str) -> str:
        # --standalone: torchrun picks a free port itself (no race with other tests for one).
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        # torchrun leaves torchelastic_* folders in the temporary directory: keep them in tmp_path.
        env = {"TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
        return run_python(*command, "-m", module, *args, env=env).stdout

    return run


def test_digits_on_two_processes(torchrun):
    out = torchrun("pa_examples.digits", "--fast")
    assert out.count("test accuracy:") == 1  # printed by the main process only
    assert float(re.search(r"test accuracy: ([0-9.]+)", out).group(1)) > 0.8


def test_transformer_on_two_processes(torchrun):
    out = torchrun("pa_examples.transformer", "--fast")
    assert out.count("eval loss") == 1
    assert "epoch 1/1" in out


def test_trainer_metrics_gather_every_sample_once_on_two_processes(torchrun):
    out = torchrun("pa_examples.trainer_metrics", "--fast")
    # 270 eval and 270 test images, split unevenly between the processes: padded, gathered, unpadded.
    assert out.count("eval_accuracy over 270 samples") == 2
    assert "evaluation_accuracy over 270 samples" in out


def test_streaming_counts_are_summed_over_two_processes(torchrun):
    # 1,025 and 65 rows in 4 shards of unequal size: one process has a batch more than the other in
    # every epoch, and steps with an empty batch while the other finishes.
    out = torchrun("pa_examples.streaming", "--fast", "--num-train", "1025", "--num-eval", "65", "--batch-size", "16")
    assert out.count("epoch 1: trained on 1025 samples, evaluated 65") == 1  # printed by the main process only
    assert out.count("epoch 2: trained on 1025 samples, evaluated 65") == 1
    assert "in each of 2 epochs, summed over 2 processes" in out

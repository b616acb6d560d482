"""The public plugin API is enough: a third-party plugin (tests/fixtures/pa-fixture-plugin, really
pip-installed) re-implements step-based evaluation and an EMA evaluation with public names only,
and gives the same numbers as pa-callbacks' built-ins, on one process and on two."""

import json
import os

import pytest
import torch

from pa_callbacks import ModelEmaCallback, StepBasedEvaluationCallback
from pa_core import Trainer, hookimpl
from pa_core.testing import make_classification_dataset, run_on_processes, tiny_classifier

pytestmark = pytest.mark.usefixtures("fixture_plugins_installed")


class IntermediateLosses:
    """The intermediate evaluation losses, read when each intermediate evaluation ends."""

    def __init__(self):
        self.losses = []

    @hookimpl
    def on_eval_epoch_end(self, trainer, is_intermediate):
        if is_intermediate:
            self.losses.append(trainer.run_history.get_latest_metric("intermediate_eval_loss"))


def _run(callbacks, ema_metric, out_path=None):
    model = tiny_classifier()
    recorder = IntermediateLosses()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=[*callbacks, recorder])
    trainer.train(
        make_classification_dataset(num_samples=20),
        num_epochs=2,
        eval_dataset=make_classification_dataset(num_samples=13, seed=1),
        per_device_batch_size=4,
    )
    result = {
        "intermediate": recorder.losses,
        "ema": trainer.run_history.get_metric_values(ema_metric),
        "eval": trainer.run_history.get_metric_values("eval_loss_epoch"),
        "names": sorted(trainer.run_history.get_metric_names()),
    }
    if out_path is not None and trainer.is_world_process_zero:
        with open(out_path, "w") as handle:
            json.dump(result, handle)
    return result


def _built_ins(tmp_dir, out_path=None):
    ema = ModelEmaCallback(decay=0.5, save_path=os.path.join(tmp_dir, "ema.pt"))
    return _run([StepBasedEvaluationCallback(eval_every_n_steps=2), ema], "ema_model_eval_loss_epoch", out_path)


def _third_party(out_path=None):
    names = ["fixture-every-n-updates-evaluation", "fixture-ema-evaluation"]
    return _run(names, "fixture_ema_eval_loss_epoch", out_path)


def _assert_same(built_in, third_party):
    assert len(built_in["intermediate"]) == 4  # 5 updates per epoch: after updates 2 and 4 of each
    assert third_party["intermediate"] == pytest.approx(built_in["intermediate"], rel=1e-6)
    assert len(built_in["ema"]) == 2
    assert third_party["ema"] == pytest.approx(built_in["ema"], rel=1e-6)
    assert third_party["eval"] == pytest.approx(built_in["eval"], rel=1e-6)
    assert "intermediate_eval_loss" not in third_party["names"]


def test_a_third_party_plugin_reproduces_the_built_ins_on_one_process(tmp_path):
    _assert_same(_built_ins(str(tmp_path)), _third_party())


def _both_on_processes(out_dir):
    _built_ins(out_dir, os.path.join(out_dir, "built_in.json"))
    _third_party(os.path.join(out_dir, "third_party.json"))


@pytest.mark.multiprocess
@pytest.mark.skipif(torch.cuda.is_available(), reason="forks the test process, which CUDA does not survive")
def test_a_third_party_plugin_reproduces_the_built_ins_on_two_processes(tmp_path):
    run_on_processes(_both_on_processes, str(tmp_path), num_processes=2)
    built_in = json.loads((tmp_path / "built_in.json").read_text())
    third_party = json.loads((tmp_path / "third_party.json").read_text())
    assert len(third_party["intermediate"]) == 2  # 3 updates per epoch on each process: after update 2
    assert third_party["intermediate"] == pytest.approx(built_in["intermediate"], rel=1e-6)
    assert third_party["ema"] == pytest.approx(built_in["ema"], rel=1e-6)

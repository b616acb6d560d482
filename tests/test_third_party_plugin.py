"""A third-party plugin distribution, pip-installed from tests/fixtures, found through its entry points."""

import os
import subprocess
import sys

import pytest
import torch

from pa_core import Trainer
from pa_core.plugins import PluginError
from pa_core.testing import make_classification_dataset, tiny_classifier

pytestmark = pytest.mark.usefixtures("fixture_plugins_installed")


def _train(callbacks=()):
    model = tiny_classifier()
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=list(callbacks)
    )
    trainer.train(make_classification_dataset(num_samples=16), num_epochs=2)
    return trainer


def test_installed_plugin_is_autoloaded_and_its_hooks_fire():
    trainer = _train()
    assert trainer.run_history.get_metric_values("fixture_plugin_epoch") == [1, 2]


def test_autoload_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "fixture_plugin_epoch" not in _train().run_history.get_metric_names()


def test_named_plugins_can_be_blocked(monkeypatch):
    monkeypatch.setenv("PA_DISABLE_PLUGINS", "something-else, fixture-plugin")
    assert "fixture_plugin_epoch" not in _train().run_history.get_metric_names()


def test_catalogue_callback_is_used_only_when_named():
    assert "fixture_callback_ran" not in _train().run_history.get_metric_names()
    assert _train(callbacks=["fixture-callback"]).run_history.get_metric_values("fixture_callback_ran") == [1]


def test_broken_plugin_fails_loudly_with_its_name_and_distribution(monkeypatch):
    monkeypatch.setenv("PA_FIXTURE_BREAK", "1")
    monkeypatch.delitem(sys.modules, "pa_fixture_plugin.fragile", raising=False)  # import it afresh
    with pytest.raises(PluginError) as info:
        _train()
    message = str(info.value)
    assert "'fixture-fragile'" in message
    assert "pa-fixture-plugin 1.2.3" in message
    assert "deliberately broken" in message
    assert "PA_DISABLE_PLUGINS=fixture-fragile" in message
    monkeypatch.setenv("PA_DISABLE_PLUGINS", "fixture-fragile")
    assert _train().run_history.get_metric_values("fixture_plugin_epoch") == [1, 2]


def test_a_name_claimed_by_two_distributions_names_both():
    with pytest.raises(PluginError) as info:
        _train(callbacks=["fixture-claimed-twice"])
    assert "pa-fixture-plugin 1.2.3" in str(info.value) and "pa-fixture-rival 0.0.1" in str(info.value)


def test_exception_in_a_plugin_names_it_and_the_hook(monkeypatch):
    from pa_fixture_plugin import FixturePlugin

    def explode(self, trainer):
        raise RuntimeError("plugin bug")

    monkeypatch.setattr(FixturePlugin, "on_train_epoch_end", explode)
    # The replaced method is not marked as a hook, so mark it: pluggy looks for the marker.
    from pa_core import hookimpl

    hookimpl(explode)
    with pytest.raises(RuntimeError, match="plugin bug") as info:
        _train()
    assert any(
        "FixturePlugin" in n and "pa-fixture-plugin" in n and "on_train_epoch_end" in n for n in info.value.__notes__
    )


def test_pa_plugins_command_lists_the_plugin_with_its_hooks():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "pa_core.cli", "plugins"], capture_output=True, text=True, env=env)
    assert "fixture-plugin" in result.stdout
    assert "pa-fixture-plugin 1.2.3" in result.stdout
    assert "hooks: on_train_epoch_end" in result.stdout
    # The rival claim is reported rather than hidden.
    assert "Two installed distributions claim the name 'fixture-claimed-twice'" in result.stdout
    assert result.returncode == 1

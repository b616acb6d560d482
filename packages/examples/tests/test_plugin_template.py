"""The plugin template is a working distribution: its copy imports, its tests pass, and once built
and installed pa finds its callback and its example."""

import importlib.util
import re
import sys

import pytest

from pa_core.cli import list_plugins
from pa_examples import cli
from pa_examples.plugin_template import copy_template, template_files

EXPECTED_FILES = ["README.md", "pyproject.toml", "src/pa_epoch_timer/__init__.py", "tests/test_epoch_timer.py"]


def test_without_options_it_shows_the_template(run_example):
    destination, out = run_example("plugin-template")
    assert destination is None
    assert "pa-epoch-timer plugin template is in" in out
    assert all(f"  {name}\n" in out for name in EXPECTED_FILES)


def test_to_writes_a_complete_project(run_example, tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    destination, out = run_example("plugin-template", "--to", "my-plugin")
    assert destination.resolve() == (tmp_path / "my-plugin").resolve()
    written = sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file())
    assert written == EXPECTED_FILES
    assert "pip install -e my-plugin" in out
    pyproject = tomllib.loads((destination / "pyproject.toml").read_text())
    entry_points = pyproject["project"]["entry-points"]
    assert entry_points["pa.callbacks"] == {"epoch-timer": "pa_epoch_timer:EpochTimer"}
    assert entry_points["pa.examples"] == {"epoch-timer-demo": "pa_epoch_timer:demo"}
    assert pyproject["project"]["dependencies"] == ["pa-core>=0.1,<0.2", "torch>=2.2"]


def test_to_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("mine")
    with pytest.raises(SystemExit, match="already exists and is not empty"):
        copy_template(tmp_path / "taken")


def test_stored_files_are_inert_until_copied():
    # Stored with a .tmpl suffix: no pyproject.toml or test module that tools would pick up inside pa-examples.
    from pa_examples.plugin_template import template_root

    stored = [item.name for item in template_root().iterdir()]
    assert "pyproject.toml" not in stored and "pyproject.toml.tmpl" in stored
    assert sorted(template_files()) == EXPECTED_FILES


def test_the_copied_plugin_works_and_its_own_tests_pass(tmp_path, run_python, monkeypatch):
    destination = tmp_path / "plugin"
    copy_template(destination)
    result = run_python(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests",
        cwd=destination,
        env={"PYTHONPATH": str(destination / "src")},
    )
    assert "1 passed, 1 skipped" in result.stdout  # the catalogue test needs the package installed

    monkeypatch.syspath_prepend(str(destination / "src"))
    from pa_epoch_timer import demo

    times = demo(["--fast"])
    assert len(times) == 1 and times[0] > 0
    sys.modules.pop("pa_epoch_timer", None)


@pytest.mark.skipif(importlib.util.find_spec("hatchling") is None, reason="building the plugin needs hatchling")
def test_the_built_plugin_is_found_by_pa_and_pa_examples(tmp_path, run_python, monkeypatch, capsys):
    destination = tmp_path / "plugin"
    copy_template(destination)
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    run_python("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(destination))
    run_python("-m", "pip", "install", "--no-deps", "-q", "--target", str(site), *map(str, wheels.glob("*.whl")))

    # As a user would: `pa-examples run` finds the example of the installed distribution.
    ran = run_python("-m", "pa_examples.cli", "run", "epoch-timer-demo", "--fast", env={"PYTHONPATH": str(site)})
    assert "seconds per epoch:" in ran.stdout
    # Installed, the template's catalogue test runs too.
    tested = run_python(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=destination, env={"PYTHONPATH": str(site)}
    )
    assert "2 passed" in tested.stdout

    # Entry points are read from sys.path when asked for: the listings see the new distribution.
    monkeypatch.syspath_prepend(str(site))
    rows = {(row["group"], row["name"]): row for row in list_plugins()}
    assert rows["pa.callbacks", "epoch-timer"]["distribution"] == "pa-epoch-timer"
    assert rows["pa.callbacks", "epoch-timer"]["hooks"] == [
        "on_train_epoch_start",
        "on_train_step_end",
        "on_training_run_epoch_end",
    ]
    assert cli.main(["list"]) == 0
    assert re.search(r"^epoch-timer-demo +pa-epoch-timer: a pa callback that records", capsys.readouterr().out, re.M)

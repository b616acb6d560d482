"""The pa-examples command: listing, running, per-example help, and examples from other distributions."""

import re
import textwrap

import pytest

from pa_core import plugins
from pa_examples import cli

EXAMPLES = {
    "digits": "pa_examples.digits",
    "metrics": "pa_examples.metrics",
    "custom-callback": "pa_examples.custom_callback",
    "trainer-metrics": "pa_examples.trainer_metrics",
    "unfreezing": "pa_examples.unfreezing",
    "ema": "pa_examples.ema",
    "schedule": "pa_examples.schedule",
    "early-stopping": "pa_examples.early_stopping",
    "resume": "pa_examples.resume",
    "transformer": "pa_examples.transformer",
    "plugin-template": "pa_examples.plugin_template",
    "wandb": "pa_examples.wandb_logging",
    "tensorboard": "pa_examples.tensorboard_logging",
    "streaming": "pa_examples.streaming",
}


def test_every_example_is_registered_in_the_pa_examples_group():
    ours = {
        name: entry for name, entry in plugins.entries("pa.examples").items() if entry.distribution == "pa-examples"
    }
    assert {name: entry.value for name, entry in ours.items()} == {
        name: f"{module}:main" for name, module in EXAMPLES.items()
    }


def test_list_shows_every_example_with_a_one_line_summary(run_python):
    lines = run_python("-m", "pa_examples.cli", "list").stdout.splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    assert set(EXAMPLES) <= set(listed)
    assert "handwritten digits" in listed["digits"]
    assert "Hugging Face datasets" in listed["streaming"]
    assert all(len(summary) > 20 and not summary.startswith("(") for summary in listed.values())


def test_list_reads_summaries_without_importing_the_examples(capsys, monkeypatch):
    imported = []
    monkeypatch.setattr(plugins.PluginEntry, "load", lambda self: imported.append(self.name))
    assert cli.main(["list"]) == 0
    assert imported == []
    assert "Learning-rate schedules" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_has_help_with_a_fast_mode(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pa-examples run {name}")
    assert "--fast" in out


def test_run_help_goes_to_the_example_not_to_the_command(run_python):
    out = run_python("-m", "pa_examples.cli", "run", "digits", "--help").stdout
    assert "--epochs" in out and "--batch-size" in out and "--dataset" in out


def test_an_unknown_name_exits_with_status_2_and_lists_the_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "no-such-example"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no example named 'no-such-example'" in err and "digits" in err


def test_pa_examples_is_also_a_pa_subcommand(run_python):
    out = run_python("-m", "pa_core.cli", "examples", "list").stdout
    assert "digits" in out and "transformer" in out


@pytest.fixture
def other_distribution(tmp_path):
    """A folder holding an installed-looking distribution that adds two examples: one that works
    and one whose module fails to import."""
    site = tmp_path / "site"
    dist_info = site / "pa_more_examples-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pa-more-examples\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[pa.examples]\nhello = more_examples_hello:main\nbroken = more_examples_broken:main\n"
    )
    (site / "more_examples_hello.py").write_text(
        textwrap.dedent(
            '''
            """Say hello from another distribution.

            More text that the list leaves out.
            """
            import argparse

            def main(argv=None):
                parser = argparse.ArgumentParser(prog="pa-examples run hello")
                parser.add_argument("--who", default="world")
                print(f"hello, {parser.parse_args(argv).who}")
                return 3
            '''
        )
    )
    (site / "more_examples_broken.py").write_text('"""An example whose import fails."""\nimport no_such_module\n')
    return site


def test_examples_of_other_distributions_are_listed_and_run(run_python, other_distribution):
    env = {"PYTHONPATH": str(other_distribution)}
    listed = run_python("-m", "pa_examples.cli", "list", env=env).stdout
    assert re.search(r"^hello +Say hello from another distribution\.$", listed, re.MULTILINE)
    assert re.search(r"^broken +An example whose import fails\.$", listed, re.MULTILINE)
    ran = run_python("-m", "pa_examples.cli", "run", "hello", "--who", "pa", env=env, check=False)
    assert ran.stdout == "hello, pa\n"
    assert ran.returncode == 3  # an integer returned by main is the exit status


def test_an_example_that_fails_to_import_names_its_distribution(run_python, other_distribution):
    result = run_python(
        "-m", "pa_examples.cli", "run", "broken", env={"PYTHONPATH": str(other_distribution)}, check=False
    )
    assert result.returncode != 0
    assert "Could not load plugin 'broken'" in result.stderr
    assert "pa-more-examples 1.0" in result.stderr

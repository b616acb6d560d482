"""`pa migrate`: pytorch-accelerated imports rewritten to pa's, as a diff or in place, and only those."""

import importlib
import textwrap

import pytest

from pa_core import cli
from pa_core.migrate import MODULES, MOVED_NAMES, UPSTREAM_NAMES, main, migrate_source

UPSTREAM_SCRIPT = textwrap.dedent(
    '''\
    """Trains with pytorch_accelerated (this docstring is not an import and stays)."""
    import os, pytorch_accelerated
    import pytorch_accelerated.schedulers as sched
    from pytorch_accelerated import Trainer, notebook_launcher
    from pytorch_accelerated.callbacks import (
        SaveBestModelCallback,  # this comment stays
        EarlyStoppingCallback as Stop,
    )
    from pytorch_accelerated.trainer import TrainerPlaceholderValues, DEFAULT_CALLBACKS
    from pytorch_accelerated.schedulers.cosine_scheduler import CosineLrScheduler
    from pytorch_accelerated import callbacks as cbs
    from pytorch_accelerated.callbacks import ModelEma
    import torch; from pytorch_accelerated.utils import LimitBatches


    def build():
        from pytorch_accelerated.finetuning import ModelFreezer
        return pytorch_accelerated.Trainer, "pytorch_accelerated.Trainer"
    '''
)

EXPECTED = textwrap.dedent(
    '''\
    """Trains with pytorch_accelerated (this docstring is not an import and stays)."""
    import os, pa_core
    import pa_core.schedulers as sched
    from pa_core import Trainer
    from accelerate import notebook_launcher
    from pa_callbacks import (
        SaveBestModelCallback,  # this comment stays
        EarlyStoppingCallback as Stop,
    )
    from pa_core import TrainerPlaceholderValues, DEFAULT_CALLBACKS
    from pa_core.schedulers import CosineLrScheduler
    import pa_callbacks as cbs
    from pa_core.utils import ModelEma
    import torch; from pa_core.utils import LimitBatches


    def build():
        from pa_core.finetuning import ModelFreezer
        return pa_core.Trainer, "pytorch_accelerated.Trainer"
    '''
)


def test_every_import_style_is_rewritten():
    result = migrate_source(UPSTREAM_SCRIPT)

    assert result.source == EXPECTED
    assert result.notes == []
    assert not result.incomplete


def test_references_through_the_package_follow_their_modules():
    source = textwrap.dedent(
        """\
        import pytorch_accelerated.callbacks
        cb = pytorch_accelerated.callbacks.EarlyStoppingCallback()
        sched = pytorch_accelerated.schedulers.cosine_scheduler.CosineLrScheduler
        pytorch_accelerated.notebook_launcher(main)
        """
    )

    assert migrate_source(source).source == textwrap.dedent(
        """\
        import pa_callbacks
        import accelerate
        import pa_core.schedulers
        cb = pa_callbacks.EarlyStoppingCallback()
        sched = pa_core.schedulers.CosineLrScheduler
        accelerate.notebook_launcher(main)
        """
    )


def test_imports_of_other_packages_are_left_alone():
    source = textwrap.dedent(
        """\
        import pytorch_accelerated_extras
        from pytorch_accelerated_extras.callbacks import Thing
        from mylib.pytorch_accelerated import helper
        from . import pytorch_accelerated
        print("from pytorch_accelerated import Trainer")  # pytorch_accelerated.Trainer
        """
    )

    result = migrate_source(source)

    assert result.source == source
    assert result.notes == []


def test_a_name_pa_does_not_have_is_kept_and_reported():
    source = "from pytorch_accelerated.callbacks import TrainerCallback, CallbackMethodNotImplementedError\n"

    result = migrate_source(source, filename="train.py")

    assert result.source == (
        "from pa_callbacks import TrainerCallback\n"
        "from pytorch_accelerated.callbacks import CallbackMethodNotImplementedError  # pa migrate: no pa equivalent\n"
    )
    assert result.incomplete
    assert result.notes == [
        "train.py:1: pa has no equivalent of pytorch_accelerated.callbacks.CallbackMethodNotImplementedError; "
        "that import was left as it was"
    ]


@pytest.mark.parametrize(
    "source",
    [
        UPSTREAM_SCRIPT,
        "import pytorch_accelerated\nx = pytorch_accelerated.callbacks.EarlyStoppingCallback\n",
        "from pytorch_accelerated.callbacks import ModelEma, CallbackMethodNotImplementedError\n",
    ],
)
def test_migrating_twice_changes_nothing_more(source):
    once = migrate_source(source).source

    assert migrate_source(once).source == once


def test_line_endings_and_encoding_are_kept(tmp_path):
    script = tmp_path / "legacy.py"
    script.write_bytes(
        "# -*- coding: latin-1 -*-\r\nfrom pytorch_accelerated import Trainer  # é\r\n".encode("latin-1")
    )

    assert main([str(script), "--write"]) == 0

    assert script.read_bytes() == "# -*- coding: latin-1 -*-\r\nfrom pa_core import Trainer  # é\r\n".encode("latin-1")


def test_a_diff_is_printed_and_the_file_left_unchanged_by_default(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(UPSTREAM_SCRIPT)

    assert main([str(script)]) == 0

    out, err = capsys.readouterr()
    assert script.read_text() == UPSTREAM_SCRIPT
    assert "-from pytorch_accelerated import Trainer, notebook_launcher\n" in out
    assert "+from pa_core import Trainer\n+from accelerate import notebook_launcher\n" in out
    assert out.startswith("--- a/")
    assert "would rewrite 1 of 1 file(s)" in err


def test_write_rewrites_every_python_file_of_a_folder_once(tmp_path, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "train.py").write_text(UPSTREAM_SCRIPT)
    (tmp_path / "pkg" / "plain.py").write_text("import torch\n")
    (tmp_path / "notes.txt").write_text("from pytorch_accelerated import Trainer\n")
    venv = tmp_path / ".venv" / "lib"
    venv.mkdir(parents=True)
    (venv / "vendored.py").write_text("from pytorch_accelerated import Trainer\n")

    assert main([str(tmp_path), "--write"]) == 0
    assert (tmp_path / "pkg" / "train.py").read_text() == EXPECTED
    assert (tmp_path / "pkg" / "plain.py").read_text() == "import torch\n"
    assert (tmp_path / "notes.txt").read_text() == "from pytorch_accelerated import Trainer\n"
    assert (venv / "vendored.py").read_text() == "from pytorch_accelerated import Trainer\n"
    assert "rewrote 1 of 2 file(s)" in capsys.readouterr().err

    assert main([str(tmp_path), "--write"]) == 0
    assert (tmp_path / "pkg" / "train.py").read_text() == EXPECTED
    assert "rewrote 0 of 2 file(s)" in capsys.readouterr().err


def test_unreadable_and_missing_paths_are_reported(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("from pytorch_accelerated import (\n")

    assert main([str(broken)]) == 1
    assert "skipped" in capsys.readouterr().err and broken.read_text() == "from pytorch_accelerated import (\n"
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_the_pa_command_runs_migrate(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("from pytorch_accelerated.trainer import Trainer\n")

    assert cli.main(["migrate", str(script), "--write"]) == 0

    assert script.read_text() == "from pa_core import Trainer\n"


def test_every_upstream_name_has_a_home_in_pa():
    missing = []
    for module, names in UPSTREAM_NAMES.items():
        for name in names:
            target = MOVED_NAMES.get((module, name), MODULES[module])
            if target is None or name == "__version__":
                continue
            if target == "pa_callbacks" and importlib.util.find_spec("pa_callbacks") is None:
                continue  # pa-core's own session installs pa-core alone
            if not hasattr(importlib.import_module(target), name):
                missing.append(f"{module}.{name} -> {target}")

    assert missing == []


def test_the_rewritten_script_imports_with_pa_core():
    script = textwrap.dedent(
        """\
        from pytorch_accelerated import Trainer, TrainerPlaceholderValues
        from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, TrainerWithTimmScheduler
        from pytorch_accelerated.schedulers import CosineLrScheduler, WSDLrScheduler
        from pytorch_accelerated.schedulers.wsd_scheduler import estimate_checkpoint_steps
        from pytorch_accelerated.finetuning import ModelFreezer
        from pytorch_accelerated.utils import ModelEma, LimitBatches, local_process_zero_only
        from pytorch_accelerated.tracking import InMemoryRunHistory, LossTracker
        from pytorch_accelerated.run_config import TrainerRunConfig
        import pytorch_accelerated
        trainer_class = pytorch_accelerated.Trainer
        """
    )
    namespace: dict = {}

    exec(compile(migrate_source(script).source, "migrated.py", "exec"), namespace)

    assert namespace["trainer_class"] is namespace["Trainer"]
    assert namespace["estimate_checkpoint_steps"](1000, 3)


# -- DEFAULT_CALLBACKS: classes upstream, catalogue names in pa ---------------------------------------------------

FILTERING_IDIOMS = [
    "[cb for cb in DEFAULT_CALLBACKS if cb != ProgressBarCallback]",
    "[cb for cb in DEFAULT_CALLBACKS if cb is not ProgressBarCallback]",
    "[cb for cb in DEFAULT_CALLBACKS if not issubclass(cb, ProgressBarCallback)]",
    "list(filter(lambda cb: cb != ProgressBarCallback, DEFAULT_CALLBACKS))",
    "[*DEFAULT_CALLBACKS[: DEFAULT_CALLBACKS.index(ProgressBarCallback)], LogMetricsCallback]",
    "[cb for cb in DEFAULT_CALLBACKS if cb.__name__ != 'ProgressBarCallback']",
]


def _script(
    expression: str, import_line: str = "from pytorch_accelerated.trainer import Trainer, DEFAULT_CALLBACKS"
) -> str:
    return (
        f"{import_line}\n"
        "from pytorch_accelerated.callbacks import ProgressBarCallback, LogMetricsCallback\n"
        f"callbacks = {expression}\n"
    )


@pytest.mark.parametrize("expression", FILTERING_IDIOMS)
def test_default_callbacks_filtered_by_class_get_the_classes(expression):
    result = migrate_source(_script(expression), filename="train.py")

    assert result.source == (
        "from pa_core import Trainer\n"
        "from pa_callbacks import DEFAULT_CALLBACK_CLASSES as DEFAULT_CALLBACKS\n"
        "from pa_callbacks import ProgressBarCallback, LogMetricsCallback\n"
        f"callbacks = {expression}\n"
    )
    assert not result.incomplete
    assert result.notes == [
        "train.py:1: DEFAULT_CALLBACKS is used item by item here and upstream's held callback classes (pa's holds "
        "catalogue names): imported as pa_callbacks.DEFAULT_CALLBACK_CLASSES, the same classes"
    ]
    assert migrate_source(result.source).source == result.source


@pytest.mark.parametrize(
    "expression",
    [
        "[*DEFAULT_CALLBACKS, LogMetricsCallback()]",
        "(ProgressBarCallback(), *DEFAULT_CALLBACKS)",
        "DEFAULT_CALLBACKS + (LogMetricsCallback,)",
        "DEFAULT_CALLBACKS[:2]",
        "Trainer(model, loss, optimizer, callbacks=DEFAULT_CALLBACKS)",
    ],
)
def test_default_callbacks_passed_whole_keep_pa_s_names(expression):
    result = migrate_source(_script(expression))

    assert result.source.startswith("from pa_core import Trainer, DEFAULT_CALLBACKS\n")
    assert result.notes == []


def test_an_aliased_or_dotted_default_callbacks_is_followed():
    aliased = migrate_source(
        _script(
            "[c for c in DC if c is not ProgressBarCallback]",
            "from pytorch_accelerated.trainer import DEFAULT_CALLBACKS as DC",
        )
    )
    assert aliased.source.startswith("from pa_callbacks import DEFAULT_CALLBACK_CLASSES as DC\n")

    dotted = migrate_source(
        "import pytorch_accelerated.trainer\n"
        "callbacks = [c for c in pytorch_accelerated.trainer.DEFAULT_CALLBACKS if c.__name__ != 'X']\n"
        "spliced = [*pytorch_accelerated.trainer.DEFAULT_CALLBACKS]\n"
    )
    assert dotted.source == (
        "import pa_core\n"
        "import pa_callbacks\n"
        "callbacks = [c for c in pa_callbacks.DEFAULT_CALLBACK_CLASSES if c.__name__ != 'X']\n"
        "spliced = [*pa_core.DEFAULT_CALLBACKS]\n"
    )


def test_get_default_callbacks_used_item_by_item_is_reported():
    source = (
        "from pytorch_accelerated.callbacks import get_default_callbacks, ProgressBarCallback\n"
        "ok = [*get_default_callbacks(progress_bar=False)]\n"
        "cbs = [cb for cb in get_default_callbacks() if cb != ProgressBarCallback]\n"
    )
    result = migrate_source(source, filename="train.py")
    assert result.source.startswith("from pa_callbacks import get_default_callbacks, ProgressBarCallback\n")
    assert result.notes == [
        "train.py:1: get_default_callbacks() returns callback instances in pa (classes in pytorch-accelerated); line 3 "
        "uses its items: compare them with isinstance(), or use pa_callbacks.DEFAULT_CALLBACK_CLASSES"
    ]


@pytest.mark.parametrize("expression", FILTERING_IDIOMS)
def test_a_migrated_filter_leaves_out_the_progress_bar_as_upstream_did(expression):
    pytest.importorskip("pa_callbacks", reason="pa-core's own session installs pa-core alone")
    import torch

    from pa_core.testing import tiny_classifier

    namespace: dict = {}
    exec(compile(migrate_source(_script(expression)).source, "migrated.py", "exec"), namespace)
    model = tiny_classifier()
    trainer = namespace["Trainer"](
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=namespace["callbacks"],
    )
    names = [type(cb).__name__ for cb in trainer.callback_handler.callbacks]
    assert "ProgressBarCallback" not in names
    assert names[0] == "MoveModulesToDeviceCallback" and names[-1] == "LogMetricsCallback"

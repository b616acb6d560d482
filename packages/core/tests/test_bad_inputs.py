"""A table of bad ``Trainer()`` arguments and bad files: each fails early, with the error type its
kind of mistake gets, and a message that names the argument or the file (and says what to do).

Every file pa loads fails with :class:`pa_core.CheckpointError` (``UnsafeCheckpointError`` and the
not-found case are subclasses), whatever is wrong with it.
"""

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from pa_core import CheckpointError, Trainer, UnsafeCheckpointError
from pa_core.testing import make_classification_dataset, tiny_classifier

LOSS = torch.nn.CrossEntropyLoss()


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def adam(model):
    return torch.optim.Adam(model.parameters(), lr=0.01)


class UnmarkedHooks:
    def on_train_epoch_end(self, trainer):
        pass


class NoHooks:
    pass


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint and a training state of a trained tiny classifier (SGD with momentum), saved once."""
    folder = tmp_path_factory.mktemp("saved")
    model = tiny_classifier()
    trainer = Trainer(model, LOSS, sgd(model), callbacks=[])
    trainer.train(make_classification_dataset(num_samples=16), num_epochs=1)
    trainer.save_checkpoint(folder / "checkpoint.pt")
    trainer.save_training_state(folder / "state")
    torch.save(model.state_dict(), folder / "plain_state_dict.pt")
    return folder


def _copy_state(saved, tmp_path):
    shutil.copytree(saved / "state", tmp_path / "state")
    return tmp_path / "state"


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _load_checkpoint(path, optimizer=sgd, model=None):
    model = model if model is not None else tiny_classifier()
    Trainer(model, LOSS, optimizer(model), callbacks=[]).load_checkpoint(path)


def _resume(state_dir, optimizer=sgd):
    model = tiny_classifier()
    Trainer(model, LOSS, optimizer(model), callbacks=[]).train(
        make_classification_dataset(num_samples=16), num_epochs=2, resume_from=state_dir
    )


# Each case: (id, a function of (saved folder, tmp_path) that makes the bad call, the error type, what the
# message must say (a regex), the name it must contain: the argument, or the file's name).
CASES = [
    # -- Trainer() ------------------------------------------------------------------------
    (
        "model-a-string",
        lambda saved, tmp: Trainer("resnet", LOSS, None),
        TypeError,
        r"model must be a torch\.nn\.Module, got 'resnet' \(a str\)",
        "model",
    ),
    ("model-none", lambda saved, tmp: Trainer(None, LOSS, None), TypeError, r"got None", "model"),
    (
        "optimizer-a-string",
        lambda saved, tmp: Trainer(tiny_classifier(), LOSS, "adam"),
        TypeError,
        r"got the string 'adam'.*optimizer=torch\.optim\.AdamW\(model\.parameters\(\), lr=1e-3\)",
        "optimizer",
    ),
    (
        "optimizer-the-class",
        lambda saved, tmp: Trainer(tiny_classifier(), LOSS, torch.optim.Adam),
        TypeError,
        r"got the class torch\.optim\.Adam itself.*optimizer=torch\.optim\.Adam\(model\.parameters\(\), lr=\.\.\.\)",
        "optimizer",
    ),
    (
        "optimizer-not-an-optimizer",
        lambda saved, tmp: Trainer(tiny_classifier(), LOSS, {"lr": 0.1}),
        TypeError,
        r"must be a torch optimizer .* got \{'lr': 0\.1\} \(a dict\)",
        "optimizer",
    ),
    (
        "optimizer-over-another-model",
        lambda saved, tmp: Trainer(tiny_classifier(), LOSS, sgd(tiny_classifier())),
        ValueError,
        r"None of the optimizer's 4 parameters belong to the model.*SGD\(model\.parameters\(\)",
        "optimizer",
    ),
    (
        "loss-func-a-string",
        lambda saved, tmp: Trainer(tiny_classifier(), "cross_entropy", None),
        TypeError,
        r"loss_func must be callable .* got 'cross_entropy' \(a str\)",
        "loss_func",
    ),
    (
        "loss-func-and-optimizer-swapped",
        lambda saved, tmp: (lambda m: Trainer(m, sgd(m), LOSS))(tiny_classifier()),
        TypeError,
        r"look swapped.*Trainer\(model, loss_func, optimizer\)",
        "loss_func",
    ),
    (
        "callback-a-number",
        lambda saved, tmp: Trainer(tiny_classifier(), LOSS, None, callbacks=[42]),
        TypeError,
        r"not a callback",
        "42",
    ),
    (
        "callback-unmarked-hooks",
        lambda saved, tmp: Trainer(tiny_classifier(), LOSS, None, callbacks=[UnmarkedHooks()]),
        TypeError,
        r"defines on_train_epoch_end without @hookimpl.*subclass pa_core\.TrainerCallback",
        "UnmarkedHooks",
    ),
    (
        "callback-without-hooks",
        lambda saved, tmp: Trainer(tiny_classifier(), LOSS, None, callbacks=[NoHooks]),
        TypeError,
        r"implements no hook",
        "NoHooks",
    ),
    (
        "callbacks-a-string",
        lambda saved, tmp: Trainer(tiny_classifier(), LOSS, None, callbacks="progress-bar"),
        TypeError,
        r"got the string 'progress-bar'; for one catalogue name write callbacks=\['progress-bar'\]",
        "callbacks",
    ),
    # -- files: load_checkpoint -----------------------------------------------------------
    (
        "checkpoint-missing",
        lambda saved, tmp: _load_checkpoint(tmp / "nowhere.pt"),
        FileNotFoundError,
        r"there is no such file",
        "nowhere.pt",
    ),
    (
        "checkpoint-garbage",
        lambda saved, tmp: (
            tmp.joinpath("garbage.pt").write_text("hello, not a checkpoint"),
            _load_checkpoint(tmp / "garbage.pt"),
        ),
        CheckpointError,
        r"is not a file written by torch\.save \(it starts with b'hello, n'.*KeyError: 101\)\. Check the path",
        "garbage.pt",
    ),
    (
        "checkpoint-empty",
        lambda saved, tmp: (tmp.joinpath("empty.pt").touch(), _load_checkpoint(tmp / "empty.pt")),
        CheckpointError,
        r"the file is empty \(0 bytes\).*Use an earlier copy, or save it again",
        "empty.pt",
    ),
    (
        "checkpoint-truncated",
        lambda saved, tmp: (
            shutil.copy(saved / "checkpoint.pt", tmp / "cut.pt"),
            _truncate(tmp / "cut.pt"),
            _load_checkpoint(tmp / "cut.pt"),
        ),
        CheckpointError,
        r"starts like a file written by torch\.save but cannot be read .* truncated or damaged",
        "cut.pt",
    ),
    (
        "checkpoint-a-plain-state-dict",
        lambda saved, tmp: _load_checkpoint(saved / "plain_state_dict.pt"),
        CheckpointError,
        r"holds a plain state dict \(4 tensors.*model\.load_state_dict\(torch\.load\(path, weights_only=True\)\)",
        "plain_state_dict.pt",
    ),
    (
        "checkpoint-a-folder",
        lambda saved, tmp: _load_checkpoint(saved / "state"),
        CheckpointError,
        r"it is a folder, not a file\. It holds a training state .*resume_from=path",
        "state",
    ),
    (
        "checkpoint-optimizer-of-another-type",
        lambda saved, tmp: _load_checkpoint(saved / "checkpoint.pt", optimizer=adam),
        CheckpointError,
        r"saved by a torch\.optim\.SGD, not by a torch\.optim\.Adam: .* lacks .*betas.*load_optimizer=False",
        "checkpoint.pt",
    ),
    (
        "checkpoint-of-another-model",
        lambda saved, tmp: _load_checkpoint(saved / "checkpoint.pt", model=tiny_classifier(hidden=5)),
        CheckpointError,
        r"do not fit this model \(Sequential\).*size mismatch",
        "checkpoint.pt",
    ),
    # -- files: training states -----------------------------------------------------------
    (
        "state-missing-its-model-file",
        lambda saved, tmp: (_copy_state(saved, tmp).joinpath("model.safetensors").unlink(), _resume(tmp / "state")),
        CheckpointError,
        r"is incomplete: model\.safetensors \(model weights\) is missing",
        "model.safetensors",
    ),
    (
        "state-truncated-rng-file",
        lambda saved, tmp: (_truncate(_copy_state(saved, tmp) / "random_states_0.pkl"), _resume(tmp / "state")),
        CheckpointError,
        r"Cannot load the random-number-generator state .* truncated or damaged",
        "random_states_0.pkl",
    ),
    (
        "state-empty-trainer-state-file",
        lambda saved, tmp: (
            _copy_state(saved, tmp).joinpath("pa_trainer_state.pt").write_bytes(b""),
            _resume(tmp / "state"),
        ),
        CheckpointError,
        r"Cannot load the trainer state file .* the file is empty",
        "pa_trainer_state.pt",
    ),
    (
        "state-trainer-state-without-its-parts",
        lambda saved, tmp: (
            torch.save({"format": 1}, _copy_state(saved, tmp) / "pa_trainer_state.pt"),
            _resume(tmp / "state"),
        ),
        CheckpointError,
        r"lacks position, run_history, scheduler, callbacks",
        "pa_trainer_state.pt",
    ),
    (
        "state-damaged-model-file",
        lambda saved, tmp: (_truncate(_copy_state(saved, tmp) / "model.safetensors"), _resume(tmp / "state")),
        CheckpointError,
        r"safetensors file is truncated or damaged",
        "model.safetensors",
    ),
    (
        "state-optimizer-of-another-type",
        lambda saved, tmp: _resume(saved / "state", optimizer=adam),
        CheckpointError,
        r"saved by a torch\.optim\.SGD, not by a torch\.optim\.Adam.*Create the Trainer with torch\.optim\.SGD",
        "optimizer.bin",
    ),
    (
        "state-folder-missing",
        lambda saved, tmp: _resume(tmp / "no-state"),
        FileNotFoundError,
        r"resume_from=.* is not a training state .* \(the folder does not exist\)",
        "no-state",
    ),
]


@pytest.mark.parametrize(("make_call", "error", "message", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_reported_naming_what_was_wrong(saved, tmp_path, make_call, error, message, names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickle-protocol notes from torch are not what is tested
        with pytest.raises(error, match="(?s)" + message) as info:
            make_call(saved, tmp_path)
    assert names in str(info.value)
    if isinstance(info.value, CheckpointError):
        assert info.value.path is not None and Path(info.value.path).name in str(info.value)


def test_the_table_covers_at_least_twelve_cases_of_each_kind():
    kinds = {"trainer": 0, "file": 0}
    for case_id, *_ in CASES:
        kinds["file" if case_id.startswith(("checkpoint-", "state-")) else "trainer"] += 1
    assert kinds["trainer"] >= 12 and kinds["file"] >= 12, kinds


def test_every_file_error_is_one_type():
    assert issubclass(UnsafeCheckpointError, CheckpointError)
    assert issubclass(UnsafeCheckpointError, __import__("pickle").UnpicklingError)
    from pa_core._serialization import CheckpointNotFoundError

    assert issubclass(CheckpointNotFoundError, CheckpointError) and issubclass(
        CheckpointNotFoundError, FileNotFoundError
    )
    for case_id, _, error, _, _ in CASES:
        if case_id.startswith(("checkpoint-", "state-")):
            assert issubclass(error, (CheckpointError, FileNotFoundError)), case_id


def test_an_optimizer_missing_some_trainable_parameters_is_a_warning():
    model = tiny_classifier()
    head_only = torch.optim.SGD(model[2].parameters(), lr=0.1)
    with pytest.warns(
        UserWarning, match=r"2 of the model's 4 trainable parameters are not in the optimizer.*0\.weight, 0\.bias"
    ):
        Trainer(model, LOSS, head_only, callbacks=[])
    model[0].requires_grad_(False)  # frozen on purpose: nothing to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(model, LOSS, head_only, callbacks=[])


def test_a_loss_module_with_its_own_parameters_counts_as_the_models():
    model, learned_loss = tiny_classifier(), torch.nn.Linear(2, 2)  # only its parameters are optimized
    with pytest.warns(UserWarning, match="not in the optimizer"):
        Trainer(model, learned_loss, torch.optim.SGD(learned_loss.parameters(), lr=0.1), callbacks=[])


def test_a_state_saved_before_pa_recorded_its_files_still_names_a_missing_model_file(saved, tmp_path):
    state = _copy_state(saved, tmp_path)
    metadata = torch.load(state / "pa_trainer_state.pt", weights_only=True)
    del metadata["files"]
    torch.save(metadata, state / "pa_trainer_state.pt")
    _resume(state)  # complete: resumes
    shutil.rmtree(tmp_path / "state")
    state = _copy_state(saved, tmp_path)
    torch.save(metadata, state / "pa_trainer_state.pt")
    (state / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"has no model weights file \(model\.safetensors"):
        _resume(state)

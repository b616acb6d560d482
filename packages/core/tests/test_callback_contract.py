"""What a callback must be, and what upstream-style callbacks receive.

A callback pa would never call is refused when it is added, naming it and saying what is missing.
Upstream-style methods without ``**kwargs`` get only the arguments they name, so callbacks written
for pytorch-accelerated survive the arguments pa added (``error`` of ``on_stop_training_error``).
"""

import inspect
import types

import pytest
import torch

from pa_core import StopTrainingError, Trainer, TrainerCallback, hookimpl
from pa_core.callbacks import CallbackHandler
from pa_core.testing import RecordingCallback, tiny_classifier

# -- what is refused ------------------------------------------------------------------------


def test_a_number_is_not_a_callback(make_trainer):
    with pytest.raises(TypeError, match=r"42 \(a int\) is not a callback.*hookimpl.*TrainerCallback.*'progress-bar'"):
        make_trainer(callbacks=[42])


def test_hook_methods_without_hookimpl_are_refused_naming_them(make_trainer):
    class ForgotTheMarker:
        def on_train_epoch_end(self, trainer):
            pass

        def on_training_run_end(self, trainer):
            pass

    with pytest.raises(
        TypeError,
        match=r"ForgotTheMarker \(module .*\) defines on_train_epoch_end, on_training_run_end without @hookimpl, so pa "
        r"would never call them\. Mark them with pa_core\.hookimpl .* or subclass pa_core\.TrainerCallback",
    ):
        make_trainer(callbacks=[ForgotTheMarker()])


def test_one_forgotten_marker_among_marked_methods_is_refused(make_trainer):
    class HalfMarked:
        @hookimpl
        def on_train_epoch_start(self):
            pass

        def on_train_epoch_end(self, trainer):
            pass

    with pytest.raises(TypeError, match=r"HalfMarked .* defines on_train_epoch_end without @hookimpl"):
        make_trainer(callbacks=[HalfMarked()])


def test_an_object_without_hooks_is_refused(make_trainer):
    class Nothing:
        def helper(self):
            pass

    with pytest.raises(TypeError, match=r"Callback Nothing \(module .*\) implements no hook"):
        make_trainer(callbacks=[Nothing()])
    with pytest.raises(TypeError, match=r"Callback Nothing .* implements no hook"):
        make_trainer(callbacks=[Nothing])  # a class is instantiated, then checked


def test_a_trainer_callback_overriding_nothing_is_refused(make_trainer):
    class Empty(TrainerCallback):
        pass

    with pytest.raises(TypeError, match=r"Callback Empty .* overrides none of TrainerCallback's on_\* methods"):
        make_trainer(callbacks=[Empty()])


def test_a_module_plugin_without_hooks_is_refused():
    handler = CallbackHandler()
    with pytest.raises(TypeError, match=r"empty_plugin \(installed as plugin 'x'\) implements no hook"):
        handler.add_plugin(types.ModuleType("empty_plugin"), origin="installed as plugin 'x'")
    assert handler.callbacks == []


def test_an_unmarked_near_copy_of_a_hook_name_is_a_typo(make_trainer):
    class Typo:
        def on_train_epcoh_end(self, trainer):
            pass

    with pytest.raises(ValueError, match="did you mean 'on_train_epoch_end'"):
        make_trainer(callbacks=[Typo()])


def test_callbacks_given_as_a_string_is_explained(train_data):
    model = tiny_classifier()
    with pytest.raises(TypeError, match=r"callbacks must be a list of callbacks, got the string 'progress-bar'"):
        Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), "progress-bar")


def test_a_class_that_needs_arguments_says_to_pass_an_instance(make_trainer):
    class NeedsArguments:
        def __init__(self, patience):
            self.patience = patience

        @hookimpl
        def on_train_epoch_end(self):
            pass

    with pytest.raises(TypeError) as info:
        make_trainer(callbacks=[NeedsArguments])
    assert any("pass an instance instead" in note for note in getattr(info.value, "__notes__", []))


# -- what is accepted -----------------------------------------------------------------------


def test_custom_events_still_reach_every_style_of_callback(make_trainer):
    received = []

    class MarkedListener:
        @hookimpl
        def on_plateau(self, trainer, epoch):
            received.append(("marked", epoch))

    class UnmarkedListener:
        """Only a custom event, unmarked: pa calls it through call_event, so it is accepted."""

        def on_plateau(self, epoch):
            received.append(("unmarked", epoch))

    class UpstreamListener(TrainerCallback):
        def on_plateau(self, trainer, **kwargs):
            received.append(("upstream", kwargs["epoch"]))

    trainer = make_trainer(callbacks=[MarkedListener(), UnmarkedListener(), UpstreamListener()])
    trainer.callback_handler.call_event("on_plateau", trainer=trainer, epoch=3)
    assert received == [("marked", 3), ("unmarked", 3), ("upstream", 3)]


def test_recording_callback_and_modules_with_hooks_are_accepted(make_trainer, train_data):
    module = types.ModuleType("counting_plugin")
    module.count = 0

    @hookimpl
    def on_train_epoch_end():
        module.count += 1

    module.on_train_epoch_end = on_train_epoch_end
    trainer = make_trainer(callbacks=[RecordingCallback(), module])
    trainer.train(train_data, num_epochs=2)
    assert module.count == 2


# -- upstream-style arguments ----------------------------------------------------------------


class StopAfterFirstEpoch:
    @hookimpl
    def on_train_epoch_end(self):
        raise StopTrainingError("stopping after one epoch")


class UpstreamWithoutKwargs(TrainerCallback):
    """Methods written for pytorch-accelerated 0.1.61 with only the arguments it passed."""

    def __init__(self):
        self.seen = []

    def on_train_step_end(self, trainer, batch, batch_output, step):
        self.seen.append(("step", step))

    def on_eval_epoch_end(self, trainer, is_intermediate):
        self.seen.append(("eval", is_intermediate))

    def on_stop_training_error(self, trainer):  # upstream passed no error
        self.seen.append(("stopped", trainer.run_history.current_epoch))

    def on_train_update_end(self, trainer):  # a pa-only hook, taking the trainer alone
        self.seen.append(("update",))


class UpstreamNamingTheError(TrainerCallback):
    def __init__(self):
        self.errors = []

    def on_stop_training_error(self, trainer, error):
        self.errors.append(error)


class UpstreamWithKwargs(TrainerCallback):
    def __init__(self):
        self.kwargs = []

    def on_stop_training_error(self, trainer, **kwargs):
        self.kwargs.append(kwargs)


def test_upstream_style_callbacks_get_only_the_arguments_they_name(make_trainer, train_data, eval_data, capsys):
    plain, named, with_kwargs = UpstreamWithoutKwargs(), UpstreamNamingTheError(), UpstreamWithKwargs()
    trainer = make_trainer(callbacks=[plain, named, with_kwargs, StopAfterFirstEpoch()])

    trainer.train(train_data, num_epochs=3, eval_dataset=eval_data, per_device_batch_size=20)

    assert plain.seen == [("step", 0), ("update",), ("step", 1), ("update",), ("stopped", 1)]
    assert [str(error) for error in named.errors] == ["stopping after one epoch"]
    assert [type(kw["error"]) for kw in with_kwargs.kwargs] == [StopTrainingError]
    assert "stopping after one epoch" in capsys.readouterr().out


def test_evaluation_stopped_by_a_callback_reaches_an_upstream_style_callback(make_trainer, eval_data):
    class StopInEval:
        @hookimpl
        def on_eval_step_end(self):
            raise StopTrainingError("enough evaluation")

    plain = UpstreamWithoutKwargs()
    make_trainer(callbacks=[plain, StopInEval()]).evaluate(eval_data)
    assert plain.seen == [("stopped", 1)]


def test_signatures_are_read_once_when_the_callback_is_added(make_trainer, train_data, monkeypatch):
    callback = UpstreamWithoutKwargs()
    trainer = make_trainer(callbacks=[callback, StopAfterFirstEpoch()])
    real_signature, reads = inspect.signature, []

    def counting_signature(obj, *args, **kwargs):
        if getattr(obj, "__self__", None) is callback:
            reads.append(obj)
        return real_signature(obj, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting_signature)
    trainer.train(train_data, num_epochs=2)
    assert callback.seen and reads == []
    trainer.callback_handler.add_callback(RecordingCallback())  # re-registration reads them again, once
    assert len(reads) == 4


def test_a_refused_callback_leaves_the_handler_as_it_was():
    recorder = RecordingCallback(events=("on_train_step_end",))
    handler = CallbackHandler([recorder])
    with pytest.raises(TypeError, match="42"):
        handler.add_callbacks([StopAfterFirstEpoch(), 42])
    assert handler.callbacks == [recorder]
    assert handler.has_implementations("on_train_step_end") and not handler.has_implementations("on_train_epoch_end")

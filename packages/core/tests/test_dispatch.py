"""Hook dispatch: pa's direct calls are pluggy's own hook call, in order, arguments and error notes.

The CallbackHandler lets pluggy register and order the callbacks, then calls a hook's plain
implementations itself. These tests hold that to pluggy's ``pm.hook.on_x(...)`` for the same
plugins: upstream-style and hookimpl-style callbacks mixed, ``tryfirst``/``trylast``, arguments
in any order, and wrappers (which pa leaves to pluggy).
"""

import sys
import types

import pytest

from pa_core import StopTrainingError, TrainerCallback, hookimpl
from pa_core.callbacks import CallbackHandler

CALLS: list[tuple] = []
TRAINER = object()  # the hooks only pass it along

EVENTS = {
    "on_train_step_end": {"batch": ("x", "y"), "batch_output": {"loss": 1.0, "batch_size": 2}, "step": 3},
    "on_train_update_end": {"step": 3, "num_updates": 2},
    "on_eval_epoch_end": {"is_intermediate": True},
    "on_stop_training_error": {"error": StopTrainingError("enough")},
    "on_train_epoch_start": {},
}


def record(who, event, **arguments):
    CALLS.append((who, event, tuple(sorted(arguments.items(), key=lambda item: item[0]))))


class Plain:
    @hookimpl
    def on_train_step_end(self, batch_output, trainer):  # arguments in another order than the spec
        record("Plain", "on_train_step_end", batch_output=batch_output, trainer=trainer)

    @hookimpl
    def on_train_update_end(self, num_updates):
        record("Plain", "on_train_update_end", num_updates=num_updates)

    @hookimpl
    def on_stop_training_error(self, error):
        record("Plain", "on_stop_training_error", error=error)


class First:
    @hookimpl(tryfirst=True)
    def on_train_step_end(self, trainer, batch, batch_output, step):
        record("First", "on_train_step_end", trainer=trainer, batch=batch, batch_output=batch_output, step=step)

    @hookimpl(tryfirst=True)
    def on_eval_epoch_end(self):
        record("First", "on_eval_epoch_end")

    @hookimpl
    def on_train_epoch_start(self, trainer):
        record("First", "on_train_epoch_start", trainer=trainer)


class Upstream(TrainerCallback):
    """Written for pytorch-accelerated: every argument by keyword."""

    def on_train_step_end(self, trainer, **kwargs):
        record("Upstream", "on_train_step_end", trainer=trainer, **kwargs)

    def on_eval_epoch_end(self, trainer, **kwargs):
        record("Upstream", "on_eval_epoch_end", trainer=trainer, **kwargs)

    def on_stop_training_error(self, trainer):  # upstream passed no `error`
        record("Upstream", "on_stop_training_error", trainer=trainer)


class UpstreamNamed(TrainerCallback):
    """Upstream style naming its arguments, without **kwargs."""

    def on_train_step_end(self, trainer, batch, batch_output):  # no `step`: it is not passed
        record("UpstreamNamed", "on_train_step_end", trainer=trainer, batch=batch, batch_output=batch_output)

    def on_train_update_end(self, trainer, num_updates):  # a pa-only hook: the arguments it names
        record("UpstreamNamed", "on_train_update_end", trainer=trainer, num_updates=num_updates)

    @hookimpl(trylast=True)
    def on_eval_epoch_end(self, trainer, is_intermediate):
        record("UpstreamNamed", "on_eval_epoch_end", trainer=trainer, is_intermediate=is_intermediate)

    def on_stop_training_error(self, trainer, error):
        record("UpstreamNamed", "on_stop_training_error", trainer=trainer, error=error)


class LastNoArguments:
    @hookimpl(trylast=True)
    def on_train_step_end(self):
        record("LastNoArguments", "on_train_step_end")

    @hookimpl(trylast=True)
    def on_train_update_end(self, trainer, step, num_updates):
        record("LastNoArguments", "on_train_update_end", trainer=trainer, step=step, num_updates=num_updates)


def _module_plugin():
    module = types.ModuleType("a_module_plugin")

    @hookimpl
    def on_train_epoch_start(trainer):
        record("module", "on_train_epoch_start", trainer=trainer)

    module.on_train_epoch_start = on_train_epoch_start
    return module


def _plugins():
    return [Plain(), Upstream(), First(), UpstreamNamed(), LastNoArguments(), _module_plugin()]


def _pluggy_only(callbacks):
    handler = CallbackHandler(callbacks)
    handler._direct_dispatch = False
    handler._rebuild()
    return handler


def _calls(function):
    CALLS.clear()
    function()
    return list(CALLS)


@pytest.mark.parametrize("event", list(EVENTS))
def test_direct_dispatch_calls_what_pluggy_calls_in_its_order(event):
    handler = CallbackHandler(_plugins())
    assert isinstance(handler._callers[event], list), "this event is dispatched directly"
    kwargs = EVENTS[event]

    direct = _calls(lambda: handler.call_event(event, TRAINER, **kwargs))
    pluggy_own = _calls(lambda: getattr(handler._pm.hook, event)(trainer=TRAINER, **kwargs))

    assert direct == pluggy_own
    assert len(direct) >= 2


def test_the_order_is_the_users_within_tryfirst_and_trylast():
    handler = CallbackHandler(_plugins())

    calls = _calls(lambda: handler.call_event("on_eval_epoch_end", TRAINER, is_intermediate=True))
    assert [who for who, _, _ in calls] == ["First", "Upstream", "UpstreamNamed"]
    calls = _calls(lambda: handler.call_event("on_train_update_end", TRAINER, step=3, num_updates=2))
    assert [who for who, _, _ in calls] == ["Plain", "UpstreamNamed", "LastNoArguments"]


class Boom:
    def __init__(self, error):
        self.error = error

    @hookimpl
    def on_train_step_end(self, step):
        record("Boom", "on_train_step_end", step=step)
        raise self.error


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes need Python 3.11")
@pytest.mark.parametrize("position", [0, 2, 4])
def test_an_error_gets_the_same_note_and_stops_at_the_same_callback(position):
    kwargs = EVENTS["on_train_step_end"]
    outcomes = []
    for make_handler in (CallbackHandler, _pluggy_only):
        callbacks = [Plain(), Upstream(), First(), LastNoArguments()]
        callbacks.insert(position, Boom(RuntimeError("boom")))
        handler = make_handler(callbacks)
        CALLS.clear()
        with pytest.raises(RuntimeError, match="boom") as info:
            handler.call_event("on_train_step_end", TRAINER, **kwargs)
        outcomes.append((list(CALLS), info.value.__notes__))

    (direct_calls, direct_notes), (pluggy_calls, pluggy_notes) = outcomes
    assert direct_calls == pluggy_calls
    assert direct_notes == pluggy_notes == [f"(raised by Boom (module {__name__}) in hook 'on_train_step_end')"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes need Python 3.11")
def test_an_upstream_style_callback_is_named_in_the_note_on_both_paths():
    class Failing(TrainerCallback):
        def on_train_epoch_start(self, trainer, **kwargs):
            raise ValueError("bad")

    notes = []
    for make_handler in (CallbackHandler, _pluggy_only):
        with pytest.raises(ValueError) as info:
            make_handler([First(), Failing()]).call_event("on_train_epoch_start", TRAINER)
        notes.append(info.value.__notes__)
    assert notes[0] == notes[1] == [f"(raised by Failing (module {__name__}) in hook 'on_train_epoch_start')"]


def test_stop_training_error_passes_through_unannotated_on_both_paths():
    class Stopper:
        @hookimpl
        def on_train_epoch_start(self):
            raise StopTrainingError("stop")

    for make_handler in (CallbackHandler, _pluggy_only):
        with pytest.raises(StopTrainingError) as info:
            make_handler([Stopper(), First()]).call_event("on_train_epoch_start", TRAINER)
        assert not getattr(info.value, "__notes__", [])


def test_with_a_wrapper_the_event_goes_through_pluggy_unchanged():
    class Around:
        @hookimpl(wrapper=True)
        def on_train_step_end(self, step):
            record("Around", "before", step=step)
            result = yield
            record("Around", "after", step=step)
            return result

    handler = CallbackHandler([*_plugins(), Around()])
    assert not isinstance(handler._callers["on_train_step_end"], list)
    kwargs = dict(EVENTS["on_train_step_end"])

    through_pa = _calls(lambda: handler.call_event("on_train_step_end", TRAINER, **kwargs))
    pluggy_own = _calls(lambda: handler._pm.hook.on_train_step_end(trainer=TRAINER, **kwargs))

    assert through_pa == pluggy_own
    assert [who for who, _, _ in through_pa] == [
        "Around",
        "First",
        "Plain",
        "Upstream",
        "UpstreamNamed",
        "LastNoArguments",
        "Around",
    ]


def test_an_event_nobody_implements_costs_one_lookup():
    handler = CallbackHandler([Plain()])
    assert handler._callers["on_eval_step_start"] is None
    assert not handler.has_implementations("on_eval_step_start")
    handler.call_event("on_eval_step_start", TRAINER)  # nothing to call, nothing raised

"""Callbacks: the upstream-style base class and the handler that calls every callback.

The :class:`CallbackHandler` owns one pluggy plugin manager per Trainer. It accepts callbacks
as instances, classes or ``pa.callbacks`` catalogue names, refuses at once anything pa would never
call, calls them in the order the user listed them, and skips events nobody implements at no cost.

Dispatch lives here, in two forms that behave the same. pluggy registers every callback and
orders the implementations (``tryfirst``, ``trylast``, wrappers); for a hook without wrappers the
handler then calls pluggy's ordered implementations itself, which costs a fraction of pluggy's
own call on every step (see ``benchmarks/dispatch.py``); hooks with wrappers go through pluggy.
``tests/test_dispatch.py`` checks that both forms call the same callbacks, in the same order,
with the same arguments and error notes.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from pa_core import hookspecs, plugins

if TYPE_CHECKING:
    from pa_core._trainer_base import TrainerBase
    from pa_core.trainer import Trainer

__all__ = ["CallbackHandler", "StopTrainingError", "TrainerCallback"]


class StopTrainingError(Exception):
    """Raise from a callback to end training (or evaluation) cleanly.

    The Trainer prints the message, fires ``on_stop_training_error``, and still runs
    ``training_run_end`` and its event.
    """


class TrainerCallback:
    """Base class for upstream-style callbacks.

    Override any ``on_*`` method; each receives the trainer positionally and the event's
    other arguments as keywords, so write them as ``def on_x(self, trainer, **kwargs)``.
    Callbacks written for pytorch-accelerated work unchanged: a method without ``**kwargs``
    receives only the arguments it names (``def on_stop_training_error(self, trainer)`` gets no
    ``error``, which pa added; ``def on_stop_training_error(self, trainer, error)`` gets it). The
    signature is read once, when the callback is added. New callbacks can instead be any class
    whose methods are marked with :data:`pa_core.hookimpl`.
    """

    def on_init_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_init_end`."""

    def on_training_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_training_run_start`."""

    def on_train_epoch_start(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_train_epoch_start`."""

    def on_train_step_start(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_train_step_start`."""

    def on_train_step_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_train_step_end`."""

    def on_train_update_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_train_update_end`."""

    def on_train_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_train_epoch_end`."""

    def on_eval_epoch_start(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_eval_epoch_start`."""

    def on_eval_step_start(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_eval_step_start`."""

    def on_eval_step_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_eval_step_end`."""

    def on_eval_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_eval_epoch_end`."""

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_training_run_epoch_end`."""

    def on_training_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_training_run_end`."""

    def on_evaluation_run_start(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_evaluation_run_start`."""

    def on_evaluation_run_end(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_evaluation_run_end`."""

    def on_stop_training_error(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_stop_training_error`."""

    def on_preemption(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_preemption`."""

    def on_exception(self, trainer: Trainer, **kwargs: Any) -> None:
        """See :func:`pa_core.hookspecs.on_exception`."""


class _UpstreamCallbackPlugin:
    """Registers an upstream-style :class:`TrainerCallback` with pluggy.

    Each overridden ``on_*`` method is wrapped in a function that pluggy sees with the hook's
    own argument names (through ``__wrapped__``) and that forwards the arguments by keyword,
    as upstream callbacks expect: all of them to a method with ``**kwargs``, otherwise those
    :func:`_upstream_arguments` chooses once, here, from the method's signature.
    """

    def __init__(self, callback: TrainerCallback) -> None:
        self.callback = callback
        #: Per overridden hook: None (every argument) or the names of the arguments to pass.
        self.passes: dict[str, tuple[str, ...] | None] = {}
        for name in hookspecs.HOOK_NAMES:
            method = getattr(type(callback), name, None)
            if method is not getattr(TrainerCallback, name, None):
                bound = getattr(callback, name)
                self.passes[name] = _upstream_arguments(bound, name)
                # Keep options such as trylast=True given with @hookimpl on the method.
                options = getattr(method, f"{hookspecs.PROJECT_NAME}_impl", None) or {}
                setattr(self, name, hookspecs.hookimpl(**options)(_forward_by_keyword(bound, name, self.passes[name])))


def _hook_arguments(hook_name: str) -> list[str]:
    """The hook's arguments besides ``trainer``, in the specification's order."""
    return [n for n in inspect.signature(getattr(hookspecs, hook_name)).parameters if n != "trainer"]


def _upstream_arguments(method: Any, hook_name: str) -> tuple[str, ...] | None:
    """Which of the hook's arguments an upstream-style ``method`` receives: None for all of
    them (it takes ``**kwargs``, or names every one), else those its signature names.

    pytorch-accelerated passed each event's arguments by keyword; pa passes more to some events
    (``error`` to ``on_stop_training_error``) and has hooks of its own, so a method written for
    upstream without ``**kwargs`` must not receive what it does not name."""
    arguments = _hook_arguments(hook_name)
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):  # no signature to read: pass everything, as before
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    named = {n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    passed = tuple(n for n in arguments if n in named)
    return None if len(passed) == len(arguments) else passed


def _forward_by_keyword(method: Any, hook_name: str, names: tuple[str, ...] | None = None) -> Any:
    """A function pluggy calls with the hook's arguments (by position, in the specification's
    order) that calls ``method(trainer, name=value, ...)`` for ``names`` (all when None)."""
    spec = getattr(hookspecs, hook_name)
    ordered = _hook_arguments(hook_name)
    if names is None:

        def forward(trainer: Any, *args: Any) -> Any:
            return method(trainer, **dict(zip(ordered, args)))

    else:
        keep = [i for i, n in enumerate(ordered) if n in names]

        def forward(trainer: Any, *args: Any) -> Any:
            return method(trainer, **{ordered[i]: args[i] for i in keep})

    forward.__wrapped__ = spec  # type: ignore[attr-defined]  # pluggy reads argument names from here
    return forward


def _hook_like_names(plugin: object) -> list[str]:
    if isinstance(plugin, TrainerCallback):
        return [n for n in dir(type(plugin)) if n.startswith("on_") and not hasattr(TrainerCallback, n)]
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    names = []
    for name in dir(plugin):
        if name.startswith("__"):
            continue
        try:
            value = getattr(plugin, name, None)
        except Exception:  # a property that fails: not a hook
            continue
        if hasattr(value, marker):
            names.append(name)
    return names


class CallbackHandler:
    """Holds a Trainer's callbacks and calls them.

    :param callbacks: instances, classes (instantiated without arguments) or names from the
        ``pa.callbacks`` entry-point group, in the order they should be called.
    """

    #: Call plain hook implementations directly (in pluggy's order) instead of through pluggy's
    #: hook call; False routes every event through pluggy (the tests compare the two).
    _direct_dispatch: bool = True

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._callbacks: list[Any] = []
        self._origins: dict[int, str] = {}
        # Per hook: None (no implementation), a list of direct calls, or pluggy's caller.
        self._callers: dict[str, Any] = {}
        self.add_callbacks(callbacks)

    # -- managing callbacks -------------------------------------------------------------

    @property
    def callbacks(self) -> list[Any]:
        """The callbacks, in calling order (a copy)."""
        return list(self._callbacks)

    callback_list = callbacks

    def add_callbacks(self, callbacks: Iterable[Any]) -> None:
        """Add several callbacks after the existing ones, keeping their order; if one is refused,
        none is added."""
        before = list(self._callbacks)
        try:
            for callback in callbacks:
                self._add(callback)
        except Exception:
            self._callbacks = before
            raise
        self._rebuild()

    def add_callback(self, callback: Any) -> None:
        """Add one callback after the existing ones."""
        self.add_callbacks([callback])

    def add_plugin(self, plugin: Any, origin: str) -> None:
        """Add an autoloaded plugin (a class, instance or module) noting where it came from."""
        self._add(plugin, origin=origin)
        self._rebuild()

    def remove_callback(self, callback: Any) -> None:
        """Remove a callback given as an instance or its class."""
        for existing in self._callbacks:
            if existing is callback or (isinstance(callback, type) and type(existing) is callback):
                self._callbacks.remove(existing)
                self._rebuild()
                return
        raise ValueError(f"{callback!r} is not one of this trainer's callbacks.")

    def get_callback(self, callback_class: type) -> Any | None:
        """The callback that is an instance of ``callback_class``, or None."""
        return next((cb for cb in self._callbacks if isinstance(cb, callback_class)), None)

    def _add(self, callback: Any, origin: str | None = None) -> None:
        if isinstance(callback, str):
            callback = plugins.load_catalogue_callback(callback)
            origin = origin or f"catalogue name in {plugins.CALLBACKS_GROUP}"
        if isinstance(callback, type):
            if callback.__module__ == "builtins":
                raise TypeError(
                    f"callbacks holds the class {callback.__name__}, which is not a callback: pass callback instances "
                    "or classes (with methods marked @pa_core.hookimpl, or subclasses of TrainerCallback), or "
                    "catalogue names."
                )
            callback = _instantiate(callback)
        known = id(callback) in self._origins
        if origin and not known:
            self._origins[id(callback)] = origin  # named in messages, from the check below on
        try:
            self._check_callback(callback)
            if not inspect.ismodule(callback):
                for existing in self._callbacks:
                    if type(existing) is type(callback):
                        raise ValueError(
                            f"A callback of class {type(callback).__name__} was already added; each callback class "
                            "can be added once. Remove the duplicate from `callbacks`."
                        )
        except (TypeError, ValueError):
            if not known:
                self._origins.pop(id(callback), None)
            raise
        self._callbacks.append(callback)

    def _check_callback(self, callback: Any) -> None:
        """Refuse, naming it, a callback pa would never call: no hook at all, or hook methods
        that pluggy cannot see (not marked with ``hookimpl`` in a class that is not a
        :class:`TrainerCallback`), or a near-copy of a hook's name."""
        if isinstance(callback, TrainerCallback):
            custom = _hook_like_names(callback)
            overridden = [n for n in hookspecs.HOOK_NAMES if n in _overridden_hooks(type(callback))]
            if not overridden and not custom:
                raise TypeError(
                    f"Callback {self.describe(callback)} overrides none of TrainerCallback's on_* methods, so pa "
                    "would never call it. Override the events it handles, e.g. "
                    "def on_train_epoch_end(self, trainer, **kwargs), or remove it from callbacks."
                )
            self._check_hook_names(callback, custom)
            return
        marked = _hook_like_names(callback)
        unmarked = [n for n in _unmarked_hook_like_names(callback) if n not in marked]
        forgotten = [n for n in unmarked if n in hookspecs.HOOK_NAMES]
        if forgotten:
            them = "it" if len(forgotten) == 1 else "them"
            raise TypeError(
                f"Callback {self.describe(callback)} defines {', '.join(forgotten)} without @hookimpl, so pa would "
                f"never call {them}. Mark {them} with pa_core.hookimpl (`from pa_core import hookimpl`, then "
                f"`@hookimpl` above each def), or subclass pa_core.TrainerCallback to write upstream-style methods "
                "taking (self, trainer, **kwargs)."
            )
        self._check_hook_names(callback, [*marked, *unmarked])
        if marked or unmarked:
            return
        if type(callback).__module__ == "builtins" and not inspect.ismodule(callback):
            raise TypeError(
                f"{callback!r} (a {type(callback).__name__}) is not a callback. callbacks takes callback objects (a "
                "class whose hook methods, named after the hooks in pa_core.hookspecs, are marked with "
                "@pa_core.hookimpl, or a pa_core.TrainerCallback subclass), callback classes, or pa.callbacks "
                "catalogue names such as 'progress-bar'."
            )
        raise TypeError(
            f"Callback {self.describe(callback)} implements no hook: it has no method named after a hook of "
            "pa_core.hookspecs (such as on_train_epoch_end) marked with @pa_core.hookimpl, and it is not a "
            "pa_core.TrainerCallback subclass. Add a hook method, or remove it from callbacks."
        )

    def _rebuild(self) -> None:
        # pluggy calls the most recently registered implementation first: register in
        # reverse so callbacks run in the order the user listed them.
        for plugin in list(self._pm.get_plugins()):
            self._pm.unregister(plugin)
        for callback in reversed(self._callbacks):
            plugin = _UpstreamCallbackPlugin(callback) if isinstance(callback, TrainerCallback) else callback
            try:
                self._pm.register(plugin)
            except pluggy.PluginValidationError as exc:
                raise TypeError(f"Callback {self.describe(callback)} does not fit pa's hooks: {exc}") from exc
        self._callers = {}
        for name in hookspecs.HOOK_NAMES:
            caller = getattr(self._pm.hook, name)
            impls = caller.get_hookimpls()
            if not impls:
                self._callers[name] = None
            elif not self._direct_dispatch or any(impl.hookwrapper or impl.wrapper for impl in impls):
                self._callers[name] = caller  # wrappers need pluggy's machinery
            else:
                # The same calls in the same order as pluggy's (it calls the last implementation
                # first), without its dispatch on every step.
                self._callers[name] = [_direct_call(impl, name) for impl in reversed(impls)]

    def _check_hook_names(self, callback: Any, names: Iterable[str]) -> None:
        for name in names:
            if name in hookspecs.HOOK_NAMES:
                continue
            close = difflib.get_close_matches(name, hookspecs.HOOK_NAMES, n=1, cutoff=0.85)
            if close:
                raise ValueError(
                    f"Callback {self.describe(callback)} defines {name!r}, which is not a pa hook; "
                    f"did you mean {close[0]!r}? (Custom events need a name that is not a near-copy "
                    "of a built-in hook.)"
                )

    def describe(self, callback: Any) -> str:
        """A readable name for a callback: its class and the distribution it comes from."""
        name = callback.__name__ if inspect.ismodule(callback) else type(callback).__name__
        module = callback.__name__ if inspect.ismodule(callback) else type(callback).__module__
        origin = self._origins.get(id(callback))
        dist = plugins.distribution_of_module(module) if module not in ("__main__", "builtins") else None
        where = origin or (f"distribution {dist}" if dist else f"module {module}")
        return f"{name} ({where})"

    # -- calling ------------------------------------------------------------------------

    def has_implementations(self, event: str) -> bool:
        """True if some callback implements the built-in ``event``."""
        return self._callers.get(event) is not None

    def call_event(self, event: str, trainer: TrainerBase | None = None, **kwargs: Any) -> None:
        """Call ``event`` on every callback that implements it, in order.

        Built-in events go through pluggy; any other name is a custom event, called on the
        callbacks that define a method of that name and silently skipped by the others.
        """
        caller = self._callers.get(event, _CUSTOM)
        if caller is None:
            return
        if caller is _CUSTOM:
            self._call_custom_event(event, trainer, kwargs)
            return
        if isinstance(caller, list):
            for callback, method, how, argnames in caller:
                try:
                    if how is _UPSTREAM:  # everything by keyword, the trainer first
                        method(trainer, **kwargs)
                    elif how is _ALL:
                        method(trainer=trainer, **kwargs)
                    elif how is _TRAINER_ONLY:
                        method(trainer)
                    elif how is _UPSTREAM_SOME:  # the arguments its signature takes, by keyword
                        method(trainer, **{name: kwargs[name] for name in argnames})
                    elif not argnames:
                        method()
                    else:
                        method(*[trainer if name == "trainer" else kwargs[name] for name in argnames])
                except StopTrainingError:
                    raise
                except Exception as exc:
                    self._annotate(exc, event, callback)
                    raise
            return
        try:
            caller(trainer=trainer, **kwargs)
        except StopTrainingError:
            raise
        except Exception as exc:
            self._annotate(exc, event, self._find_raising_plugin(exc, caller))
            raise

    def _call_custom_event(self, event: str, trainer: TrainerBase | None, kwargs: dict[str, Any]) -> None:
        for callback in self._callbacks:
            method = getattr(callback, event, None)
            if method is None or not callable(method):
                continue
            try:
                if isinstance(callback, TrainerCallback):
                    method(trainer, **kwargs)
                else:
                    params = inspect.signature(method).parameters
                    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
                    available = {"trainer": trainer, **kwargs}
                    method(**{k: v for k, v in available.items() if takes_all or k in params})
            except StopTrainingError:
                raise
            except Exception as exc:
                self._annotate(exc, event, callback)
                raise

    def _find_raising_plugin(self, exc: BaseException, caller: pluggy.HookCaller) -> Any | None:
        codes = {}
        for impl in caller.get_hookimpls():
            callback = impl.plugin.callback if isinstance(impl.plugin, _UpstreamCallbackPlugin) else impl.plugin
            function = getattr(callback, caller.name, None)
            code = getattr(getattr(function, "__func__", function), "__code__", None)
            if code is not None:
                codes[code] = callback
        tb = exc.__traceback__
        while tb is not None:
            plugin = codes.get(tb.tb_frame.f_code)
            if plugin is not None:
                return plugin
            tb = tb.tb_next
        return None

    def _annotate(self, exc: BaseException, event: str, plugin: Any | None) -> None:
        if getattr(exc, "_pa_annotated", False) or sys.version_info < (3, 11):
            return
        who = self.describe(plugin) if plugin is not None else "a callback"
        exc.add_note(f"(raised by {who} in hook {event!r})")
        exc._pa_annotated = True  # type: ignore[attr-defined]

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The ``state_dict()`` of every callback that has one, keyed by class name."""
        return {
            type(cb).__qualname__: cb.state_dict()
            for cb in self._callbacks
            if callable(getattr(cb, "state_dict", None)) and not inspect.ismodule(cb)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Give each callback its saved state (callbacks not in ``state`` keep theirs)."""
        for cb in self._callbacks:
            key = type(cb).__qualname__
            if key in state and callable(getattr(cb, "load_state_dict", None)):
                cb.load_state_dict(state[key])


_CUSTOM: Any = object()


def _direct_call(impl: Any, hook_name: str) -> tuple[Any, Any, Any, tuple[str, ...]]:
    """(callback, function, how to pass the arguments, argument names) for a hook implementation
    that pluggy would call plainly; ``how`` is ``_UPSTREAM`` (all by keyword after the trainer),
    ``_UPSTREAM_SOME`` (the named ones by keyword after the trainer), ``_ALL`` (all by keyword),
    ``_TRAINER_ONLY`` or ``_POSITIONAL`` (the named ones by position)."""
    plugin = impl.plugin
    if isinstance(plugin, _UpstreamCallbackPlugin):
        names = plugin.passes[hook_name]
        method = getattr(plugin.callback, hook_name)
        return (
            (plugin.callback, method, _UPSTREAM, ())
            if names is None
            else (plugin.callback, method, _UPSTREAM_SOME, names)
        )
    argnames = tuple(impl.argnames)
    # Names pluggy read through ``__wrapped__`` may not be the function's own: pass those by position.
    takes_keywords = not hasattr(impl.function, "__wrapped__")
    if takes_keywords and set(argnames) == set(inspect.signature(getattr(hookspecs, hook_name)).parameters):
        return plugin, impl.function, _ALL, argnames
    return plugin, impl.function, _TRAINER_ONLY if argnames == ("trainer",) else _POSITIONAL, argnames


def _instantiate(cls: type) -> Any:
    """``cls()``, with a note saying why pa called it when that fails for want of arguments."""
    try:
        return cls()
    except TypeError as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(
                f"(pa: {cls.__qualname__} was given to callbacks as a class, so pa created it without arguments; "
                f"pass an instance instead, e.g. {cls.__qualname__}(...).)"
            )
        raise


def _overridden_hooks(cls: type) -> set[str]:
    return {n for n in hookspecs.HOOK_NAMES if getattr(cls, n, None) is not getattr(TrainerCallback, n, None)}


def _unmarked_hook_like_names(plugin: object) -> list[str]:
    """Callable attributes named like hooks (``on_*``, or a ``pa_*`` hook's name), marked or not."""
    names = []
    for name in dir(plugin):
        if not (name.startswith("on_") or name in hookspecs.HOOK_NAMES):
            continue
        try:
            value = getattr(plugin, name)
        except Exception:  # a property that fails: not a hook
            continue
        if callable(value):
            names.append(name)
    return names


_UPSTREAM: Any = object()
_UPSTREAM_SOME: Any = object()
_ALL: Any = object()
_TRAINER_ONLY: Any = object()
_POSITIONAL: Any = object()

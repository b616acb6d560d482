"""Finding plugins through entry points: the ``pa.callbacks`` catalogue and ``pa.plugins`` autoload.

Catalogues are plain entry-point groups resolved lazily, by name: nothing is imported until a
Trainer asks for a name. Errors name the plugin and the distribution that provides it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache
from importlib import metadata
from typing import Any

CALLBACKS_GROUP = "pa.callbacks"
PLUGINS_GROUP = "pa.plugins"
EXAMPLES_GROUP = "pa.examples"
GROUPS = (CALLBACKS_GROUP, PLUGINS_GROUP, EXAMPLES_GROUP)

DISABLE_AUTOLOAD_ENV = "PA_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_PLUGINS_ENV = "PA_DISABLE_PLUGINS"

#: First-party catalogue names and the distribution that provides each, so that a missing
#: name can say what to install. Only strings: pa-core imports none of these.
FIRST_PARTY_PROVIDERS: dict[str, str] = {
    "move-modules-to-device": "pa-callbacks",
    "terminate-on-nan": "pa-callbacks",
    "print-progress": "pa-callbacks",
    "progress-bar": "pa-callbacks",
    "log-metrics": "pa-callbacks",
    "save-best-model": "pa-callbacks",
    "early-stopping": "pa-callbacks",
    "model-ema": "pa-callbacks",
    "convert-sync-batchnorm": "pa-callbacks",
    "limit-batches": "pa-callbacks",
    "step-based-evaluation": "pa-callbacks",
    "limit-eval-steps": "pa-callbacks",
    "save-training-state": "pa-callbacks",
    "wsd-checkpoint": "pa-callbacks",
    "metrics-file": "pa-callbacks",
    "throughput": "pa-callbacks",
    "profiler": "pa-callbacks",
    "wandb": "pa-wandb",
    "tensorboard": "pa-tracking",
    "mlflow": "pa-tracking",
    "torchmetrics": "pa-torchmetrics",
    "deepspeed": "pa-deepspeed",
}


class PluginError(RuntimeError):
    """A plugin or catalogue entry could not be found or loaded."""


@dataclass(frozen=True)
class PluginEntry:
    """One entry point of a pa group, with the distribution that declares it."""

    name: str
    group: str
    value: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint
    #: Entry points of other distributions claiming the same name in the same group.
    rivals: tuple[PluginEntry, ...] = ()

    @property
    def origin(self) -> str:
        """Where the entry point comes from, for messages: name, value, group and distribution."""
        return (
            f"entry point {self.name!r} = {self.value!r} in group {self.group!r} "
            f"of distribution {self.distribution} {self.version}"
        )

    def load(self) -> Any:
        """Import the object behind the entry point, failing loudly with its origin."""
        if self.rivals:
            claims = " and ".join(f"{e.distribution} {e.version} ({e.value})" for e in (self, *self.rivals))
            raise PluginError(
                f"Two installed distributions claim the name {self.name!r} in {self.group!r}: {claims}. "
                "Uninstall one of them."
            )
        try:
            return self.entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"Could not load plugin {self.name!r} ({self.origin}): {type(exc).__name__}: {exc}. "
                f"Reinstall or upgrade {self.distribution}, or uninstall it"
                + (f", or set {DISABLE_PLUGINS_ENV}={self.name} to skip it." if self.group == PLUGINS_GROUP else ".")
            ) from exc


def entries(group: str) -> dict[str, PluginEntry]:
    """Every entry point of ``group``, by name.

    A name claimed by two distributions is kept with its ``rivals``, so that using that
    name (and only that name) fails with a message naming both.
    """
    found: dict[str, PluginEntry] = {}
    # entry_points() reads each distribution's entry-point file only (milliseconds), keeps the
    # first of a distribution visible twice on sys.path, as imports do, and gives each
    # entry point its distribution.
    for ep in metadata.entry_points(group=group):
        dist = ep.dist
        entry = PluginEntry(ep.name, group, ep.value, dist.name if dist else "?", dist.version if dist else "?", ep)
        previous = found.get(ep.name)
        if previous is not None:
            entry = replace(previous, rivals=(*previous.rivals, entry))
        found[ep.name] = entry
    return found


def _distributions() -> list[metadata.Distribution]:
    """Every installed distribution once (the first visible on sys.path wins)."""
    seen: set[str] = set()
    unique = []
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in seen:
            seen.add(name)
            unique.append(dist)
    return unique


def load_catalogue_callback(name: str) -> Any:
    """The callback class (or object) published under ``name`` in the ``pa.callbacks`` group."""
    catalogue = entries(CALLBACKS_GROUP)
    entry = catalogue.get(name)
    if entry is None:
        provider = FIRST_PARTY_PROVIDERS.get(name)
        hint = (
            f" It is provided by {provider}: pip install {provider}"
            if provider
            else " Check the spelling, or install the distribution that provides it."
        )
        known = ", ".join(sorted(catalogue)) or "none"
        raise PluginError(f"No callback named {name!r} is installed.{hint} Installed callback names: {known}.")
    return entry.load()


def installed_default_callbacks(names: Iterable[str]) -> list[str]:
    """The default callbacks' catalogue ``names`` that are installed; with pa-core alone (none
    are), a warning says what to install."""
    names = list(names)
    installed = entries(CALLBACKS_GROUP)
    available = [name for name in names if name in installed]
    if len(available) < len(names):
        warnings.warn(
            "pa-callbacks is not installed, so the Trainer trains without progress output or metric logging. "
            "Install it with `pip install pa-callbacks`, or pass callbacks=() to silence this message.",
            UserWarning,
            stacklevel=3,
        )
    return available


def autoload_plugins() -> list[tuple[PluginEntry, Any]]:
    """Load every ``pa.plugins`` entry point unless switched off by the environment.

    ``PA_DISABLE_PLUGIN_AUTOLOAD`` (any non-empty value other than ``0``) turns autoload off;
    ``PA_DISABLE_PLUGINS=a,b`` skips the plugins named ``a`` and ``b``.
    """
    if os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() not in ("", "0"):
        return []
    blocked = {name.strip() for name in os.environ.get(DISABLE_PLUGINS_ENV, "").split(",") if name.strip()}
    return [(entry, entry.load()) for name, entry in sorted(entries(PLUGINS_GROUP).items()) if name not in blocked]


@cache
def distribution_of_module(module_name: str) -> str | None:
    """The distribution that installed the top-level package of ``module_name``, if known."""
    top = module_name.split(".")[0]
    dists = metadata.packages_distributions().get(top)
    return dists[0] if dists else None

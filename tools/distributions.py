"""pa's distributions, one entry each: the table the nox sessions are made from.

Each entry gives a distribution's name and folder, the extras its tests use, what else its tests need
(test requirements: installed for its tests only, never declared by the distribution) and the environment
variables its install and tests need. From one entry, noxfile.py makes a session named after the
distribution without its ``pa-`` prefix (``nox -s core``), which installs the distribution's wheel from
./dist with only what it declares plus the test tools and test requirements, and runs the tests in its
``tests`` folder against that install. The ``build`` session builds every wheel in the table, and the
``integration`` session installs them all.

Adding a distribution is one line in DISTRIBUTIONS (dependencies before dependents); CONTRIBUTING.md
lists the other places that name every distribution (layering rules, docs, ruff's first-party list).

This module imports nothing outside the standard library: noxfile.py reads it before any session runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What every distribution's tests run with, besides the distribution itself.
TEST_TOOLS = ("pytest", "pytest-xdist", "numpy")


@dataclass(frozen=True)
class Distribution:
    """One distribution of the repository, as its nox session installs and tests it."""

    name: str  # the distribution name, "pa-core"
    folder: str  # where its pyproject.toml is, relative to the repository root
    extras: tuple[str, ...] = ()  # extras its tests use: installed as name[extra,...]
    test_requires: tuple[str, ...] = ()  # what its tests need that it does not declare
    env: dict[str, str] = field(default_factory=dict)  # environment of its install and its tests

    @property
    def session(self) -> str:
        """The nox session that tests it: the name without ``pa-`` (``core``)."""
        return self.name.removeprefix("pa-")

    @property
    def package(self) -> str:
        """Its import package (``pa_core``)."""
        return self.name.replace("-", "_")

    @property
    def tests(self) -> str:
        """Its tests folder, relative to the repository root."""
        return f"{self.folder}/tests"

    @property
    def extras_suffix(self) -> str:
        """The extras its tests use, as written after a requirement or a wheel file (``[plot]``, or nothing)."""
        return f"[{','.join(self.extras)}]" if self.extras else ""

    @property
    def requirement(self) -> str:
        """The distribution with the extras its tests use, as a requirement (``pa-callbacks[plot]``)."""
        return self.name + self.extras_suffix


DISTRIBUTIONS: dict[str, Distribution] = {
    dist.name: dist
    for dist in (
        # The multi-process sample-count tests read `datasets` and torchdata's StatefulDataLoader.
        Distribution("pa-core", "packages/core", test_requires=("datasets", "torchdata")),
        Distribution("pa-callbacks", "packages/callbacks", extras=("plot",)),
        # The tests check that no wandb-core process outlives a run (psutil lists child processes).
        Distribution("pa-wandb", "packages/integrations/wandb", test_requires=("psutil",)),
        Distribution("pa-torchmetrics", "packages/integrations/torchmetrics"),
        # DeepSpeed builds from its sdist; DS_BUILD_OPS=0 compiles none of its C++/CUDA ops ahead of time.
        Distribution("pa-deepspeed", "packages/integrations/deepspeed", env={"DS_BUILD_OPS": "0"}),
        # Its tests read TensorBoard's event files and MLflow's store back with their own readers.
        Distribution("pa-tracking", "packages/integrations/tracking", extras=("tensorboard", "mlflow")),
        # The plugin-template test builds and installs the generated plugin with pip and hatchling.
        Distribution(
            "pa-examples",
            "packages/examples",
            extras=("metrics", "wandb", "tensorboard", "streaming"),
            test_requires=("hatchling", "pip"),
        ),
    )
}

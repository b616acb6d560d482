"""Cross-package tests: run with every distribution installed (nox session `integration`)."""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and a process forked (by the two-process
# tests) after OpenMP has started its thread pool can hang in its first parallel region.
torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_DISTRIBUTIONS = {"pa-fixture-plugin": "pa-fixture-plugin", "pa-fixture-rival": "pa-fixture-rival"}


@pytest.fixture(scope="session")
def fixture_plugins_installed():
    """The fixture plugin projects, really pip-installed into this environment.

    nox installs them before the run; run directly, the tests install them here once.
    """
    missing = []
    for dist, folder in FIXTURE_DISTRIBUTIONS.items():
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            missing.append(str(FIXTURES / folder))
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *missing], check=True)
    return True

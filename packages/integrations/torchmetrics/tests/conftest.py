import pytest
import torch

# Tiny models gain nothing from intra-op threads, and processes forked by the two-process
# test can hang if OpenMP started a thread pool first.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_autoloaded_plugins(monkeypatch):
    """Third-party plugins installed in the environment must not change these tests."""
    monkeypatch.setenv("PA_DISABLE_PLUGIN_AUTOLOAD", "1")

"""pa-examples: runnable examples for pa, listed by `pa-examples list` and run by `pa-examples run NAME`."""

from pa_examples.__about__ import __version__

__all__ = ["__version__"]

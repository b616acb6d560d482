"""The benchmarks as a nox session, registered in noxfile.py and not part of the default run:

    nox -s bench                    the full run (about 10 minutes on a 2-core CPU), results in benchmarks/results/
    nox -s bench -- --quick         a short run to check that everything works
    nox -s bench -- --out DIR       write the JSON and the chart somewhere else

The session installs pa-core and pa-callbacks from this checkout next to the frameworks they are compared with:
pytorch-accelerated 0.1.61 (pinned: the version pa's behaviour is described against) and Lightning. Every install is
constrained by constraints.txt, so torch stays the CPU build; the session checks that before measuring anything.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tools import nox_install

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
PA = (str(ROOT / "packages/core"), str(ROOT / "packages/callbacks"))
COMPARED = ("pytorch-accelerated==0.1.61", "lightning")
BENCH_TOOLS = ("numpy", "matplotlib")
# A CUDA build of torch here would mean constraints.txt was bypassed: several GB, and not what is measured.
CHECK_TORCH = (
    "import torch; assert torch.version.cuda is None, f'torch {torch.__version__} is a CUDA build'; "
    "print('torch', torch.__version__)"
)


def bench(session) -> None:
    """Install pa and the frameworks it is compared with, then run benchmarks/run.py with the session's arguments."""
    start = time.monotonic()
    # A reused environment may hold pa built from older sources under the same version number.
    nox_install.uninstall(session, "pa-core", "pa-callbacks")
    nox_install.install(session, *BENCH_TOOLS, *PA, *COMPARED)
    session.run("python", "-c", CHECK_TORCH, silent=False)
    installed = time.monotonic()
    session.run("python", str(ROOT / "benchmarks/run.py"), *session.posargs)
    session.log(f"bench: install {installed - start:.0f} s, benchmark {time.monotonic() - installed:.0f} s")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("register this function in noxfile.py; see the module docstring")

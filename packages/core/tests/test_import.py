"""`import pa_core` is cheap and pulls in nothing of the optional libraries."""

import subprocess
import sys

FORBIDDEN = (
    "tqdm",
    "wandb",
    "deepspeed",
    "torchmetrics",
    "pa_callbacks",
    "pa_wandb",
    "pa_torchmetrics",
    "pa_deepspeed",
    "pa_examples",
)


def test_import_pa_core_adds_no_optional_library():
    # torch itself imports tqdm when it happens to be installed, so compare with what
    # importing torch and accelerate alone already loads.
    code = (
        "import sys, torch, accelerate\n"
        "before = set(sys.modules)\n"
        "import pa_core, pa_core.testing\n"
        f"bad = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_fresh_import_without_optional_libraries_installed():
    code = (
        "import sys, importlib.util\n"
        "import pa_core\n"
        f"loaded = sorted(m for m in {FORBIDDEN!r} if m in sys.modules and importlib.util.find_spec(m) is None)\n"
        f"installed_but_loaded = sorted(m for m in ('wandb', 'deepspeed', 'torchmetrics') if m in sys.modules)\n"
        "print(loaded, installed_but_loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] []"

"""The rows of the hardware matrix: how each configuration is launched and what it needs.

Imported by noxfile.py (without torch installed) and by run_row.py.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Row:
    name: str
    launcher: str  # "accelerate", "torchrun", "torchrun-deepspeed", "two-node" or "notebook"
    configs: tuple[str, ...]
    gpus: int = 0
    distributions: tuple[str, ...] = ("pa-core",)  # the pa distributions the row installs (from their wheels)
    description: str = ""


ROWS: dict[str, Row] = {
    row.name: row
    for row in (
        Row("cpu", "accelerate", ("cpu.yaml",), description="one CPU process"),
        Row("cpu-bf16", "accelerate", ("cpu-bf16.yaml",), description="one CPU process, bf16 autocast"),
        Row("cpu-2proc", "torchrun", ("cpu-2proc.yaml",), description="two CPU processes over gloo, via torchrun"),
        Row(
            "cpu-notebook",
            "notebook",
            ("cpu-notebook.yaml",),
            description="two CPU processes started from Python with accelerate.notebook_launcher",
        ),
        Row(
            "cpu-2node",
            "two-node",
            ("cpu-2node.yaml",),
            description="two machines (one process each) simulated on loopback: two launches, machine ranks 0 and 1",
        ),
        Row(
            "deepspeed-cpu",
            "torchrun-deepspeed",
            ("deepspeed-cpu-zero2.yaml", "deepspeed-cpu-zero3.yaml"),
            distributions=("pa-core", "pa-deepspeed"),
            description="DeepSpeed ZeRO-2 and ZeRO-3 on two CPU processes (torchrun), through pa-deepspeed's callback",
        ),
        Row("cuda", "accelerate", ("cuda.yaml",), gpus=1, description="one GPU, fp32"),
        Row("cuda-bf16", "accelerate", ("cuda-bf16.yaml",), gpus=1, description="one GPU, bf16"),
        Row("cuda-fp16", "accelerate", ("cuda-fp16.yaml",), gpus=1, description="one GPU, fp16 with a gradient scaler"),
        Row(
            "multi-gpu",
            "notebook",
            ("multi-gpu.yaml",),
            gpus=2,
            description="every GPU, launched with accelerate.notebook_launcher",
        ),
        Row(
            "fsdp",
            "accelerate",
            ("fsdp-1gpu.yaml",),
            gpus=1,
            description="FSDP2 in one process on one GPU, bf16: fully_shard wrapping, sharded optimizer and training "
            "state, full-state checkpoints",
        ),
        Row("fsdp-2gpu", "accelerate", ("fsdp-2gpu.yaml",), gpus=2, description="FSDP2 over two GPUs, bf16"),
    )
}


def gpu_count() -> int:
    """GPUs on this machine, from nvidia-smi (works without torch installed)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


def missing_hardware(row: Row) -> str | None:
    """Why the row cannot run here, in one line, or None."""
    found = gpu_count()
    if found < row.gpus:
        return f"{row.name} needs {row.gpus} GPU(s); this machine has {found}"
    return None

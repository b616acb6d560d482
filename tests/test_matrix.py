"""The hardware matrix cannot pass vacuously: a wrong expectation in the suite fails the row."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wrong_step_count_fails_the_cpu_row(tmp_path):
    suite = tmp_path / "suite"
    shutil.copytree(ROOT / "matrix" / "suite", suite)
    test_file = suite / "test_training.py"
    source = test_file.read_text()
    right = 'assert recorder.count("on_train_update_end") == 4 * updates_per_epoch'
    assert right in source
    test_file.write_text(source.replace(right, right + " + 1"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "matrix" / "run_row.py"), "cpu", "--suite", str(suite), "--", "-k", "counts"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "matrix row cpu: FAILED" in result.stdout
    assert "1 failed" in result.stdout

"""The test loop's own tools: the distribution table, how uv is pointed at pip's wheels, the CUDA-torch check,
and the pruning of reused environments."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import check_dists, nox_install  # noqa: E402
from tools.distributions import DISTRIBUTIONS  # noqa: E402


def test_the_distribution_table_names_every_distribution_by_its_pyproject_name():
    in_table = {(dist.name, dist.folder) for dist in DISTRIBUTIONS.values()}
    in_repository = {
        (check_dists.read_project(folder).name, str(folder.relative_to(ROOT)))
        for folder in check_dists.discover_projects(ROOT)
    }
    assert in_table == in_repository


def test_uv_is_given_the_find_links_pip_uses_for_install():
    listing = textwrap.dedent(
        """\
        :env:.find-links='/from/env /and/more'
        global.find-links='/opt/wheels'
        global.index-url='https://mirror.example/simple'
        global.cert='/etc/ssl/certs/ca-certificates.crt'
        """
    )
    pip = nox_install.parse_pip_config(listing)
    assert pip["find-links"] == "/from/env /and/more"  # PIP_FIND_LINKS wins over the files, as in pip
    settings = nox_install.uv_settings(pip, environ={})
    assert settings["UV_FIND_LINKS"] == "/from/env,/and/more"  # uv separates them with commas
    assert settings["UV_DEFAULT_INDEX"] == "https://mirror.example/simple"
    assert settings["UV_BUILD_CONSTRAINT"].endswith("constraints.txt")

    from_files = nox_install.parse_pip_config("global.find-links='/opt/wheels'\ninstall.find-links='/inst'\n")
    assert from_files["find-links"] == "/inst"
    # A UV_* setting of the user's own is left alone.
    own = nox_install.uv_settings(pip, environ={"UV_FIND_LINKS": "/mine", "UV_INDEX_URL": "https://mine"})
    assert "UV_FIND_LINKS" not in own and "UV_DEFAULT_INDEX" not in own


def _fake_distribution(site: Path, name: str, requires: tuple[str, ...] = ()) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", *(f"Requires-Dist: {r}\n" for r in requires)]
    (info / "METADATA").write_text("".join(lines))


def _run_tool(script: str, *args: str, site: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "tools" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})


def test_check_torch_refuses_an_environment_with_cuda_packages(tmp_path):
    assert _run_tool("check_torch.py", site=tmp_path).returncode == 0

    _fake_distribution(tmp_path, "nvidia-cublas")
    result = _run_tool("check_torch.py", site=tmp_path)
    assert result.returncode == 1
    assert "came with CUDA packages (nvidia-cublas, ...) on a machine without a GPU" in result.stdout


def test_prune_env_lists_what_the_named_requirements_do_not_need(tmp_path):
    _fake_distribution(tmp_path, "pa-fake-app", requires=("pa-fake-lib", "pa-fake-extra-only; extra == 'x'"))
    _fake_distribution(tmp_path, "pa-fake-lib")
    _fake_distribution(tmp_path, "pa-fake-extra-only")
    _fake_distribution(tmp_path, "pa-fake-leftover")

    listed = set(_run_tool("prune_env.py", "pa-fake-app", site=tmp_path).stdout.split())
    assert {"pa-fake-leftover", "pa-fake-extra-only"} <= listed
    assert not {"pa-fake-app", "pa-fake-lib"} & listed

    with_extra = set(_run_tool("prune_env.py", "pa-fake-app[x]", site=tmp_path).stdout.split())
    assert "pa-fake-extra-only" not in with_extra and "pa-fake-leftover" in with_extra

"""A wheel built from the repository and installed without ``-e`` into a
fresh virtual environment works outside the checkout: the built-in registry
ships inside the package, the plugins register, `demo` checks what it needs
before making clips.

The wheel is built offline (``--no-build-isolation``, with the setuptools of
this environment) and installed with ``--no-deps``; the fresh environment
sees the dependencies (torch, zarr, ...) through a ``.pth`` file naming this
environment's site-packages, so nothing is downloaded. Only the package
itself comes from the wheel, and the tests check that it does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

from conftest import REPO

SOURCES = ("pyproject.toml", "README.md", "aanbench", "plugins")


def _setuptools_dir() -> str:
    """A site directory holding setuptools >= 77 (what pyproject.toml requires)."""
    for dist in metadata.distributions():
        if (dist.metadata["Name"] or "").lower() != "setuptools":
            continue
        major = int(dist.version.split(".")[0])
        if major >= 77:
            return str(dist.locate_file(""))
    pytest.fail("building the wheel needs setuptools>=77 in this environment (`make setup` installs it)")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AANBENCH_REGISTRY", "AANBENCH_PLUGINS", "AANBENCH_DISABLE_PLUGINS")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin folder."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:  # build from a copy: the build writes build/ and *.egg-info beside the sources
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    dist = base / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(dist)], capture_output=True, text=True,
                       env=_clean_env(PYTHONPATH=_setuptools_dir(), PIP_DISABLE_PIP_VERSION_CHECK="1"), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    [wheel] = dist.glob("aanbench-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                        str(wheel)], capture_output=True, text=True,
                       env=_clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (Path(purelib) / "zz_aanbench_test_deps.pth").write_text("\n".join(deps) + "\n")
    return venv / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd,
                          env=_clean_env(**env), timeout=300)


def test_the_wheel_is_what_runs(installed: Path, tmp_path: Path) -> None:
    code = "import aanbench, aanbench_plugins, aanbench.registry as r; " \
           "print(aanbench.__file__); print(aanbench_plugins.__file__); print(r.builtin_registry_path())"
    r = _run(installed, "python", "-c", code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    venv = installed.parent.resolve()
    for line in r.stdout.split():
        assert Path(line).resolve().is_relative_to(venv), r.stdout  # not the checkout
    assert r.stdout.split()[-1].endswith("registry.toml")


def test_experiments_from_any_directory(installed: Path, tmp_path: Path) -> None:
    r = _run(installed, "aanbench", "experiments", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [Path(f).resolve().is_relative_to(installed.parent.resolve()) for f in doc["files"]] == [True]
    names = {e["name"]: e for e in doc["experiments"]}
    assert {"feature-aan", "feature-aan-video", "feature-aan-audio", "ridge", "mean"} <= set(names)
    assert names["feature-aan"]["origin"] == "built-in"

    mine = tmp_path / "mine.toml"
    mine.write_text('[experiments.ridge-video]\nextends = "ridge"\nfeatures = "video"\n')
    r = _run(installed, "aanbench", "experiments", "--json", cwd=tmp_path, AANBENCH_REGISTRY=str(mine))
    assert r.returncode == 0, r.stderr
    rows = {e["name"]: e for e in json.loads(r.stdout)["experiments"]}
    assert rows["ridge-video"]["origin"] == str(mine) and "feature-aan" in rows


def test_demo_checks_prerequisites_before_any_work(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    r = _run(installed, "aanbench", "demo", "--workdir", str(work), "--leaderboard", str(tmp_path / "lb" / "demo.md"),
             cwd=tmp_path, AANBENCH_DISABLE_PLUGINS="logmel,baselines")
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "demo cannot start" in out and "extractor 'logmel' is not installed" in out
    assert "model plugin 'ridge' is not installed" in out and "model plugin 'mean' is not installed" in out
    assert not (work / "data").exists()  # no clip was made


def test_every_source_and_data_file_is_in_the_wheel(installed: Path) -> None:
    """Each file under aanbench/ and plugins/ (modules, registry, data such as
    the reported-results CSVs) is installed: a package or data file missing
    from pyproject.toml shows up here, not on a user's machine."""
    r = subprocess.run([str(installed / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True)
    site = Path(r.stdout.strip())
    missing = []
    for src, dst in (("aanbench", "aanbench"), ("plugins", "aanbench_plugins")):
        for p in sorted((REPO / src).rglob("*")):
            if not p.is_file() or "__pycache__" in p.parts or p.suffix == ".pyc":
                continue
            rel = p.relative_to(REPO / src)
            if not (site / dst / rel).is_file():
                missing.append(f"{src}/{rel}")
    assert not missing, f"not in the wheel: {missing}"

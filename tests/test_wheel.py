"""The wheel does the main job: built from this tree, installed in a fresh
virtualenv outside the repository, ``hotparams --version`` and ``hotparams
demo`` work there, and neither the build nor the install warns."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import hotparams
from hotparams.server import redis_server_binary

from .conftest import need

ROOT = Path(__file__).resolve().parent.parent

#: the machine's pip configuration names index folders that may be missing:
#: pip's "Location ... is ignored" lines are about the machine, not the wheel
MACHINE_NOISE = re.compile(r"^WARNING: Location '.*' is ignored", re.M)


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HOTPARAMS_", "PYTHON"))}
    environ.update(env)
    proc = subprocess.run(
        argv, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def warnings_in(proc: subprocess.CompletedProcess[str]) -> list[str]:
    text = MACHINE_NOISE.sub("", proc.stdout + proc.stderr)
    return [line for line in text.splitlines() if re.search(r"warn|deprecat", line, re.I)]


@pytest.mark.slow
def test_the_wheel_installed_outside_the_checkout_runs_the_demo(tmp_path: Path) -> None:
    need(redis_server_binary() is not None, "redis-server (on PATH)")
    started = time.monotonic()
    dist = tmp_path / "dist"
    # from a copy of what the sdist holds: setuptools builds in the source tree
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "hotparams", source / "hotparams", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)],
        cwd=tmp_path,
    )
    assert warnings_in(built) == []
    stages = {"build": time.monotonic()}
    (wheel,) = dist.glob("hotparams-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"hotparams-{hotparams.__version__}.dist-info/METADATA").decode()
    assert "hotparams/demo/worker.py" in names and "hotparams/lua/hotparams.lua" in names
    assert not any(n.startswith(("workers/", "tests/")) for n in names)
    assert f"hotparams-{hotparams.__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata

    venv = tmp_path / "venv"
    # a venv of its own, without a pip of its own (ensurepip takes seconds):
    # this pip installs into it (--python), from its cache where it can
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    stages["venv"] = time.monotonic()
    python = str(venv / "bin" / "python")
    installed = run(
        [sys.executable, "-m", "pip", "--python", python, "install", str(wheel)], cwd=tmp_path
    )
    stages["install"] = time.monotonic()
    assert warnings_in(installed) == []

    elsewhere = tmp_path / "elsewhere"  # no checkout here, nor on the path
    elsewhere.mkdir()
    where = run(
        [str(venv / "bin" / "python"), "-c", "import hotparams; print(hotparams.__file__)"],
        cwd=elsewhere,
    )
    assert where.stdout.startswith(str(venv))
    version = run([str(venv / "bin" / "hotparams"), "--version"], cwd=elsewhere)
    stages["version"] = time.monotonic()
    assert version.stdout == f"hotparams {hotparams.__version__}\n"
    demo = run(
        [str(venv / "bin" / "hotparams"), "demo", "--workers", "2", "--pace", "0.1"],
        cwd=elsewhere,
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        COLUMNS="100",
        HOTPARAMS_DEMO_EMBEDDED="redis-server",
    )
    assert "2/2 on v6" in demo.stdout, demo.stdout
    assert "Redis stopped, temporary files removed" in demo.stdout
    stages["demo"] = time.monotonic()
    marks = [started, *stages.values()]
    took = ", ".join(
        f"{name} {b - a:.1f} s" for name, a, b in zip(stages, marks, marks[1:], strict=False)
    )
    print(f"wheel test: {took}; total {marks[-1] - started:.1f} s")

"""The docs: every python example of each page (docs/*.md) runs, in order,
in a fresh scope of its own, against a real Redis (``HOTPARAMS_URL`` is only
in the environment: a page that works when pasted defines what it uses);
every page is in the MkDocs nav, and ``mkdocs build --strict`` passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hotparams

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def run_page(path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a page's python blocks in order in one fresh scope, then close
    the Bus and handles it left open."""
    monkeypatch.setenv("HOTPARAMS_URL", redis_url)
    scope: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    try:
        for index, block in enumerate(python_blocks(path)):
            name = f"{path.relative_to(ROOT)} python block {index + 1}"
            exec(compile(block, name, "exec", dont_inherit=True), scope)
    finally:
        for value in list(scope.values()):
            if isinstance(value, hotparams.Live | hotparams.Bus):  # never a proxy of flask's
                value.close()


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.stem)
def test_every_python_example_of_a_page_runs_pasted_in_order(
    page: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_page(page, redis_url, monkeypatch)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = {next(iter(entry.values())) for entry in config["nav"]}
    assert listed == {p.name for p in PAGES}


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "openfeature" / "index.html").is_file()

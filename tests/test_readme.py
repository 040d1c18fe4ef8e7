"""Every python example in the README runs, in order, against a real Redis
(the docs pages' examples: tests/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_python_examples_run(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pasted in order into one session they work: nothing is defined for them
    but ``$HOTPARAMS_URL`` in the environment."""
    blocks = python_blocks()
    assert len(blocks) >= 3
    monkeypatch.setenv("HOTPARAMS_URL", redis_url)
    scope: dict[str, object] = {"__name__": "readme"}
    try:
        for index, block in enumerate(blocks):
            code = compile(block, f"README.md python block {index + 1}", "exec", dont_inherit=True)
            exec(code, scope)
    finally:
        for name in ("live", "alive"):
            handle = scope.get(name)
            if handle is not None and hasattr(handle, "close"):
                handle.close()
        bus = scope.get("bus")
        if bus is not None and hasattr(bus, "close"):
            bus.close()

"""What importing hotparams and its command line loads: the heavy modules
(the Bus and the modules behind it, rich) only where a verb uses them
(tests/test_cli_conventions.py pins what ``get`` loads).
Start-up time is what these imports cost (``python -X importtime -m
hotparams get NS``); these tests pin which modules load, not how long they
take.  Each check runs in a fresh interpreter: this one has imported
everything already."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = ("redis", "redis.asyncio", "pydantic", "rich", "typer", "hotparams.bus")


def loaded_after(code: str, *modules: str) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import sys
        print(" ".join(m for m in {list(modules)!r} if m in sys.modules))
        """)
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout.split()


def test_import_hotparams_loads_no_client_library_and_no_model_library() -> None:
    assert loaded_after("import hotparams", *HEAVY) == []


def test_the_cli_app_and_its_version_load_neither_the_bus_nor_rich() -> None:
    """``hotparams --version`` builds the app only: the Bus (hotparams.core,
    fleet, library, ...) and rich load with the verbs, which import them.
    (redis-py still loads: hotparams.outcomes, the exit-code table, imports
    writes.BatchError, whose module imports redis.exceptions.)"""
    code = """
        import contextlib, io
        from hotparams.cli.app import run
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert run(["--version"]) == 0
        assert out.getvalue().startswith("hotparams "), out.getvalue()
        """
    assert loaded_after(code, "rich", "hotparams.bus", "hotparams.core", "hotparams.fleet") == []

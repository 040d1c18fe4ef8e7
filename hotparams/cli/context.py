"""What every verb shares: the connection, the consoles, the exit codes.

The exit code of an error is its row of :data:`hotparams.outcomes.OUTCOMES`
(the table the admin API and the console read too; docs/cli.md lists the
codes).
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import SchemaError
from ..outcomes import EXIT_NAMES, NotConverged, NotFound, UsageProblem, outcome_of

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console

    from ..bus import Bus

# The Bus, pydantic and rich are imported where they are used: building the
# app (``hotparams --version``, completion) loads neither the Bus's modules
# nor rich (tests/test_cli_imports.py pins it).

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "EXIT_NAMES",
    "AuthorOpt",
    "ExpectOpt",
    "JsonOpt",
    "NamespaceArg",
    "NotConverged",
    "NotFound",
    "ReasonOpt",
    "State",
    "TimeoutOpt",
    "WaitOpt",
    "exit_code_for",
    "load_model",
    "state_of",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: how long ``--wait`` waits for the fleet, in seconds
DEFAULT_TIMEOUT = 10.0

#: settings of the CLI's Bus: an operator wants a fast, clear failure
CLI_SETTINGS: dict[str, Any] = {"retry_attempts": 2, "retry_deadline": 2.0, "connect_timeout": 2.0}


def exit_code_for(exc: BaseException) -> int:
    """The exit code of ``exc`` (:func:`hotparams.outcomes.outcome_of`)."""
    return outcome_of(exc).exit_code


@dataclass
class State:
    """The global options, and the Bus made from them on first use."""

    url: str = DEFAULT_URL
    #: ``--json`` was given (before or after the verb)
    json: bool = False
    _bus: Bus | None = None

    @functools.cached_property
    def out(self) -> Console:
        """stdout as a rich console (made on first use: ``--json`` needs none)."""
        from .render import console

        return console()

    @functools.cached_property
    def err(self) -> Console:
        from .render import console

        return console(stderr=True)

    def bus(self) -> Bus:
        if self._bus is None:
            from ..bus import connect

            self._bus = connect(self.url, **CLI_SETTINGS)
        return self._bus

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None


def state_of(ctx: typer.Context) -> State:
    obj = ctx.find_object(State)
    if obj is None:  # a verb invoked without the group (tests of one command)
        obj = ctx.ensure_object(State)
    return obj


def cli_source() -> str:
    """The audit's "from where" of a change made with this CLI."""
    return f"cli:{socket.gethostname()}"


def load_model(spec: str) -> type[BaseModel]:
    """Import ``module:Model`` (the current directory first on the path)."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise UsageProblem(f"--schema must be module:Model, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageProblem(f"--schema {spec}: cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself fails: show why, in one line
        raise UsageProblem(
            f"--schema {spec}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageProblem(
                f"--schema {spec}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    from pydantic import BaseModel

    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise SchemaError(f"--schema {spec}: {attr} is not a pydantic model class")
    return obj


NamespaceArg = Annotated[str, typer.Argument(metavar="NS", help="The namespace, e.g. chat.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output: JSON on stdout.")]
AuthorOpt = Annotated[
    str | None,
    typer.Option("--author", help="Who makes the change (audit). Default: the OS user."),
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (audit).")]
ExpectOpt = Annotated[
    int | None,
    typer.Option(
        "--expect-version",
        min=0,
        help="Change only if the namespace is still at this version (else exit 4).",
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="After the write, wait until every live worker runs the new version (else exit 7).",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=0, metavar="S", help="How long --wait waits, in seconds."),
]

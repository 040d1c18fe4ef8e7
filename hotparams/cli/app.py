"""The ``hotparams`` console script: a typer app, and the one place where
errors become exit codes and one-line messages (never a traceback).

A later verb (``demo``) is a function taking ``ctx: typer.Context``
registered with ``app.command(...)`` below; a group of verbs (``variant``)
is a typer app added with ``app.add_typer``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from ..redact import terminal_safe
from . import commands, lifecycle
from .console import console
from .context import DEFAULT_URL, State, exit_code_for
from .demo import demo
from .fleet import status
from .install import install
from .variant import variant_app
from .watch import watch

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="hotparams",
    help="Change the runtime parameters of a running fleet, safely (Redis).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="HOTPARAMS_URL",
            metavar="URL",
            help="redis://, rediss:// or unix:// URL of the Redis.",
            show_default=True,
        ),
    ] = DEFAULT_URL,
) -> None:
    """Change the runtime parameters of a running fleet, safely (Redis).

    Exit codes: 0 ok, 1 other failure, 2 usage, 3 invalid value,
    4 version conflict, 5 Redis unreachable, 6 namespace, version or variant
    not found, 7 --wait: not every live worker applied the change in time,
    8 permission denied (the Redis user's ACL).
    """
    state = ctx.ensure_object(State)
    state.url = url
    ctx.call_on_close(state.close)


app.command("init")(commands.init)
app.command("get")(commands.get)
app.command("set")(commands.set_)
app.command("unset")(commands.unset)
app.command("history")(commands.history)
app.command("diff")(commands.diff)
app.command("rollback")(commands.rollback)
app.command("schema")(commands.schema)
app.command("restore")(commands.restore)
app.command("watch")(watch)
app.command("status")(status)
app.command("demo")(demo)
app.command("install")(install)
app.command("list")(lifecycle.list_)
app.command("configure")(lifecycle.configure)
app.command("migrate")(lifecycle.migrate)
app.command("delete")(lifecycle.delete)
app.command("console")(console)
app.add_typer(variant_app)


def _click_class(name: str) -> type[Exception]:
    """A click exception class as typer uses it (typer >= 0.2x vendors click)."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name:
            return cls
    raise RuntimeError(f"typer has no click {name}")  # pragma: no cover


_ClickException = _click_class("ClickException")
_UsageError = _click_class("UsageError")


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()


def _message(exc: Exception) -> str:
    format_message = getattr(exc, "format_message", None)
    return str(format_message()) if callable(format_message) else str(exc)


def _say(message: str) -> None:
    """The one line on stderr of a failed command (data it quotes, e.g. a
    worker id or a Redis error, shows its control characters as escapes)."""
    typer.echo(f"hotparams: error: {terminal_safe(_one_line(message))}", err=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv``; returns the exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="hotparams", standalone_mode=False)
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # typer printed the help already
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        _say(f"{_message(exc)}{hint}")
        return 2
    except _ClickException as exc:
        _say(_message(exc))
        return int(getattr(exc, "exit_code", 1))
    except typer.Abort:
        return 130
    except Exception as exc:
        if os.environ.get("HOTPARAMS_DEBUG") == "1":
            raise
        code = exit_code_for(exc)
        message = _message(exc) or type(exc).__name__
        if code == 1:
            message = f"{type(exc).__name__}: {message}"
        _say(message)
        return code
    return result if isinstance(result, int) else 0


def main() -> None:
    """The console script."""
    sys.exit(run())

"""The ``hotparams`` console script: a typer app, and the one place where
errors become exit codes and one-line messages (never a traceback).

A verb is a function taking ``ctx: typer.Context`` (or a typer app, for a
group of verbs such as ``variant``), named in :data:`VERBS` as
``"module:attribute"``: its module is imported, and its click command
built, only when the verb runs (or ``--help`` lists it), so that
``hotparams get`` does not pay for ``demo``'s or ``watch``'s imports.

Global options (:data:`GLOBAL_OPTIONS`: ``--url``, ``--json``) are accepted
before or after the verb: each verb's command gets them added when it is
built.  ``--json`` makes errors JSON too, on stderr:
``{"error": {"code": 6, "name": "not_found", "message": "..."}}``.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
import typer.completion
from typer.core import TyperGroup

from .._version import __version__
from ..errors import HotParamsError
from ..messages import one_line
from ..redact import terminal_safe
from .context import DEFAULT_URL, EXIT_NAMES, State, exit_code_for

__all__ = ["GLOBAL_OPTIONS", "VERBS", "app", "main", "run"]

#: verb -> ``module:attribute`` (relative to this package): a command
#: function, or a ``typer.Typer`` for a group of verbs
VERBS: dict[str, str] = {
    "init": ".commands:init",
    "get": ".commands:get",
    "set": ".commands:set_",
    "unset": ".commands:unset",
    "history": ".commands:history",
    "diff": ".commands:diff",
    "rollback": ".commands:rollback",
    "schema": ".commands:schema",
    "restore": ".commands:restore",
    "watch": ".watch:watch",
    "status": ".fleet:status",
    "demo": ".demo:demo",
    "install": ".install:install",
    "acl": ".acl:acl",
    "secrets": ".secrets:secrets_app",
    "list": ".lifecycle:list_",
    "configure": ".lifecycle:configure",
    "migrate": ".lifecycle:migrate",
    "delete": ".lifecycle:delete",
    "console": ".console:console",
    "variant": ".variant:variant_app",
}


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module, __package__), attr)


def _set_url(ctx: typer.Context, _param: Any, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(State).url = value


def _set_json(ctx: typer.Context, _param: Any, value: bool) -> None:
    if value:
        ctx.ensure_object(State).json = True


def _globals(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            expose_value=False,
            callback=_set_url,
            help="redis://, rediss:// or unix:// URL of the Redis (also before the verb).",
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            expose_value=False,
            callback=_set_json,
            help="Machine output: JSON on stdout, errors as JSON on stderr.",
        ),
    ] = False,
) -> None:
    """The options every verb accepts too, after its name (never called)."""


@functools.cache
def _global_options() -> list[Any]:
    """The click options of :func:`_globals`, built once."""
    info = typer.models.CommandInfo(name="globals", callback=_globals)
    command = typer.main.get_command_from_info(
        info, pretty_exceptions_short=True, rich_markup_mode=None
    )
    return list(command.params)


#: the names of the options of :func:`_global_options`
GLOBAL_OPTIONS = ("--url", "--json")


def _with_globals(command: Any) -> Any:
    """Add the global options a command does not define itself (recursively)."""
    taken = {opt for param in command.params for opt in getattr(param, "opts", ())}
    for param in _global_options():
        if not taken.intersection(param.opts):
            command.params.append(param)
    for sub in getattr(command, "commands", {}).values():
        _with_globals(sub)
    return command


class LazyGroup(TyperGroup):
    """The root group: builds a verb's command from :data:`VERBS` on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *VERBS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in VERBS:
            command = _build(cmd_name, _load(VERBS[cmd_name]))
            self.commands[cmd_name] = command
        return _with_globals(command) if command is not None else None


def _build(name: str, target: Any) -> Any:
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = name
        return group
    info = typer.models.CommandInfo(name=name, callback=target)
    return typer.main.get_command_from_info(
        info, pretty_exceptions_short=True, rich_markup_mode=app.rich_markup_mode
    )


app = typer.Typer(
    name="hotparams",
    cls=LazyGroup,
    help="Change the runtime parameters of a running fleet, safely (Redis).",
    no_args_is_help=True,
    add_completion=False,  # the root command gets them: see _completion_options
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hotparams {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="HOTPARAMS_URL",
            metavar="URL",
            help="redis://, rediss:// or unix:// URL of the Redis (also after the verb).",
            show_default=True,
        ),
    ] = DEFAULT_URL,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Machine output: JSON on stdout, errors as JSON on stderr."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version of hotparams and exit.",
        ),
    ] = False,
) -> None:
    """Change the runtime parameters of a running fleet, safely (Redis).

    Exit codes: 0 ok, 1 other failure, 2 usage, 3 invalid value,
    4 version conflict, 5 Redis unreachable, 6 namespace, version or variant
    not found, 7 --wait: not every live worker applied the change in time,
    8 permission denied (the Redis user's ACL).
    """
    state = ctx.ensure_object(State)
    state.url = url
    state.json = state.json or json_out
    ctx.call_on_close(state.close)


#: the shells whose completion script ``--show-completion SHELL`` prints (typer's)
_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _show_completion(ctx: typer.Context, param: Any, value: str | None) -> None:
    """``--show-completion SHELL``: the script of the shell named, always.

    typer's own option is a flag that asks shellingham which shell runs the
    process (its ancestors in /proc) and ignores a shell given after it, so
    ``--show-completion fish`` printed bash's script under bash, and
    ``Shell  not supported.`` (exit 1) in a process without a shell among
    its ancestors (a service, cron, a CI runner, a test run started in the
    background whose shell exited)."""
    if value is None or ctx.resilient_parsing:
        return
    if value not in _SHELLS:
        raise typer.BadParameter(
            f"{value!r} is not a shell hotparams completes (one of: {', '.join(_SHELLS)})"
        )
    typer.completion.show_callback(ctx, param, value)  # prints it and exits 0


def _completion_globals(
    show: Annotated[
        str | None,
        typer.Option(
            "--show-completion",
            metavar="SHELL",
            is_eager=True,
            expose_value=False,
            callback=_show_completion,
            help=f"Print the completion script of SHELL ({', '.join(_SHELLS)}) and exit.",
        ),
    ] = None,
) -> None:
    """The root's ``--show-completion SHELL`` (never called)."""


@functools.cache
def _show_completion_option() -> Any:
    info = typer.models.CommandInfo(name="completion", callback=_completion_globals)
    command = typer.main.get_command_from_info(
        info, pretty_exceptions_short=True, rich_markup_mode=None
    )
    (option,) = command.params
    return option


def _completion_options() -> list[Any]:
    """The root command's completion options: typer's ``--install-completion``
    (for the shell it detects; getting it also registers typer's completion
    classes, which answer ``_HOTPARAMS_COMPLETE``) and ``--show-completion
    SHELL`` (:func:`_show_completion`), in place of typer's."""
    install, _detecting_show = typer.main.get_install_completion_arguments()
    return [install, _show_completion_option()]


def _click_class(name: str) -> type[Exception]:
    """A click exception class as typer uses it (typer >= 0.2x vendors click)."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name:
            return cls
    raise RuntimeError(f"typer has no click {name}")  # pragma: no cover


_ClickException = _click_class("ClickException")
_UsageError = _click_class("UsageError")


def _message(exc: Exception) -> str:
    format_message = getattr(exc, "format_message", None)
    return str(format_message()) if callable(format_message) else str(exc)


def _options_end(argv: Sequence[str]) -> int:
    """Where the options end: at ``--``, else after the last argument."""
    return argv.index("--") if "--" in argv else len(argv)


def _wants_json(argv: Sequence[str]) -> bool:
    """``--json`` anywhere before ``--`` (errors are then JSON too)."""
    return "--json" in argv[: _options_end(argv)]


def _hoisted(argv: list[str]) -> list[str]:
    """``--json`` before the verb also reaches the verb (its ``json_out``):
    it is repeated after the verb's arguments, where the innermost command
    parses it."""
    if not _wants_json(argv):
        return argv
    end = _options_end(argv)
    return [*argv[:end], "--json", *argv[end:]]


def _sayer(json_errors: bool) -> Callable[[str, int], None]:
    def say(message: str, code: int) -> None:
        """The one line on stderr of a failed command (data it quotes, e.g. a
        worker id or a Redis error, shows its control characters as escapes;
        in JSON, everything but printable ASCII is escaped)."""
        if json_errors:
            doc = {"code": code, "name": EXIT_NAMES.get(code, "failure"), "message": message}
            typer.echo(json.dumps({"error": doc}), err=True)
        else:
            typer.echo(f"hotparams: error: {terminal_safe(one_line(message))}", err=True)

    return say


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    say = _sayer(_wants_json(args))
    args = _hoisted(args)
    command = typer.main.get_command(app)
    command.params.extend(_completion_options())
    try:
        result = command.main(args=args, prog_name="hotparams", standalone_mode=False)
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # typer printed the help already
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        say(f"{_message(exc)}{hint}", 2)
        return 2
    except _ClickException as exc:
        code = int(getattr(exc, "exit_code", 1))
        say(_message(exc), code)
        return code
    except typer.Abort:
        return 130
    except Exception as exc:
        if os.environ.get("HOTPARAMS_DEBUG") == "1":
            raise
        code = exit_code_for(exc)
        message = _message(exc) or type(exc).__name__
        if code == 1 and not isinstance(exc, HotParamsError):  # unexpected: name it
            message = f"{type(exc).__name__}: {message}"
        say(message, code)
        return code
    return result if isinstance(result, int) else 0


def main() -> None:
    """The console script (and ``python -m hotparams``)."""
    sys.exit(run())

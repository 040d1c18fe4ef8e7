"""``hotparams console``: the operators' web console on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel

from ..demo import terminate_as_interrupt
from .context import load_model, state_of
from .values import UsageProblem

__all__ = ["console"]


def _model_option(item: str) -> tuple[str, type[BaseModel]]:
    pattern, eq, spec = item.partition("=")
    if not eq or not pattern or not spec:
        raise UsageProblem(f"--schema must be NS=module:Model (NS may be a pattern), got {item!r}")
    return pattern, load_model(spec)


def console(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="The port (0: any free one).")
    ] = 8600,
    users: Annotated[
        Path | None,
        typer.Option(
            "--users",
            metavar="FILE",
            help='People and roles, JSON: {"ana": {"role": "editor", "token": "..."}} '
            "(tokens of 32+ characters). Default: one admin with a token printed at start.",
        ),
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", metavar="PATTERN", help="Show only these (repeatable)."),
    ] = None,
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, metavar="S", help="How long Publish waits for the fleet."),
    ] = 3.0,
    schema: Annotated[
        list[str] | None,
        typer.Option(
            "--schema",
            metavar="NS=MODULE:MODEL",
            help="Write namespaces matching NS (a pattern) through this pydantic model, "
            "as `set --schema` does: needed where the model has validators Redis cannot "
            "check (repeatable).",
        ),
    ] = None,
    behind_proxy: Annotated[
        bool,
        typer.Option(
            "--behind-proxy",
            help="TLS ends at a reverse proxy: trust its X-Forwarded-Proto/-For/-Host "
            "(the session cookie is then Secure).",
        ),
    ] = False,
) -> None:
    """Serve the operators' console (a web UI) for the Redis at --url."""
    state = state_of(ctx)
    try:
        from ..console.server import ConsoleServer, login_user, read_users
    except ImportError as exc:
        raise UsageProblem(
            f"the console needs Flask ({exc}): pip install 'hotparams[console]'"
        ) from None
    people = read_users(users) if users is not None else (login_user(),)
    models = [_model_option(item) for item in schema or ()]
    bus = state.bus()
    server = ConsoleServer(
        bus,
        people,
        host=host,
        port=port,
        namespaces=namespace or (),
        wait=wait,
        behind_proxy=behind_proxy,
        models=models,
    )
    out = state.out
    out.print(f"hotparams console on {server.url} (Ctrl-C to stop)")
    if users is None:
        user = people[0]
        out.print(f"sign in as {user.name} (admin) with this token: {user.token}", soft_wrap=True)
    try:
        with terminate_as_interrupt():  # SIGTERM stops it as Ctrl-C does
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()

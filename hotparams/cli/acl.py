"""``hotparams acl ROLE --namespace PATTERN... --user NAME``: the one
``ACL SETUSER`` line of a least-privilege Redis user (see :mod:`hotparams.acl`)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ..acl import ROLES, acl_user, setuser_op
from .context import JsonOpt, state_of
from .render import print_json
from .values import UsageProblem

__all__ = ["acl"]


def acl(
    ctx: typer.Context,
    role: Annotated[
        str,
        typer.Argument(metavar="ROLE", help=f"One of {', '.join(ROLES)} (see docs/security.md)."),
    ],
    namespaces: Annotated[
        list[str],
        typer.Option(
            "--namespace",
            metavar="PATTERN",
            help="A namespace or a glob of namespaces (team-*); repeatable.",
        ),
    ],
    user: Annotated[str, typer.Option("--user", metavar="NAME", help="The Redis user name.")],
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            metavar="VAR",
            help="Reset the user with the password in this environment variable "
            "(the line holds its SHA-256, never the password). Without: keep its passwords.",
        ),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Also send it to the Redis of --url (an admin).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Print the ACL SETUSER line of a Redis user for a hotparams ROLE on some namespaces."""
    state = state_of(ctx)
    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            raise UsageProblem(f"--password-env {password_env}: the variable is unset or empty")
    try:
        made = acl_user(role, namespaces, user, password)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    if apply:
        state.bus().run(setuser_op(made))
    if json_out:
        print_json(
            state.out,
            {
                "user": made.name,
                "role": made.role,
                "namespaces": list(made.namespaces),
                "rules": list(made.rules),
                "command": made.line(),
                "applied": apply,
            },
        )
    else:
        state.out.file.write(made.line() + "\n")

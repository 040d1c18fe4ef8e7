"""``hotparams secrets rotate NS``: re-encrypt a namespace's secret values
with the first key of ``HOTPARAMS_SECRET_KEYS`` (see :mod:`hotparams.sealing`)."""

from __future__ import annotations

import typer
from rich.text import Text

from .context import AuthorOpt, JsonOpt, NamespaceArg, ReasonOpt, cli_source, state_of
from .render import print_json

__all__ = ["secrets_app"]

secrets_app = typer.Typer(
    name="secrets",
    help="Secret fields encrypted at rest (keys: HOTPARAMS_SECRET_KEYS, the first encrypts).",
    no_args_is_help=True,
)


@secrets_app.command("rotate")
def rotate(
    ctx: typer.Context,
    namespace: NamespaceArg,
    author: AuthorOpt = None,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Re-encrypt every secret value of NS (and its variants') with the first key: a new version."""
    state = state_of(ctx)
    bus = state.bus()
    before, after, fields = bus.rotate_secrets(
        namespace, author=author, reason=reason or "secrets re-encrypted", source=cli_source()
    )
    if json_out or state.json:
        doc = {"namespace": namespace, "version": after, "previous": before, "fields": list(fields)}
        print_json(state.out, doc)
        return
    state.out.print(Text(f"{namespace}: version {before} -> {after}", style="bold"))
    state.out.print(f"  re-encrypted with the first key: {', '.join(fields) or 'no values'}")

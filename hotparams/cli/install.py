"""``hotparams install``: load or upgrade the Lua library (an admin's step)."""

from __future__ import annotations

import typer

from .context import JsonOpt, state_of
from .render import print_json

__all__ = ["install"]


def install(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Load or upgrade the hotparams library in Redis (needs the ACL
    permission function|load); never replaces a newer release."""
    state = state_of(ctx)
    result = state.bus().install()
    if json_out:
        info = result.info
        previous = result.previous
        print_json(
            state.out,
            {
                "action": result.action,
                "release": info.release,
                "api": info.api,
                "digest": info.digest,
                "previous": None if previous is None else previous.release,
            },
        )
        return
    state.out.print(result.describe(), markup=False)

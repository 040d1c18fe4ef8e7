"""The Lua library shipped as package data."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

__all__ = ["LIBRARY_NAME", "library_source", "library_version"]

LIBRARY_NAME = "hotparams"


@cache
def library_source() -> str:
    return files("hotparams").joinpath("lua/hotparams.lua").read_text(encoding="utf-8")


@cache
def library_version() -> str:
    match = re.search(r"^local LIBVERSION = '([^']+)'", library_source(), re.M)
    if not match:  # pragma: no cover - a packaging error
        raise RuntimeError("hotparams.lua has no LIBVERSION")
    return match.group(1)

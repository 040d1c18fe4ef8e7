"""The Lua library shipped as package data.

The library is one FUNCTION LOAD payload made of several ``.lua`` files,
concatenated in order (later files use the helpers of earlier ones).  Its
version is a digest of that source, written into the code at load time, so
a client always knows whether Redis runs exactly its library.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files

__all__ = ["LIBRARY_NAME", "PARTS", "library_source", "library_version"]

LIBRARY_NAME = "hotparams"
#: the files of the library, in load order (the first holds the #!lua header)
PARTS = (
    "hotparams.lua",
    "state.lua",
    "variants.lua",
    "checks.lua",
    "write.lua",
    "writes.lua",
    "reads.lua",
    "fleet.lua",
)
_PLACEHOLDER = "local LIBVERSION = 'dev'"


@cache
def _file_text() -> str:
    folder = files("hotparams").joinpath("lua")
    return "\n".join(folder.joinpath(part).read_text(encoding="utf-8") for part in PARTS)


@cache
def library_version() -> str:
    return hashlib.sha256(_file_text().encode()).hexdigest()[:16]


@cache
def library_source() -> str:
    """The code to FUNCTION LOAD, with its version filled in."""
    text = _file_text()
    if _PLACEHOLDER not in text:  # pragma: no cover - a packaging error
        raise RuntimeError("hotparams.lua lost its LIBVERSION placeholder")
    return text.replace(_PLACEHOLDER, f"local LIBVERSION = '{library_version()}'", 1)

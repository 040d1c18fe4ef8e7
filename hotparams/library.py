"""The Lua library shipped as package data, its identity and how it is installed.

The library is one FUNCTION LOAD payload made of several ``.lua`` files,
concatenated in order (later files use the helpers of earlier ones).  It
says who it is with ``FCALL_RO hp_libversion 0``: a JSON object
``{"release": 3, "api": 1, "api_min": 1, "digest": "..."}``
(:class:`LibraryInfo`):

``release``  a number bumped with every change of the Lua source
             (``RELEASE``; a test pins the digest of each release, so the
             number cannot stay behind the code)
``api``      the calling convention the library speaks (``API``), bumped
             when a function's arguments or replies change meaning;
``api_min``  the oldest calling convention it still serves
``digest``   a digest of the source

How a client decides (:func:`plan`, the same for the sync and the asyncio
bus, run once per bus and again when Redis lost its functions):

* no library, or an older release: load this client's own (``FUNCTION
  LOAD``, without ``REPLACE`` when there was none, so two clients that
  race to load cannot overwrite each other), if it may (the setting
  ``auto_install``, True by default).  A client that may not load raises
  :class:`~hotparams.errors.LibraryMismatch` saying to run ``hotparams
  install``; a client whose ``FUNCTION LOAD`` Redis refuses (NOPERM) raises
  the same error and never tries to load again;
* the same release: use it;
* a newer release: use it if it still serves this client's calling
  convention, else :class:`~hotparams.errors.LibraryMismatch` naming both.
  A client never replaces a newer library with an older one, so two
  releases in one fleet do not take turns reloading theirs.

``hotparams install`` (:func:`install_op`) runs the same plan as an admin
and says what it did.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from .errors import LibraryMismatch, PermissionDenied
from .protocol import Broadcast, LibraryExists, LibraryMissing, Op, text

__all__ = [
    "API",
    "API_MIN",
    "LIBRARY_NAME",
    "PARTS",
    "RELEASE",
    "Installed",
    "Library",
    "LibraryInfo",
    "Load",
    "Use",
    "current",
    "install_op",
    "library_source",
    "library_version",
    "plan",
    "source_text",
]

LIBRARY_NAME = "hotparams"
#: the files of the library, in load order (the first holds the #!lua header)
PARTS = (
    "hotparams.lua",
    "state.lua",
    "variants.lua",
    "checks.lua",
    "write.lua",
    "lifecycle.lua",
    "writes.lua",
    "reads.lua",
    "fleet.lua",
)
#: the calling convention this client speaks and its library serves (2: hp_register
#: is monotone and keeps settings, with HP_SCHEMA and HP_SETTINGS replies; 3:
#: content digests, asked for with hp_get's and hp_head's "digest" argument,
#: in events, and HP_DAMAGED replies; a client of 2 gets the replies of 2;
#: 4: hp_reports, the reports of several workers of one namespace in one
#: call; nothing of 2 or 3 changed meaning)
API = 4
#: the oldest calling convention this library still serves
API_MIN = 2
#: the library's release: bump it with every change of the Lua source and
#: put the new digest in RELEASE_DIGEST (tests/test_library.py says which)
RELEASE = 15
RELEASE_DIGEST = "e1f779e9491de0cc"

_PLACEHOLDER = "local LIBVERSION = 'dev'"


@dataclass(frozen=True, slots=True)
class LibraryInfo:
    """Who a library is (what ``hp_libversion`` answers)."""

    release: int
    api: int
    api_min: int
    digest: str

    def serves(self, api: int) -> bool:
        """Whether a client of calling convention ``api`` can use this library."""
        return self.api_min <= api <= self.api

    def to_json(self) -> str:
        return json.dumps(
            {
                "release": self.release,
                "api": self.api,
                "api_min": self.api_min,
                "digest": self.digest,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_reply(cls, reply: Any) -> LibraryInfo:
        """From ``hp_libversion``'s reply; a library of before the releases
        answered a bare digest and counts as release 0."""
        raw = text(reply)
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(release=0, api=0, api_min=0, digest=raw[:64])
        return cls(
            release=int(data.get("release", 0)),
            api=int(data.get("api", 0)),
            api_min=int(data.get("api_min") or data.get("api", 0)),
            digest=str(data.get("digest", "")),
        )

    def __str__(self) -> str:
        if self.release == 0:
            return f"an unversioned release (digest {self.digest})"
        return f"release {self.release} (calling convention {self.api}, digest {self.digest})"


@dataclass(frozen=True, slots=True)
class Library:
    """A library's code, ready to FUNCTION LOAD, and who it is."""

    info: LibraryInfo
    source: str

    @classmethod
    def build(cls, body: str, *, release: int, api: int = API, api_min: int = API_MIN) -> Library:
        """The library of ``body`` (the concatenated parts, placeholder unfilled)."""
        if _PLACEHOLDER not in body:  # pragma: no cover - a packaging error
            raise RuntimeError("hotparams.lua lost its LIBVERSION placeholder")
        digest = hashlib.sha256(body.encode()).hexdigest()[:16]
        info = LibraryInfo(release=release, api=api, api_min=api_min, digest=digest)
        literal = info.to_json().replace("\\", "\\\\").replace("'", "\\'")
        return cls(info, body.replace(_PLACEHOLDER, f"local LIBVERSION = '{literal}'", 1))


@cache
def source_text() -> str:
    """The concatenated parts, as shipped."""
    folder = files("hotparams").joinpath("lua")
    return "\n".join(folder.joinpath(part).read_text(encoding="utf-8") for part in PARTS)


@cache
def current() -> Library:
    """This client's own library."""
    return Library.build(source_text(), release=RELEASE)


def library_version() -> str:
    """The digest of this client's library."""
    return current().info.digest


def library_source() -> str:
    """The code to FUNCTION LOAD."""
    return current().source


# ---------------------------------------------------------------- the decision


@dataclass(frozen=True, slots=True)
class Use:
    """The library in Redis serves this client."""

    installed: LibraryInfo


@dataclass(frozen=True, slots=True)
class Load:
    """Load this client's library (``replace``: over an older one)."""

    replace: bool


_INSTALL_HINT = "run `hotparams install --url URL` as an admin"


def plan(installed: LibraryInfo | None, own: LibraryInfo, *, may_load: bool) -> Use | Load:
    """What a client does about the library in Redis (raises LibraryMismatch)."""
    if installed is None:
        if may_load:
            return Load(replace=False)
        raise LibraryMismatch(
            f"the hotparams library is not installed in Redis (this client needs {own}): "
            f"{_INSTALL_HINT}",
            wanted=own,
        )
    if installed.release < own.release:
        if may_load:
            return Load(replace=True)
        raise LibraryMismatch(
            f"Redis runs the hotparams library {installed}, older than the {own} this "
            f"client needs: {_INSTALL_HINT}",
            installed=installed,
            wanted=own,
        )
    if installed.serves(own.api):
        return Use(installed)
    raise LibraryMismatch(
        f"Redis runs the hotparams library {installed}, which does not serve the calling "
        f"convention {own.api} of this client's {own}: upgrade this client",
        installed=installed,
        wanted=own,
    )


@dataclass(frozen=True, slots=True)
class Installed:
    """What :func:`install_op` found or did.

    ``action``: ``"installed"`` (there was none), ``"upgraded"`` (from
    ``previous``), ``"current"`` (the same release), ``"newer"`` (Redis runs
    a newer release that serves this client; left in place).
    """

    action: str
    info: LibraryInfo
    previous: LibraryInfo | None = None

    def describe(self) -> str:
        if self.action == "installed":
            return f"installed the hotparams library {self.info}"
        if self.action == "upgraded":
            return f"upgraded the hotparams library from {self.previous} to {self.info}"
        if self.action == "newer":
            return f"Redis runs a newer hotparams library, {self.info}; left in place"
        return f"the hotparams library is already current: {self.info}"


def installed_op() -> Op[LibraryInfo | None]:
    """Who the library in Redis is (None: there is none): in a cluster, the
    oldest of the primaries' (None when one has none)."""
    return _oldest((yield from versions_op()))


def versions_op() -> Op[list[LibraryInfo | None]]:
    """Who the library of each primary is (one item outside a cluster), so
    that a primary that joined or lost its functions gets the library again."""
    replies = yield Broadcast(("FCALL_RO", "hp_libversion", "0"))
    infos: list[LibraryInfo | None] = []
    for reply in replies:
        if isinstance(reply, LibraryMissing):
            infos.append(None)
        elif isinstance(reply, Exception):
            raise reply
        else:
            infos.append(LibraryInfo.from_reply(reply))
    return infos


def _oldest(infos: list[LibraryInfo | None]) -> LibraryInfo | None:
    """The library the plan is made for: the oldest one (None first)."""
    known = [info for info in infos if info is not None]
    if len(known) < len(infos):
        return None
    return min(known, key=lambda info: info.release) if known else None


def _refuse_mixed(infos: list[LibraryInfo | None], own: LibraryInfo) -> None:
    """LibraryMismatch if a primary runs a release newer than this client's
    while another runs an older one or none: loading this client's would
    replace the newer one, and two releases would take turns."""
    oldest = _oldest(infos)
    newer = [info for info in infos if info is not None and info.release > own.release]
    if newer and (oldest is None or oldest.release < own.release):
        raise LibraryMismatch(
            f"the primaries run different hotparams libraries ({newer[0]} and "
            f"{oldest or 'none'}); this client's {own} would replace the newer one: "
            "run `hotparams install` with the newest client",
            installed=oldest,
            wanted=own,
        )


def _load_replies(replies: list[Any]) -> bool:
    """Whether a primary already had a library (raises any other error)."""
    exists = False
    for reply in replies:
        if isinstance(reply, LibraryExists):
            exists = True
        elif isinstance(reply, Exception):
            raise reply
    return exists


#: looks at the library before giving up on a race with other loaders
_ATTEMPTS = 4


def install_op(own: Library, *, may_load: bool) -> Op[Installed]:
    """Make Redis run a library that serves this client (see :func:`plan`)."""
    previous: LibraryInfo | None = None
    loaded = False
    for _ in range(_ATTEMPTS):
        infos = yield from versions_op()
        installed = _oldest(infos)
        if loaded and installed == own.info:
            return Installed("upgraded" if previous else "installed", own.info, previous)
        decision = plan(installed, own.info, may_load=may_load)
        if isinstance(decision, Load):
            _refuse_mixed(infos, own.info)
        if isinstance(decision, Use):
            newer = decision.installed.release > own.info.release
            return Installed("newer" if newer else "current", decision.installed)
        previous = installed
        load = ("FUNCTION", "LOAD", *(("REPLACE",) if decision.replace else ()), own.source)
        try:
            replies = yield Broadcast(load)
            exists = _load_replies(replies)
        except PermissionDenied as exc:
            raise LibraryMismatch(
                f"the hotparams library in Redis is {installed or 'missing'} and this client "
                f"may not load its {own.info} ({exc.permission}): {_INSTALL_HINT}",
                installed=installed,
                wanted=own.info,
                permission=exc.permission,
            ) from None
        if exists:  # another client loaded one meanwhile (or a primary had one): look again
            continue
        loaded = True
    raise LibraryMismatch(
        "the hotparams library in Redis kept changing while this client installed its own: "
        "another client is loading a different release; try again",
        wanted=own.info,
    )

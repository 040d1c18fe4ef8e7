"""The change events of a namespace's channel, as a live handle reads them
(I/O-free; the format is in docs/implementation.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .codec import dumps, loads
from .errors import ProtocolError

__all__ = ["Event", "parse_event"]


@dataclass(frozen=True, slots=True)
class Event:
    """One change message of a namespace's channel (see docs/implementation.md)."""

    namespace: str
    epoch: str
    version: int
    previous: int
    committed_ms: int
    op: str
    schema_rev: int
    changed: Mapping[str, Any]
    removed: tuple[str, ...] = ()
    redacted: tuple[str, ...] = ()
    #: the A/B variants document after the change (JSON text, None: none
    #: left), when ``variants_changed``
    variants: str | None = None
    variants_changed: bool = False
    #: content digests of the new version and of the one it follows ("" from
    #: a library without digests): the change applies only to that state
    digest: str = ""
    prev_digest: str = ""


def parse_event(data: bytes | str) -> Event:
    """The :class:`Event` in a channel message, or ProtocolError."""
    try:
        doc = loads(data)
        variants = doc.get("variants")
        return Event(
            namespace=str(doc["ns"]),
            epoch=str(doc["epoch"]),
            version=int(doc["v"]),
            previous=int(doc["prev"]),
            committed_ms=int(doc["ts"]),
            op=str(doc["op"]),
            schema_rev=int(doc["schema"]),
            changed=dict(doc["changed"]),
            removed=tuple(str(n) for n in doc.get("removed", ())),
            redacted=tuple(str(n) for n in doc.get("redacted", ())),
            variants=None if variants is None else dumps(variants),
            variants_changed="variants" in doc,
            digest=str(doc.get("digest", "")),
            prev_digest=str(doc.get("prev_digest", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed change event ({type(exc).__name__})") from None

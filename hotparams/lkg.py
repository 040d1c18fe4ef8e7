"""The last known good snapshot file (I/O-free but for that file).

A live handle given a ``cache`` path writes every version it applies to
that file, atomically (a temporary file in the same directory, fsync,
rename), so a worker that starts while Redis is down serves the version it
served before.  The file holds the real values of secret fields (a worker
needs them) and is created with mode 0600.

This module reads, writes and validates that file, nothing else.  Writing
a cached snapshot back into Redis after a loss is
:func:`hotparams.writes.restore_op` (``bus.restore``), and from the command
line ``hotparams restore NS --from-cache FILE`` (``--dry-run`` shows the
file, secrets masked).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from .errors import InvalidParams
from .schema import ParamSchema
from .snapshot import Snapshot, frozen_mapping
from .variants import VariantSet, validate_variants

__all__ = ["FORMAT", "load", "read", "save"]

M = TypeVar("M", bound=BaseModel)

FORMAT = 1

log = logging.getLogger("hotparams.live")


def save(path: str | os.PathLike[str], snapshot: Snapshot[Any], schema: ParamSchema[Any]) -> bool:
    """Write ``snapshot`` to ``path`` atomically; False if the file already
    holds this version or a newer one of the same history (another process
    of the host wrote it first)."""
    target = Path(path)
    held = _peek(target)
    if held is not None and held[0] == snapshot.epoch and held[1] >= snapshot.version:
        return False
    doc = {
        "format": FORMAT,
        "namespace": snapshot.namespace,
        "version": snapshot.version,
        "epoch": snapshot.epoch,
        "committed_ms": snapshot.committed_ms,
        "schema_rev": snapshot.schema_rev,
        "model": schema.rules.get("model", ""),
        "secret_fields": sorted(schema.secrets),
        "saved_ms": int(time.time() * 1000),
        "values": dict(snapshot.values),
        "variants": snapshot.variants.to_json(),
        "digest": snapshot.digest,
    }
    data = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def _peek(path: Path) -> tuple[str, int] | None:
    try:
        doc = orjson.loads(path.read_bytes())
        return str(doc["epoch"]), int(doc["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw document of a cache file (ValueError if it is not one)."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a hotparams cache file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "values" not in doc:
        raise ValueError(f"{path}: not a hotparams cache file (format {FORMAT})")
    return doc


def load(
    path: str | os.PathLike[str], namespace: str, schema: ParamSchema[M]
) -> Snapshot[M] | None:
    """The snapshot cached at ``path``, or None (missing, unreadable, another
    namespace, or values the model refuses: each is logged)."""
    try:
        doc = read(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning(
            "%s: ignoring the cache file: %s", namespace, exc, extra={"namespace": namespace}
        )
        return None
    if doc.get("namespace") != namespace:
        log.warning(
            "%s: ignoring the cache file %s: it holds namespace %r",
            namespace,
            path,
            doc.get("namespace"),
            extra={"namespace": namespace},
        )
        return None
    values = dict(doc["values"])
    try:
        params = schema.validate(namespace, values)
        variants = VariantSet.from_json(doc.get("variants"))
        validate_variants(namespace, schema, values, variants)
    except InvalidParams as exc:
        log.warning(
            "%s: ignoring the cache file %s: %s",
            namespace,
            path,
            exc,
            extra={"namespace": namespace},
        )
        return None
    return Snapshot(
        namespace=namespace,
        version=int(doc["version"]),
        epoch=str(doc["epoch"]),
        params=params,
        committed_ms=int(doc.get("committed_ms", 0)),
        schema_rev=int(doc.get("schema_rev", 0)),
        values=frozen_mapping(values),
        variants=variants,
        digest=str(doc.get("digest", "")),
    )

"""The last known good snapshot: on disk, and back into Redis after a loss.

A live handle given a ``cache`` path writes every version it applies to
that file, atomically (a temporary file in the same directory, fsync,
rename), so a worker that starts while Redis is down serves the version it
served before.  The file holds the real values of secret fields (a worker
needs them) and is created with mode 0600.

After Redis lost a namespace (FLUSHALL, a restart without persistence),
:func:`restore_op` writes a last good snapshot back as the current state:
a new version of the namespace if it exists, else version 1 of a new
history.  ``python -m hotparams.lkg restore FILE`` does it from a cache file.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from .codec import MASK
from .errors import (
    ConnectionFailed,
    HotParamsError,
    InvalidParams,
    NamespaceNotFound,
    SchemaError,
)
from .keys import Keys
from .protocol import Op, Stored, Who, check_variants_merge, head_op, register_op
from .schema import ParamSchema
from .snapshot import Snapshot, frozen_mapping
from .variants import VariantSet
from .writes import commit_op

__all__ = ["load", "main", "read", "restore_op", "save"]

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
        check_variants_merge(namespace, schema, values, variants)
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


def restore_op(
    keys: Keys,
    schema: ParamSchema[Any],
    values: Mapping[str, Any],
    *,
    who: Who,
    settings: Mapping[str, int],
    variants: str | None = None,
) -> Op[int]:
    """Make ``values`` (and ``variants``, an A/B variants document) the
    current state of the namespace; returns its version.

    An existing namespace gets them as a new version (audited as
    ``restore``), also when its current version hash is damaged (lost or
    incomplete); a missing one, or one whose meta was lost, is registered
    with them as version 1 of a new history (epoch), whose version hashes
    are written whole into fresh keys.  Fields the model does not know are
    dropped.
    """
    known = {k: v for k, v in values.items() if k in schema.fields}
    for _ in range(3):
        try:
            head = yield from head_op(keys, digest=False)
            # the current version is replaced whole: restore does not read it
            # (it may be damaged: a lost or incomplete hash is what it repairs)
            base = Stored(keys.namespace, head.version, head.epoch, 0, head.schema_rev, {})
            committed = yield from commit_op(
                keys,
                schema,
                known,
                expect=None,
                who=who,
                known=base,
                replace=True,
                op="restore",
                variants=variants,
                set_variants=True,
            )
            return committed.version
        except NamespaceNotFound:
            pass  # never registered, flushed, or its meta lost: a new history (epoch)
        registered = yield from register_op(
            keys,
            schema,
            epoch=secrets.token_hex(8),
            who=who,
            initial=known,
            settings=settings,
        )
        if registered.created:
            if not variants:
                return registered.version
            # version 1 holds the values; the variants come back as version 2
            committed = yield from commit_op(
                keys,
                schema,
                {},
                expect=registered.version,
                who=who,
                op="restore",
                variants=variants,
                set_variants=True,
            )
            return committed.version
        # someone registered it meanwhile: write the values over theirs
    raise HotParamsError(f"{keys.namespace!r} kept changing while being restored; giving up")


# ---------------------------------------------------------------- command line


def import_model(ref: str) -> type[BaseModel]:
    """The model class named ``module:QualName``."""
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname:
        raise SchemaError(f"{ref!r}: expected module:Model")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SchemaError(f"cannot import {ref!r}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise SchemaError(f"{ref!r} is not a pydantic model class")
    return obj


def masked_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A cache file's document with every secret value masked: the values
    and the overrides of each A/B variant."""
    hidden = set(doc.get("secret_fields", ()))
    values = {k: (MASK if k in hidden else v) for k, v in doc["values"].items()}
    variants: Any = doc.get("variants")
    if variants:
        try:
            parsed = orjson.loads(variants) if isinstance(variants, str) else dict(variants)
            for spec in parsed.get("variants", {}).values():
                overrides = spec.get("overrides", {})
                spec["overrides"] = {k: (MASK if k in hidden else v) for k, v in overrides.items()}
            variants = parsed
        except (ValueError, TypeError, AttributeError):
            variants = MASK  # not what this module writes: show none of it
    return {**doc, "values": values, "variants": variants}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hotparams.lkg",
        description="Inspect a live handle's last-known-good cache file, or write it "
        "back to Redis as the namespace's current state (after a loss).",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", help="print the cached version (secrets masked)")
    show.add_argument("file")
    restore = verbs.add_parser("restore", help="write the cached values back as current")
    restore.add_argument("file")
    restore.add_argument(
        "--url", default=os.environ.get("HOTPARAMS_URL", "redis://127.0.0.1:6379/0")
    )
    restore.add_argument("--namespace", help="default: the cached namespace")
    restore.add_argument("--schema", help="module:Model (default: the model named in the file)")
    restore.add_argument("--author", default=None)
    restore.add_argument("--reason", default="restore of a worker's last good snapshot")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes as the hotparams CLI: 0 ok, 2 usage, 3 invalid, 5 Redis unreachable."""
    args = _parser().parse_args(argv)
    try:
        doc = read(args.file)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.verb == "show":
        shown = masked_doc(doc)
        print(orjson.dumps(shown, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode())
        return 0
    from .bus import connect

    namespace = args.namespace or str(doc["namespace"])
    try:
        model = import_model(args.schema or str(doc.get("model", "")))
        with connect(args.url) as bus:
            version = bus.restore(
                namespace, doc["values"], model=model, author=args.author, reason=args.reason
            )
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except InvalidParams as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 5
    except HotParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{namespace}: restored as version {version}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

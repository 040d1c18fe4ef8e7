"""The synchronous Bus: a thin shell that drives the operations of
:mod:`hotparams.protocol` over a redis-py client."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

import redis
from pydantic import BaseModel
from redis.exceptions import ResponseError
from tenacity import (
    Retrying,
)

from .clients import sync_client
from .codec import MASK
from .config import Settings, redact_url, settings_from
from .connection import TRANSIENT, describe, first_retry_wait, retry_policy
from .core import BusCore
from .errors import ConnectionFailed, ProtocolError
from .fleet import (
    Convergence,
    WorkerReport,
)
from .library import Installed
from .lifecycle import Migration, NamespaceInfo, NamespaceSettings
from .protocol import (
    Batch,
    Call,
    Head,
    LibraryMissing,
    Op,
    Registered,
    Scan,
    decode_error,
)
from .snapshot import Change, FieldChange, Snapshot
from .variants import VariantSet

if TYPE_CHECKING:
    from .live import Live
    from .metrics import Metrics

__all__ = ["Bus", "connect"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def send(client: redis.Redis, *args: Any) -> Any:
    """One raw command (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class Bus(BusCore):
    """A connection to one Redis and the parameter namespaces in it.

    Every operation is built by :class:`~hotparams.core.BusCore` (shared
    with the asyncio :class:`~hotparams.aio.AsyncBus`); this class runs it.
    """

    def __init__(
        self, client: redis.Redis, *, settings: Settings | None = None, url: str = "redis://"
    ) -> None:
        super().__init__(settings, url)
        self.client = client
        self._library_checked = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<hotparams.Bus {redact_url(self.url)}>"

    # ------------------------------------------------------------ driving

    def run(self, op: Op[T]) -> T:
        """Drive an operation generator to its result."""
        return self._drive(self.sealing(op), self.execute)

    def _drive(self, op: Op[T], execute: Any) -> T:
        try:
            call = next(op)
            while True:
                try:
                    reply = execute(call)
                except Exception as exc:  # thrown into the op, which may handle it
                    call = op.throw(exc)
                else:
                    call = op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def execute(self, call: Call) -> Any:
        """One call, with retries on connection errors and library reloads."""
        self._ensure_library()
        try:
            return self._send_call(call)
        except LibraryMissing:
            pass
        # Redis lost its functions (restart without persistence, FLUSHALL ...)
        self._library_checked = False
        self._ensure_library()
        try:
            return self._send_call(call)
        except LibraryMissing as exc:
            raise ProtocolError(f"Redis lacks a hotparams function: {exc}") from None

    def _send_call(self, call: Call) -> Any:
        """One call with retries and its error decoded; no library check."""
        if isinstance(call, Batch):
            return self._execute_batch(call)
        if isinstance(call, Scan):
            return self._with_retry(
                lambda: list(self.client.scan_iter(match=call.pattern, count=1000, _type=call.kind))
            )
        try:
            return self._with_retry(lambda: send(self.client, *call.command()))
        except ResponseError as exc:
            raise decode_error(call.namespace, exc) from None

    def _execute_batch(self, batch: Batch) -> list[Any]:
        def send_all() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for call in batch.calls:
                pipe.execute_command(*call.command())  # type: ignore[no-untyped-call]
            return pipe.execute(raise_on_error=False)

        replies = self._with_retry(send_all)
        return [
            decode_error(call.namespace, reply) if isinstance(reply, ResponseError) else reply
            for call, reply in zip(batch.calls, replies, strict=True)
        ]

    def _with_retry(self, fn: Any) -> Any:
        """``fn()`` with the retry policy of :mod:`hotparams.connection`."""
        try:  # the happy path pays nothing for the retry machinery
            return fn()
        except TRANSIENT as exc:
            error: BaseException = exc
        if self.settings.retry_attempts > 1:
            time.sleep(first_retry_wait())
            try:
                return Retrying(**retry_policy(self.settings))(fn)
            except TRANSIENT as exc:
                error = exc
        raise ConnectionFailed(redact_url(self.url), describe(error, self.url)) from None

    def _ensure_library(self) -> None:
        if self._library_checked:
            return
        with self._lock:
            if not self._library_checked:
                self._drive(self.op_library(), self._send_call)
                self._library_checked = True

    def install(self) -> Installed:
        """Load or upgrade the Lua library (``hotparams install``; needs the
        ACL permission ``function|load``).  Never replaces a newer release."""
        with self._lock:
            result = self._drive(self.op_install(), self._send_call)
            self._library_checked = True
            return result

    def load_library(self) -> None:
        """Make sure Redis runs a library that serves this bus (as before a first call)."""
        self._library_checked = False
        self._ensure_library()

    # ------------------------------------------------------------ writes

    def register(
        self,
        namespace: str,
        model: type[BaseModel],
        *,
        initial: Mapping[str, Any] | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
        retention: int | None = None,
        audit_maxlen: int | None = None,
        max_value_bytes: int | None = None,
        allow_raw_writes: bool = False,
    ) -> Registered:
        """Store ``model``'s schema for ``namespace`` (idempotent).

        A new namespace gets its defaults (or ``initial``) as version 1.
        Registering is monotone: a model that adds fields stores a new
        schema revision and a version with their defaults; stored fields the
        model lacks, and stored values, are never dropped or reset; a stored
        field's rule is never changed (see ``Registered.kept_rules`` and
        :meth:`migrate`).  ``retention`` (versions kept), ``audit_maxlen``
        and ``max_value_bytes`` are the settings of a new namespace; for an
        existing one that has other settings they raise ConfigError
        (change settings with :meth:`configure`).

        Fields (or a model validator) that only Python can check are refused
        to raw writers (redis-cli, a Bus without the model, ``hotparams set``
        without ``--schema``) unless ``allow_raw_writes``: then those writers
        are held to the Lua rules alone and workers refuse what the model
        refuses (guarantee 5's second half).
        """
        return self.run(
            self.op_register(
                namespace,
                model,
                initial=initial,
                author=author,
                reason=reason,
                source=source,
                retention=retention,
                audit_maxlen=audit_maxlen,
                max_value_bytes=max_value_bytes,
                allow_raw_writes=allow_raw_writes,
            )
        )

    def set(
        self,
        namespace: str,
        changes: Mapping[str, Any],
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """Change some fields; returns the new version.

        With ``expect_version`` the change is made only if the namespace is
        still at that version, else :class:`~hotparams.VersionConflict`.
        A change that changes nothing returns the current version.
        """
        return self.run(
            self.op_commit(
                namespace,
                changes,
                (),
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    def check(
        self,
        namespace: str,
        changes: Mapping[str, Any],
        *,
        unset: Iterable[str] = (),
        expect_version: int | None = None,
    ) -> int:
        """A dry run of :meth:`set` (and ``unset``): raises what the write
        would raise (:class:`~hotparams.InvalidParams` with the messages of
        Redis's rules, then of the bound model), writes nothing; returns the
        current version the change was checked against."""
        return self.run(self.op_check(namespace, changes, unset, expect_version=expect_version))

    def unset(
        self,
        namespace: str,
        fields: Iterable[str],
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """Reset fields to their model defaults; returns the new version."""
        return self.run(
            self.op_commit(
                namespace,
                {},
                fields,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    def set_many(
        self,
        items: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> list[int]:
        """Several changes, of one or several namespaces, in one round trip.

        Every change is validated before anything is sent (an invalid one
        raises and nothing is written); each is then atomic on its own, in
        order, but the batch is not a transaction: if Redis rejects one, a
        :class:`~hotparams.BatchError` tells which were committed.
        """
        return self.run(self.op_set_many(items, author=author, reason=reason, source=source))

    def set_variant(
        self,
        namespace: str,
        name: str,
        overrides: Mapping[str, Any] | None = None,
        *,
        percent: float | None = None,
        users: Iterable[str] | None = None,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """Create or change an A/B variant; returns the new version.

        ``overrides`` replaces the variant's overrides, ``percent`` (0-100,
        in steps of 0.01) widens or narrows its share of users, ``users``
        replaces its allow-list; None leaves a part as it is.  The base
        merged with each variant must satisfy the model.
        """
        return self.run(
            self.op_variant(
                namespace,
                name,
                overrides=overrides,
                percent=percent,
                users=users,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    def remove_variant(
        self,
        namespace: str,
        name: str,
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """Remove an A/B variant (its users get the base); returns the new version."""
        return self.run(
            self.op_variant(
                namespace,
                name,
                remove=True,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    def rollback(
        self,
        namespace: str,
        version: int,
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """Make the values of ``version`` current again, as a new version."""
        return self.run(
            self.op_rollback(
                namespace,
                version,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    def restore(
        self,
        namespace: str,
        values: Snapshot[Any] | Mapping[str, Any],
        *,
        model: type[BaseModel] | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """Write a last good snapshot (or values) back as the current state.

        After a loss (FLUSHALL, a restart without persistence) pass a
        worker's ``live.current``: its values and A/B variants come back.  An
        existing namespace gets them as a new version (audited as
        ``restore``); a missing one is registered as a new history (epoch).
        The model is ``model``, else the one bound to this Bus, else the
        snapshot's.
        """
        return self.run(
            self.op_restore(
                namespace, values, model=model, author=author, reason=reason, source=source
            )
        )

    # ------------------------------------------------------------ lifecycle

    def configure(
        self,
        namespace: str,
        *,
        retention: int | None = None,
        audit_maxlen: int | None = None,
        max_value_bytes: int | None = None,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> NamespaceSettings:
        """Change the settings of a namespace (audited as ``configure``);
        returns them.  Hard caps: ``retention`` 1-10,000 versions (older ones
        are deleted now), ``audit_maxlen`` 100-1,000,000 entries,
        ``max_value_bytes`` 1-16 MiB (refused below a stored value's size)."""
        return self.run(
            self.op_configure(
                namespace,
                retention=retention,
                audit_maxlen=audit_maxlen,
                max_value_bytes=max_value_bytes,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    def migrate(
        self,
        namespace: str,
        model: type[BaseModel],
        *,
        drop: Iterable[str] = (),
        rename: Mapping[str, str] | None = None,
        dry_run: bool = False,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> Migration:
        """Change the stored schema to ``model``'s: drop fields, rename them
        (``{"old": "new"}``), apply changed rules.  One atomic call checks
        every stored value (base and A/B variant overrides) against the new
        rules first and raises InvalidParams naming those that would not
        fit; then it stores a new schema revision and version (audited as
        ``migrate``).  ``dry_run`` returns the plan and writes nothing.
        Stored fields the model lacks are kept unless dropped."""
        return self.run(
            self.op_migrate(
                namespace,
                model,
                drop=drop,
                rename=rename or {},
                dry_run=dry_run,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    def delete(
        self,
        namespace: str,
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """Delete a namespace; returns the version it had.  Its versions,
        schema and meta go; a tombstone (who, when, why) and the audit stay.
        Running workers keep their last good snapshot and report the
        deletion (``LiveStatus.deleted``); registering it again starts a new
        history (epoch), which they follow."""
        return self.run(
            self.op_delete(
                namespace,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    def rotate_secrets(
        self, namespace: str, *, author: str | None = None, reason: str = "", source: str = ""
    ) -> tuple[int, int, tuple[str, ...]]:
        """Re-encrypt every secret value of ``namespace`` (and of its A/B
        variants) with the first secret key: a new version, audited as
        ``rotate``.  Returns (previous version, new version, the fields)."""
        return self.run(
            self.op_rotate_secrets(namespace, author=author, reason=reason, source=source)
        )

    def namespaces(self) -> list[NamespaceInfo]:
        """Every namespace in this Redis, by name: version, epoch, last
        change, settings and live workers."""
        return self.run(self.op_namespaces())

    # ------------------------------------------------------------ reads

    @overload
    def get(self, namespace: str, model: type[M], *, version: int | None = None) -> Snapshot[M]: ...

    @overload
    def get(
        self, namespace: str, model: None = None, *, version: int | None = None
    ) -> Snapshot[Any]: ...

    def get(
        self, namespace: str, model: type[M] | None = None, *, version: int | None = None
    ) -> Snapshot[Any]:
        """The current (or a retained) version as a :class:`Snapshot`."""
        return self.run(self.op_get(namespace, model, version))

    def head(self, namespace: str) -> Head:
        """The current version, epoch and commit time, without the values."""
        return self.run(self.op_head(namespace))

    def history(self, namespace: str, limit: int = 50) -> list[Change]:
        """Audit entries, newest first; secret values are masked."""
        return self.run(self.op_history(namespace, limit))

    def diff(self, namespace: str, a: int, b: int) -> dict[str, FieldChange]:
        """Fields that differ between versions ``a`` and ``b``; secrets masked."""
        return self.run(self.op_diff(namespace, a, b))

    def rules(self, namespace: str) -> dict[str, Any]:
        """The validation rules stored for the namespace's current schema."""
        return self.run(self.op_rules(namespace))

    def secret_fields(self, namespace: str) -> frozenset[str]:
        """The namespace's secret fields, by its stored schema."""
        return self.run(self.op_secret_fields(namespace))

    def masked_values(self, namespace: str, values: Mapping[str, Any]) -> dict[str, Any]:
        secret = self.secret_fields(namespace)
        return {k: (MASK if k in secret else v) for k, v in values.items()}

    def variants(self, namespace: str) -> VariantSet:
        """The current A/B variants of a namespace."""
        return self.run(self.op_variants(namespace))

    # ------------------------------------------------------------ fleet

    def workers(self, namespace: str) -> list[WorkerReport]:
        """The live workers' reports on a namespace (expired ones are gone)."""
        return self.run(self.op_workers(namespace))

    def convergence(self, namespace: str, version: int | None = None) -> Convergence:
        """How many live workers run ``version`` (default: the current one),
        which are behind, and the p50/p99 lag with which it reached them."""
        return self.run(self.op_convergence(namespace, version))

    def record_exposures(self, namespace: str, salt: str, counts: dict[str | None, int]) -> None:
        """Add counted variant assignments (a Live handle batches these)."""
        self.run(self.op_record_exposures(namespace, salt, counts))

    def exposures(self, namespace: str) -> dict[str | None, int]:
        """How many assignments each variant of the current experiment got
        (None: the base), as counted and flushed by the workers."""
        return self.run(self.op_exposures(namespace))

    # ------------------------------------------------------------ live

    def watch(
        self,
        namespace: str,
        model: type[M],
        *,
        cache: str | os.PathLike[str] | None = None,
        defaults: bool = False,
        reconcile_interval: float | None = None,
        worker_name: str = "",
        metrics: Metrics | None = None,
    ) -> Live[M]:
        """A :class:`~hotparams.Live` handle on the namespace, kept current by a listener.

        Returns once it holds a snapshot: the current version, else (Redis
        unreachable or the namespace missing) the version cached at
        ``cache`` by an earlier run, else the model's defaults if
        ``defaults`` is true; else the error is raised.  The handle then
        catches up by itself.  ``reconcile_interval`` overrides the setting.
        The handle reports to the fleet as ``host:pid:worker_name`` (see
        :meth:`workers`) and records into ``metrics`` (default: the
        process-wide :func:`hotparams.metrics.default_metrics`).
        """
        from .live import Live

        schema = self._schema_for_watch(namespace, model)
        return Live(
            self,
            namespace,
            schema,
            cache=cache,
            defaults=defaults,
            reconcile_interval=reconcile_interval,
            worker_name=worker_name,
            metrics=metrics,
        )

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str = "redis://127.0.0.1:6379/0", **settings: Any) -> Bus:
    """A :class:`Bus` for the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``).

    Keyword settings are those of :class:`~hotparams.Settings`; an unknown
    one is a :class:`~hotparams.ConfigError`.  No connection is opened until
    the first call.
    """
    s = settings_from(settings)
    return Bus(sync_client(url, s), settings=s, url=url)

"""Everything a bus does, free of I/O: the public methods of the sync
:class:`~hotparams.Bus` and the asyncio :class:`~hotparams.aio.AsyncBus`,
written once.

:class:`BusCore` holds the models bound to namespaces and the last state a
writer knows of each (so a change is validated against it without a read),
and builds every public operation as a generator of calls (see
:mod:`hotparams.protocol`), made a method of both buses by
:class:`~hotparams.operation.operation`.  :meth:`BusCore.serve` wraps each
operation in what every call needs: the library check (and reload after
Redis lost its functions), retries on a failed connection, the decoding of
error replies, and the sealing of secrets.  The buses only perform the
calls (:mod:`hotparams.drivers`), one with blocking calls, one with
``await``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from pydantic import BaseModel

from .backoff import retry_waits
from .config import ConfigError, Settings, redact_url, settings_from
from .errors import ConnectionFailed, LibraryMismatch, ProtocolError, SchemaError
from .fleet import Convergence, WorkerReport, convergence, expose_op, exposures_op, workers_op
from .keys import Keys, keys_for
from .library import Installed, Library, current, install_op
from .lifecycle import (
    Migration,
    NamespaceInfo,
    NamespaceSettings,
    check_settings,
    configure_op,
    delete_op,
    migrate_op,
    namespaces_op,
)
from .operation import operation
from .otel import traced
from .protocol import (
    Batch,
    Broadcast,
    Call,
    ErrorReply,
    Head,
    LibraryMissing,
    Op,
    Registered,
    Sleep,
    Transient,
    Who,
    Wire,
    decode_error,
    default_author,
    get_op,
    head_op,
    history_op,
    register_op,
    rules_op,
)
from .replication import acknowledged
from .schema import AnyParams, ParamSchema
from .sealing import rotate_op, sealed_op, sealer_from
from .snapshot import Change, FieldChange, Snapshot, diff_values
from .urls import check_follow_replicas
from .variants import VariantSet
from .writes import (
    BatchError,
    Committed,
    check_op,
    commit_op,
    rollback_op,
    set_many_op,
    variant_op,
)

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["Audit", "BusCore", "Guarded", "WatchOptions", "relay"]

log = logging.getLogger("hotparams")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class Audit(TypedDict, total=False):
    """Who makes a write, why, and from where: the audit entry's ``author``
    (default: the OS user), ``reason`` and ``source`` (default:
    ``python:<host>:<pid>``)."""

    author: str | None
    reason: str
    source: str


class Guarded(Audit, total=False):
    """:class:`Audit`, and ``expect_version``: the write is made only if the
    namespace is still at that version, else
    :class:`~hotparams.VersionConflict`."""

    expect_version: int | None


class WatchOptions(TypedDict, total=False):
    """How :meth:`Bus.watch <hotparams.Bus.watch>` (and the asyncio one)
    makes a live handle.

    ``cache``: a file the handle keeps at its newest version and starts
    from when Redis cannot answer; ``defaults``: start from the model's
    defaults when neither Redis nor the cache can; ``reconcile_interval``:
    seconds between two probes of the subscription and the stored version
    (default: the setting); ``worker_name``: the handle reports to the
    fleet as ``host:pid:worker_name``; ``metrics``: where it records
    (default: the process-wide :func:`hotparams.metrics.default_metrics`).
    """

    cache: str | os.PathLike[str] | None
    defaults: bool
    reconcile_interval: float | None
    worker_name: str
    metrics: Metrics | None


_AUDIT = frozenset(Audit.__annotations__)
_GUARDED = frozenset(Guarded.__annotations__) | _AUDIT


def _who(method: str, options: Mapping[str, Any], allowed: frozenset[str] = _AUDIT) -> Who:
    if not allowed.issuperset(options):
        # **options accepts any keyword: refuse a misspelt one like Python would
        unknown = sorted(set(options) - allowed)
        raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}")
    author = options.get("author")
    return Who(author or default_author(), options.get("reason", ""), options.get("source", ""))


def _guarded(method: str, options: Mapping[str, Any]) -> tuple[Who, int | None]:
    return _who(method, options, _GUARDED), options.get("expect_version")


def relay(
    op: Generator[Any, Any, T], each: Callable[[Any], Generator[Wire, Any, Any]]
) -> Generator[Wire, Any, T]:
    """Run ``op``, making each of its calls a conversation of its own
    (``each(call)``); what that raises is thrown into ``op``."""
    try:
        call = next(op)
        while True:
            try:
                reply = yield from each(call)
            except Exception as exc:  # thrown into the op, which may handle it
                call = op.throw(exc)
            else:
                call = op.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


_NAMESPACE_SETTINGS = ("retention", "audit_maxlen", "max_value_bytes")


class BusCore:
    """Models, known states and the operations of a bus (no I/O)."""

    def __init__(self, settings: Settings | None, url: str) -> None:
        self.settings = settings or Settings()
        self.url = url
        if self.settings.follow_replicas:
            check_follow_replicas(url)
        self._schemas: dict[str, ParamSchema[Any]] = {}
        #: keys_for() of the namespaces with a bound model (the writes' hot path)
        self._bound_keys: dict[str, Keys] = {}
        self._states: dict[str, Any] = {}
        #: the shared subscriptions of this bus's live handles, by (process, node):
        #: see hotparams.hub (made and used by the drivers)
        self._hubs: dict[tuple[int, str], Any] = {}
        #: the report pump of this bus's live handles: (process, pump), see hotparams.reporting
        self._pump: tuple[int, Any] | None = None
        #: the Lua library this bus installs (see hotparams.library)
        self.library: Library = current()
        #: whether Redis runs a library that serves this bus (checked before the first call)
        self._library_checked = False
        #: whether this bus may FUNCTION LOAD (False after Redis refused it)
        self._may_load = self.settings.auto_install
        self._load_refused = ""
        #: secret fields encrypted at rest (None: no keys, nothing sealed or opened)
        self.sealer = sealer_from([k.get_secret_value() for k in self.settings.secret_keys])
        self._sealed_fields: dict[str, frozenset[str]] = {}

    # ------------------------------------------------------------ serving

    def serve(self, op: Op[T]) -> Generator[Wire, Any, T]:
        """``op`` as a driver performs it: its secrets sealed and opened
        (:mod:`hotparams.sealing`), its writes acknowledged by replicas
        (:mod:`hotparams.replication`), each call made after the library
        check, retried on a failed connection, its error reply decoded."""
        if self.sealer is not None:
            op = sealed_op(op, self.sealer, self._sealed_fields, self._defaults_of)
        return relay(acknowledged(op, self.settings), self._checked)

    def _checked(self, call: Call) -> Generator[Wire, Any, Any]:
        """One call after the library check; once more after a reload if
        Redis lost its functions (a restart without persistence, FLUSHALL)."""
        if not self._library_checked:
            yield from self._check_library()
        try:
            return (yield from self._tried(call))
        except LibraryMissing:
            pass
        self._library_checked = False
        yield from self._check_library()
        try:
            return (yield from self._tried(call))
        except LibraryMissing as exc:
            raise ProtocolError(f"Redis lacks a hotparams function: {exc}") from None

    def _tried(self, call: Call) -> Generator[Wire, Any, Any]:
        """One call, tried again after a failed connection (``retry_attempts``
        tries within ``retry_deadline``, jittered waits between them), with
        its error replies decoded."""
        waits = None
        while True:
            try:
                reply = yield call
            except Transient as exc:
                waits = waits or retry_waits(self.settings)
                wait = next(waits, None)
                if wait is None:
                    raise ConnectionFailed(redact_url(self.url), str(exc)) from None
                yield Sleep(wait)
                continue
            except ErrorReply as exc:
                raise decode_error(call.namespace, exc) from None
            if isinstance(call, Batch):
                return [
                    decode_error(c.namespace, r) if isinstance(r, ErrorReply) else r
                    for c, r in zip(call.calls, reply, strict=True)
                ]
            if isinstance(call, Broadcast):
                return [decode_error("", r) if isinstance(r, ErrorReply) else r for r in reply]
            return reply

    def _check_library(self) -> Generator[Wire, Any, Installed]:
        result = yield from relay(self._library_op(), self._tried)
        self._library_checked = True
        return result

    def _library_op(self) -> Op[Installed]:
        """Make sure Redis runs a library that serves this bus (before its
        first call, and again when Redis lost its functions)."""
        try:
            result = yield from install_op(self.library, may_load=self._may_load)
        except LibraryMismatch as exc:
            if exc.permission:  # refused once: never FUNCTION LOAD again
                self._may_load = False
                self._load_refused = exc.permission
            elif self._load_refused:  # say why this bus does not load it
                raise LibraryMismatch(
                    f"{exc} (this client may not load it: {self._load_refused})",
                    installed=exc.installed,
                    wanted=exc.wanted,
                    permission=self._load_refused,
                ) from None
            raise
        if result.action in ("installed", "upgraded"):
            log.info("%s", result.describe(), extra={"event": "library"})
        return result

    # ------------------------------------------------------------ the library

    def _install(self) -> Generator[Wire, Any, Installed]:
        """Load or upgrade the Lua library (``hotparams install``; needs the
        ACL permission ``function|load``), whatever ``auto_install`` says.
        Never replaces a newer release."""
        result = yield from relay(install_op(self.library, may_load=True), self._tried)
        self._library_checked = True
        return result

    def _load_library(self) -> Generator[Wire, Any, Installed]:
        """Make sure Redis runs a library that serves this bus (as before a first call)."""
        self._library_checked = False
        return (yield from self._check_library())

    install = operation(_install, raw=True)
    load_library = operation(_load_library, raw=True)

    def _defaults_of(self, namespace: str) -> Mapping[str, str]:
        schema = self._schemas.get(namespace)
        return schema.defaults_json if schema is not None else {}

    # ------------------------------------------------------------ models

    def bind(self, namespace: str, model: type[M]) -> ParamSchema[M]:
        """Tell this bus the model of a namespace without writing to Redis.

        Writes then run the full model (cross-field rules) before Redis sees them.
        """
        keys = keys_for(namespace)
        schema = self._schemas.get(namespace)
        if schema is None or schema.model is not model:
            schema = ParamSchema.of(model)
            self._schemas[namespace] = schema
            self._bound_keys[namespace] = keys
            self._states.pop(namespace, None)
        return schema

    def _keys(self, namespace: str) -> Keys:
        """``keys_for(namespace)``, looked up for a namespace with a bound model."""
        keys = self._bound_keys.get(namespace)
        return keys if keys is not None else keys_for(namespace)

    def _follower_settings(self) -> Settings | None:
        """The settings of the bus a live handle subscribes and reads on when
        it follows a replica (``follow_replicas``; it never loads the library:
        replicas get it from their master), None when it follows this bus."""
        if not self.settings.follow_replicas:
            return None
        return self.settings.model_copy(update={"follow_replicas": False, "auto_install": False})

    def schema_of(self, namespace: str) -> ParamSchema[Any] | None:
        """The model bound to ``namespace`` (:meth:`bind`), if any."""
        return self._schemas.get(namespace)

    def _schema_for_watch(self, namespace: str, model: type[M]) -> ParamSchema[M]:
        keys_for(namespace)
        bound = self._schemas.get(namespace)
        if bound is not None and bound.model is model:
            return bound
        return ParamSchema.of(model)

    def _namespace_settings(self, **overrides: int | None) -> dict[str, int]:
        """The settings a new namespace gets: ``overrides``, else this bus's."""
        settings_from({k: v for k, v in overrides.items() if v is not None})
        return {
            name: overrides.get(name) or getattr(self.settings, name)
            for name in _NAMESPACE_SETTINGS
        }

    def _remember(self, namespace: str, result: Committed) -> int:
        if result.state is not None:
            self._states[namespace] = result.state
        else:
            self._states.pop(namespace, None)
        return result.version

    # ------------------------------------------------------------ writes

    @operation
    def register(
        self,
        namespace: str,
        model: type[BaseModel],
        *,
        initial: Mapping[str, Any] | None = None,
        retention: int | None = None,
        audit_maxlen: int | None = None,
        max_value_bytes: int | None = None,
        allow_raw_writes: bool = False,
        **audit: Unpack[Audit],
    ) -> Op[Registered]:
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
        refuses (guarantee 5's second half).  ``author``, ``reason`` and
        ``source`` go to the audit (:class:`~hotparams.core.Audit`).
        """
        who = _who("register", audit)
        keys = keys_for(namespace)
        schema = self.bind(namespace, model)
        explicit = check_settings(
            namespace,
            {
                "retention": retention,
                "audit_maxlen": audit_maxlen,
                "max_value_bytes": max_value_bytes,
            },
        )
        result = yield from register_op(
            keys,
            schema,
            epoch=secrets.token_hex(8),
            who=who,
            initial=initial,
            settings=self._namespace_settings(**explicit),
            explicit=explicit,
            allow_raw_writes=allow_raw_writes,
        )
        self._states.pop(namespace, None)
        return result

    def _commit(
        self,
        method: str,
        namespace: str,
        changes: Mapping[str, Any],
        unset: Iterable[str],
        options: Mapping[str, Any],
    ) -> Op[int]:
        who = _who(method, options, _GUARDED)
        keys = self._keys(namespace)
        names = [unset] if isinstance(unset, str) else list(unset)
        result = yield from commit_op(
            keys,
            self._schemas.get(namespace),
            dict(changes),
            unset=names,
            expect=options.get("expect_version"),
            who=who,
            known=self._states.get(namespace),
        )
        return self._remember(namespace, result)

    @operation
    @traced("set")
    def set(self, namespace: str, changes: Mapping[str, Any], **write: Unpack[Guarded]) -> Op[int]:
        """Change some fields; returns the new version.

        With ``expect_version`` the change is made only if the namespace is
        still at that version, else :class:`~hotparams.VersionConflict`.
        A change that changes nothing returns the current version.
        ``author``, ``reason`` and ``source`` go to the audit
        (:class:`~hotparams.core.Guarded`).
        """
        return self._commit("set", namespace, changes, (), write)  # lazy: a generator

    @operation
    @traced("unset")
    def unset(self, namespace: str, fields: Iterable[str], **write: Unpack[Guarded]) -> Op[int]:
        """Reset fields to their model defaults; returns the new version."""
        return self._commit("unset", namespace, {}, fields, write)  # lazy: a generator

    @operation
    def check(
        self,
        namespace: str,
        changes: Mapping[str, Any],
        *,
        unset: Iterable[str] = (),
        expect_version: int | None = None,
    ) -> Op[int]:
        """A dry run of :meth:`set` (and ``unset``): raises what the write
        would raise (:class:`~hotparams.InvalidParams` with the messages of
        Redis's rules, then of the bound model), writes nothing; returns the
        current version the change was checked against."""
        keys = keys_for(namespace)
        names = [unset] if isinstance(unset, str) else list(unset)
        return (
            yield from check_op(
                keys,
                self._schemas.get(namespace),
                dict(changes),
                unset=names,
                expect=expect_version,
            )
        )

    @operation
    def set_many(
        self, items: Iterable[tuple[str, Mapping[str, Any]]], **audit: Unpack[Audit]
    ) -> Op[list[int]]:
        """Several changes, of one or several namespaces, in one round trip.

        Every change is validated before anything is sent (an invalid one
        raises and nothing is written); each is then atomic on its own, in
        order, but the batch is not a transaction: if Redis rejects one, a
        :class:`~hotparams.BatchError` tells which were committed.
        """
        who = _who("set_many", audit)
        listed = [(self._keys(ns), self._schemas.get(ns), dict(ch)) for ns, ch in items]
        states = self._states
        known = {k.namespace: states[k.namespace] for k, _, _ in listed if k.namespace in states}
        try:
            results = yield from set_many_op(listed, who=who, known=known)
        except BatchError:
            for keys, _, _ in listed:
                states.pop(keys.namespace, None)
            raise
        return [
            self._remember(keys.namespace, result)
            for (keys, _, _), result in zip(listed, results, strict=True)
        ]

    def _variant(
        self,
        method: str,
        namespace: str,
        name: str,
        options: Mapping[str, Any],
        *,
        overrides: Mapping[str, Any] | None = None,
        percent: float | None = None,
        users: Iterable[str] | None = None,
        remove: bool = False,
    ) -> Op[int]:
        who, expect = _guarded(method, options)
        listed = None if users is None else [users] if isinstance(users, str) else list(users)
        result = yield from variant_op(
            keys_for(namespace),
            self._schemas.get(namespace),
            name,
            overrides=overrides,
            percent=percent,
            users=listed,
            remove=remove,
            expect=expect,
            who=who,
            known=self._states.get(namespace),
        )
        return self._remember(namespace, result)

    @operation
    @traced("variant")
    def set_variant(
        self,
        namespace: str,
        name: str,
        overrides: Mapping[str, Any] | None = None,
        *,
        percent: float | None = None,
        users: Iterable[str] | None = None,
        **write: Unpack[Guarded],
    ) -> Op[int]:
        """Create or change an A/B variant; returns the new version.

        ``overrides`` replaces the variant's overrides, ``percent`` (0-100,
        in steps of 0.01) widens or narrows its share of users, ``users``
        replaces its allow-list; None leaves a part as it is.  The base
        merged with each variant must satisfy the model.
        """
        return (
            yield from self._variant(
                "set_variant",
                namespace,
                name,
                write,
                overrides=overrides,
                percent=percent,
                users=users,
            )
        )

    @operation
    @traced("variant")
    def remove_variant(self, namespace: str, name: str, **write: Unpack[Guarded]) -> Op[int]:
        """Remove an A/B variant (its users get the base); returns the new version."""
        return (yield from self._variant("remove_variant", namespace, name, write, remove=True))

    @operation
    @traced("rollback")
    def rollback(self, namespace: str, version: int, **write: Unpack[Guarded]) -> Op[int]:
        """Make the values of ``version`` current again, as a new version."""
        who, expect = _guarded("rollback", write)
        result = yield from rollback_op(
            keys_for(namespace), self._schemas.get(namespace), version, expect=expect, who=who
        )
        self._states.pop(namespace, None)
        return result

    @operation
    @traced("restore")
    def restore(
        self,
        namespace: str,
        values: Snapshot[Any] | Mapping[str, Any],
        *,
        model: type[BaseModel] | None = None,
        **audit: Unpack[Audit],
    ) -> Op[int]:
        """Write a last good snapshot (or values) back as the current state.

        After a loss (FLUSHALL, a restart without persistence) pass a
        worker's ``live.current``: its values and A/B variants come back.  An
        existing namespace gets them as a new version (audited as
        ``restore``); a missing one is registered as a new history (epoch).
        The model is ``model``, else the one bound to this Bus, else the
        snapshot's.
        """
        from .writes import restore_op

        who = _who("restore", audit)
        keys = keys_for(namespace)
        if model is not None:
            schema = self.bind(namespace, model)
        elif namespace in self._schemas:
            schema = self._schemas[namespace]
        elif isinstance(values, Snapshot) and not isinstance(values.params, AnyParams):
            schema = self.bind(namespace, type(values.params))
        else:
            raise SchemaError(f"restoring {namespace!r} needs its model (model=...)")
        raw = dict(values.values if isinstance(values, Snapshot) else values)
        variants = values.variants.to_json() if isinstance(values, Snapshot) else None
        version = yield from restore_op(
            keys,
            schema,
            raw,
            who=who,
            settings=self._namespace_settings(),
            variants=variants,
        )
        self._states.pop(namespace, None)
        return version

    # ------------------------------------------------------------ lifecycle

    @operation
    def configure(
        self,
        namespace: str,
        *,
        retention: int | None = None,
        audit_maxlen: int | None = None,
        max_value_bytes: int | None = None,
        **write: Unpack[Guarded],
    ) -> Op[NamespaceSettings]:
        """Change the settings of a namespace (audited as ``configure``);
        returns them.  Hard caps: ``retention`` 1-10,000 versions (older ones
        are deleted now), ``audit_maxlen`` 100-1,000,000 entries,
        ``max_value_bytes`` 1-16 MiB (refused below a stored value's size)."""
        who, expect = _guarded("configure", write)
        wanted = {
            "retention": retention,
            "audit_maxlen": audit_maxlen,
            "max_value_bytes": max_value_bytes,
        }
        return (yield from configure_op(keys_for(namespace), wanted, who=who, expect=expect))

    @operation
    def migrate(
        self,
        namespace: str,
        model: type[BaseModel],
        *,
        drop: Iterable[str] = (),
        rename: Mapping[str, str] | None = None,
        dry_run: bool = False,
        **write: Unpack[Guarded],
    ) -> Op[Migration]:
        """Change the stored schema to ``model``'s: drop fields, rename them
        (``{"old": "new"}``), apply changed rules.  One atomic call checks
        every stored value (base and A/B variant overrides) against the new
        rules first and raises InvalidParams naming those that would not
        fit; then it stores a new schema revision and version (audited as
        ``migrate``).  ``dry_run`` returns the plan and writes nothing.
        Stored fields the model lacks are kept unless dropped."""
        who, expect = _guarded("migrate", write)
        keys = keys_for(namespace)
        schema = ParamSchema.of(model)
        result = yield from migrate_op(
            keys,
            schema,
            drop=[drop] if isinstance(drop, str) else list(drop),
            rename=rename or {},
            who=who,
            dry_run=dry_run,
            expect=expect,
        )
        if result.applied:
            self._schemas[namespace] = schema
            self._states.pop(namespace, None)
        return result

    @operation
    def delete(self, namespace: str, **write: Unpack[Guarded]) -> Op[int]:
        """Delete a namespace; returns the version it had.  Its versions,
        schema and meta go; a tombstone (who, when, why) and the audit stay.
        Running workers keep their last good snapshot and report the
        deletion (``LiveStatus.deleted``); registering it again starts a new
        history (epoch), which they follow."""
        who, expect = _guarded("delete", write)
        version = yield from delete_op(keys_for(namespace), who=who, expect=expect)
        self._states.pop(namespace, None)
        return version

    @operation
    def rotate_secrets(
        self, namespace: str, **audit: Unpack[Audit]
    ) -> Op[tuple[int, int, tuple[str, ...]]]:
        """Re-encrypt every secret value of ``namespace`` (and of its A/B
        variants) with the first secret key: a new version, audited as
        ``rotate``.  Returns (previous version, new version, the fields)."""
        who = _who("rotate_secrets", audit)
        if self.sealer is None:
            raise ConfigError(
                f"rotating the secrets of {namespace!r} needs the keys "
                "(HOTPARAMS_SECRET_KEYS or connect(secret_keys=...)), the new one first"
            )
        keys_for(namespace)
        result = yield from rotate_op(namespace, self._sealed_fields, who)
        self._states.pop(namespace, None)
        return result

    @operation
    def namespaces(self) -> Op[list[NamespaceInfo]]:
        """Every namespace in this Redis, by name: version, epoch, last
        change, settings and live workers."""
        return (yield from namespaces_op())

    # ------------------------------------------------------------ reads

    def _get(
        self, namespace: str, model: type[BaseModel] | None, version: int | None
    ) -> Op[Snapshot[Any]]:
        keys = keys_for(namespace)
        schema = self.bind(namespace, model) if model else self._schemas.get(namespace)
        stored = yield from get_op(keys, version)
        if schema is not None:
            return stored.snapshot(schema)
        secret = yield from self._secret_fields(namespace)
        return stored.snapshot(None, secret)

    @operation
    def head(self, namespace: str) -> Op[Head]:
        """The current version, epoch and commit time, without the values."""
        return (yield from head_op(keys_for(namespace)))

    @operation
    def history(self, namespace: str, limit: int = 50) -> Op[list[Change]]:
        """Audit entries, newest first; secret values are masked."""
        return (yield from history_op(keys_for(namespace), limit))

    def _rules(self, namespace: str, schema_rev: int | None = None) -> Op[dict[str, Any]]:
        """The validation rules stored for the namespace's current schema
        (or for the schema revision ``schema_rev``, e.g. a retained version's)."""
        return (yield from rules_op(keys_for(namespace), schema_rev))

    def _secret_fields(self, namespace: str) -> Op[frozenset[str]]:
        """The namespace's secret fields, by its stored schema."""
        rules = yield from self._rules(namespace)
        return frozenset(n for n, r in rules.get("fields", {}).items() if r.get("secret"))

    rules = operation(_rules)
    secret_fields = operation(_secret_fields)

    @operation
    def diff(self, namespace: str, a: int, b: int) -> Op[dict[str, FieldChange]]:
        """Fields that differ between versions ``a`` and ``b``; secrets masked."""
        keys = keys_for(namespace)
        old = yield from get_op(keys, a)
        new = yield from get_op(keys, b)
        secret = yield from self._secret_fields(namespace)
        return diff_values(old.values(), new.values(), secret)

    def _variants(self, namespace: str) -> Op[VariantSet]:
        """The current A/B variants of a namespace."""
        stored = yield from get_op(keys_for(namespace))
        return VariantSet.from_json(stored.variants)

    variants = operation(_variants)

    # ------------------------------------------------------------ fleet

    @operation
    def workers(self, namespace: str) -> Op[list[WorkerReport]]:
        """The live workers' reports on a namespace (expired ones are gone)."""
        _, reports = yield from workers_op(keys_for(namespace).namespace)
        return reports

    @operation
    def fleet(self, namespace: str) -> Op[tuple[int, list[WorkerReport]]]:
        """Redis's clock (ms since the epoch) and the live workers' reports,
        read together: how old each report is, by the clock that dates them."""
        return (yield from workers_op(keys_for(namespace).namespace))

    @operation
    def convergence(self, namespace: str, version: int | None = None) -> Op[Convergence]:
        """How many live workers run ``version`` (default: the current one),
        which are behind, and the p50/p99 lag with which it reached them."""
        head = yield from head_op(keys_for(namespace))
        _, reports = yield from workers_op(namespace)
        return convergence(namespace, version or head.version, head.epoch, reports, head)

    @operation
    def record_exposures(self, namespace: str, salt: str, counts: dict[str | None, int]) -> Op[int]:
        """Add counted variant assignments (a Live handle batches these)."""
        return (yield from expose_op(keys_for(namespace).namespace, salt, counts))

    @operation
    def exposures(self, namespace: str) -> Op[dict[str | None, int]]:
        """How many assignments each variant of the current experiment got
        (None: the base), as counted and flushed by the workers."""
        keys = keys_for(namespace)
        variants = yield from self._variants(namespace)
        if not variants.salt:
            return {}
        return (yield from exposures_op(namespace, keys.exposures, variants.salt))

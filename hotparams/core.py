"""What the sync :class:`~hotparams.Bus` and the asyncio
:class:`~hotparams.aio.AsyncBus` share, free of I/O.

:class:`BusCore` holds the models bound to namespaces and the last state a
writer knows of each (so a change is validated against it without a read),
and builds every public operation as a generator of calls (see
:mod:`hotparams.protocol`).  The two buses only drive these generators,
one with blocking calls, one with ``await``: a method of either is one line.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from .codec import loads
from .config import ConfigError, Settings, settings_from
from .errors import LibraryMismatch, SchemaError
from .fleet import Convergence, WorkerReport, convergence, expose_op, exposures_op, workers_op
from .keys import keys_for
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
from .otel import traced
from .protocol import (
    Command,
    Head,
    Op,
    Registered,
    Who,
    default_author,
    get_op,
    head_op,
    history_op,
    register_op,
)
from .replication import acknowledged
from .schema import AnyParams, ParamSchema
from .sealing import rotate_op, sealed_op, sealer_from
from .snapshot import Change, FieldChange, Snapshot, diff_values
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

__all__ = ["BusCore"]

log = logging.getLogger("hotparams")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_NAMESPACE_SETTINGS = ("retention", "audit_maxlen", "max_value_bytes")


def _who(author: str | None, reason: str, source: str) -> Who:
    return Who(author or default_author(), reason, source)


class BusCore:
    """Models, known states and the operations of a bus (no I/O)."""

    def __init__(self, settings: Settings | None, url: str) -> None:
        self.settings = settings or Settings()
        self.url = url
        self._schemas: dict[str, ParamSchema[Any]] = {}
        self._states: dict[str, Any] = {}
        #: the Lua library this bus installs (see hotparams.library)
        self.library: Library = current()
        #: whether this bus may FUNCTION LOAD (False after Redis refused it)
        self._may_load = self.settings.auto_install
        self._load_refused = ""
        #: secret fields encrypted at rest (None: no keys, nothing sealed or opened)
        self.sealer = sealer_from([k.get_secret_value() for k in self.settings.secret_keys])
        self._sealed_fields: dict[str, frozenset[str]] = {}

    def sealing(self, op: Op[T]) -> Op[T]:
        """``op`` with its secret values sealed and opened (:mod:`hotparams.sealing`)
        and its writes acknowledged by replicas (:mod:`hotparams.replication`)."""
        if self.sealer is None:
            return acknowledged(op, self.settings)
        sealed = sealed_op(op, self.sealer, self._sealed_fields, self._defaults_of)
        return acknowledged(sealed, self.settings)

    def _defaults_of(self, namespace: str) -> Mapping[str, str]:
        schema = self._schemas.get(namespace)
        return schema.defaults_json if schema is not None else {}

    def op_rotate_secrets(
        self, namespace: str, *, author: str | None, reason: str, source: str
    ) -> Op[tuple[int, int, tuple[str, ...]]]:
        if self.sealer is None:
            raise ConfigError(
                f"rotating the secrets of {namespace!r} needs the keys "
                "(HOTPARAMS_SECRET_KEYS or connect(secret_keys=...)), the new one first"
            )
        keys_for(namespace)
        result = yield from rotate_op(namespace, self._sealed_fields, _who(author, reason, source))
        self._states.pop(namespace, None)
        return result

    # ------------------------------------------------------------ the library

    def op_library(self) -> Op[Installed]:
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

    def op_install(self) -> Op[Installed]:
        """``hotparams install``: load or upgrade the library, whatever ``auto_install`` says."""
        return install_op(self.library, may_load=True)

    # ------------------------------------------------------------ models

    def bind(self, namespace: str, model: type[M]) -> ParamSchema[M]:
        """Tell this bus the model of a namespace without writing to Redis.

        Writes then run the full model (cross-field rules) before Redis sees them.
        """
        keys_for(namespace)
        schema = self._schemas.get(namespace)
        if schema is None or schema.model is not model:
            schema = ParamSchema.of(model)
            self._schemas[namespace] = schema
            self._states.pop(namespace, None)
        return schema

    def schema_of(self, namespace: str) -> ParamSchema[Any] | None:
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

    def op_register(
        self,
        namespace: str,
        model: type[BaseModel],
        *,
        initial: Mapping[str, Any] | None,
        author: str | None,
        reason: str,
        source: str,
        retention: int | None,
        audit_maxlen: int | None,
        max_value_bytes: int | None,
        allow_raw_writes: bool = False,
    ) -> Op[Registered]:
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
            who=_who(author, reason, source),
            initial=initial,
            settings=self._namespace_settings(**explicit),
            explicit=explicit,
            allow_raw_writes=allow_raw_writes,
        )
        self._states.pop(namespace, None)
        return result

    @traced("set")
    def op_commit(
        self,
        namespace: str,
        changes: Mapping[str, Any],
        unset: Iterable[str],
        *,
        expect_version: int | None,
        author: str | None,
        reason: str,
        source: str,
    ) -> Op[int]:
        keys = keys_for(namespace)
        names = [unset] if isinstance(unset, str) else list(unset)
        result = yield from commit_op(
            keys,
            self._schemas.get(namespace),
            dict(changes),
            unset=names,
            expect=expect_version,
            who=_who(author, reason, source),
            known=self._states.get(namespace),
        )
        return self._remember(namespace, result)

    def op_check(
        self,
        namespace: str,
        changes: Mapping[str, Any],
        unset: Iterable[str],
        *,
        expect_version: int | None,
    ) -> Op[int]:
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

    def op_set_many(
        self,
        items: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        author: str | None,
        reason: str,
        source: str,
    ) -> Op[list[int]]:
        listed = [(keys_for(ns), self._schemas.get(ns), dict(ch)) for ns, ch in items]
        states = self._states
        known = {k.namespace: states[k.namespace] for k, _, _ in listed if k.namespace in states}
        try:
            results = yield from set_many_op(listed, who=_who(author, reason, source), known=known)
        except BatchError:
            for keys, _, _ in listed:
                states.pop(keys.namespace, None)
            raise
        return [
            self._remember(keys.namespace, result)
            for (keys, _, _), result in zip(listed, results, strict=True)
        ]

    @traced("variant")
    def op_variant(
        self,
        namespace: str,
        name: str,
        *,
        overrides: Mapping[str, Any] | None = None,
        percent: float | None = None,
        users: Iterable[str] | None = None,
        remove: bool = False,
        expect_version: int | None,
        author: str | None,
        reason: str,
        source: str,
    ) -> Op[int]:
        listed = None if users is None else [users] if isinstance(users, str) else list(users)
        result = yield from variant_op(
            keys_for(namespace),
            self._schemas.get(namespace),
            name,
            overrides=overrides,
            percent=percent,
            users=listed,
            remove=remove,
            expect=expect_version,
            who=_who(author, reason, source),
            known=self._states.get(namespace),
        )
        return self._remember(namespace, result)

    @traced("rollback")
    def op_rollback(
        self,
        namespace: str,
        version: int,
        *,
        expect_version: int | None,
        author: str | None,
        reason: str,
        source: str,
    ) -> Op[int]:
        result = yield from rollback_op(
            keys_for(namespace),
            self._schemas.get(namespace),
            version,
            expect=expect_version,
            who=_who(author, reason, source),
        )
        self._states.pop(namespace, None)
        return result

    @traced("restore")
    def op_restore(
        self,
        namespace: str,
        values: Snapshot[Any] | Mapping[str, Any],
        *,
        model: type[BaseModel] | None,
        author: str | None,
        reason: str,
        source: str,
    ) -> Op[int]:
        from .writes import restore_op

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
            who=_who(author, reason, source),
            settings=self._namespace_settings(),
            variants=variants,
        )
        self._states.pop(namespace, None)
        return version

    # ------------------------------------------------------------ lifecycle

    def op_configure(
        self,
        namespace: str,
        *,
        retention: int | None,
        audit_maxlen: int | None,
        max_value_bytes: int | None,
        expect_version: int | None,
        author: str | None,
        reason: str,
        source: str,
    ) -> Op[NamespaceSettings]:
        wanted = {
            "retention": retention,
            "audit_maxlen": audit_maxlen,
            "max_value_bytes": max_value_bytes,
        }
        return (
            yield from configure_op(
                keys_for(namespace),
                wanted,
                who=_who(author, reason, source),
                expect=expect_version,
            )
        )

    def op_migrate(
        self,
        namespace: str,
        model: type[BaseModel],
        *,
        drop: Iterable[str],
        rename: Mapping[str, str],
        dry_run: bool,
        expect_version: int | None,
        author: str | None,
        reason: str,
        source: str,
    ) -> Op[Migration]:
        keys = keys_for(namespace)
        schema = ParamSchema.of(model)
        result = yield from migrate_op(
            keys,
            schema,
            drop=[drop] if isinstance(drop, str) else list(drop),
            rename=rename,
            who=_who(author, reason, source),
            dry_run=dry_run,
            expect=expect_version,
        )
        if result.applied:
            self._schemas[namespace] = schema
            self._states.pop(namespace, None)
        return result

    def op_delete(
        self,
        namespace: str,
        *,
        expect_version: int | None,
        author: str | None,
        reason: str,
        source: str,
    ) -> Op[int]:
        version = yield from delete_op(
            keys_for(namespace), who=_who(author, reason, source), expect=expect_version
        )
        self._states.pop(namespace, None)
        return version

    def op_namespaces(self) -> Op[list[NamespaceInfo]]:
        return (yield from namespaces_op())

    # ------------------------------------------------------------ reads

    def op_get(
        self, namespace: str, model: type[BaseModel] | None, version: int | None
    ) -> Op[Snapshot[Any]]:
        keys = keys_for(namespace)
        schema = self.bind(namespace, model) if model else self._schemas.get(namespace)
        stored = yield from get_op(keys, version)
        if schema is not None:
            return stored.snapshot(schema)
        secret = yield from self.op_secret_fields(namespace)
        return stored.snapshot(None, secret)

    def op_head(self, namespace: str) -> Op[Head]:
        return (yield from head_op(keys_for(namespace)))

    def op_history(self, namespace: str, limit: int) -> Op[list[Change]]:
        return (yield from history_op(keys_for(namespace), limit))

    def op_rules(self, namespace: str) -> Op[dict[str, Any]]:
        keys = keys_for(namespace)
        head = yield from head_op(keys)
        raw = yield Command(namespace, ("HGET", keys.schema, str(head.schema_rev)))
        return loads(raw) if raw else {"fields": {}}

    def op_secret_fields(self, namespace: str) -> Op[frozenset[str]]:
        rules = yield from self.op_rules(namespace)
        return frozenset(n for n, r in rules.get("fields", {}).items() if r.get("secret"))

    def op_diff(self, namespace: str, a: int, b: int) -> Op[dict[str, FieldChange]]:
        keys = keys_for(namespace)
        old = yield from get_op(keys, a)
        new = yield from get_op(keys, b)
        secret = yield from self.op_secret_fields(namespace)
        return diff_values(old.values(), new.values(), secret)

    def op_variants(self, namespace: str) -> Op[VariantSet]:
        stored = yield from get_op(keys_for(namespace))
        return VariantSet.from_json(stored.variants)

    # ------------------------------------------------------------ fleet

    def op_workers(self, namespace: str) -> Op[list[WorkerReport]]:
        _, reports = yield from workers_op(keys_for(namespace).namespace)
        return reports

    def op_convergence(self, namespace: str, version: int | None) -> Op[Convergence]:
        head = yield from head_op(keys_for(namespace))
        _, reports = yield from workers_op(namespace)
        return convergence(namespace, version or head.version, head.epoch, reports, head)

    def op_record_exposures(
        self, namespace: str, salt: str, counts: dict[str | None, int]
    ) -> Op[int]:
        return (yield from expose_op(keys_for(namespace).namespace, salt, counts))

    def op_exposures(self, namespace: str) -> Op[dict[str | None, int]]:
        keys = keys_for(namespace)
        variants = yield from self.op_variants(namespace)
        if not variants.salt:
            return {}
        return (yield from exposures_op(namespace, keys.exposures, variants.salt))

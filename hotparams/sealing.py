"""Secret fields encrypted at rest (I/O-free): the client seals them with
Fernet before anything leaves the process, and opens them after a read.

Keys: ``HOTPARAMS_SECRET_KEYS`` (comma-separated Fernet keys) or
``hotparams.connect(url, secret_keys=[...])``; the first key encrypts, every
key decrypts (``cryptography``'s MultiFernet), so a new key goes first and
an old one stays listed until ``hotparams secrets rotate NS`` has
re-encrypted the namespace with the new one.

A namespace registered by a client with keys is *encrypted*: each secret
field's rule says ``"sealed": true`` and has no default (a default would
be the secret in clear), and the Lua library refuses any value of such a
field that is not a token, ``"hpenc:1:<Fernet token>"``, whoever writes it.
Redis never holds, logs, replicates or persists the value itself: not in a
version, the audit, an event, an FCALL argument (SLOWLOG, AOF,
replication) or the schema.

The sealing is one wrapper around an operation (:func:`sealed_op`): it
rewrites the calls an operation yields (the rules of ``hp_register`` and
``hp_migrate``, the values and variant overrides of ``hp_commit``) and
opens the values of ``hp_get`` replies, so no operation of
:mod:`hotparams.protocol` or :mod:`hotparams.writes` knows of it.  A value
that no key opens stays a token, and :meth:`ParamSchema.validate` refuses
it with a clear reason: a worker without the keys keeps its last good
snapshot and reports why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar

from .codec import TOKEN_PREFIX, UNOPENED, dumps, is_token, loads, unopened
from .config import ConfigError
from .errors import InvalidParams, NamespaceNotFound
from .protocol import VARIANTS_FIELD, Batch, Command, FCall, Op, Stale, Who, parse_stored, text

__all__ = [
    "ENV_KEYS",
    "TOKEN_PREFIX",
    "Sealer",
    "is_token",
    "rotate_op",
    "seal_rules",
    "sealed_op",
    "sealer_from",
]

T = TypeVar("T")

ENV_KEYS = "HOTPARAMS_SECRET_KEYS"
#: the functions whose ARGV[1] is a schema's rules
_RULES_FUNCTIONS = ("hp_register", "hp_migrate")
_MAX_ROTATE_RETRIES = 16


class Sealer:
    """Encrypts with the first key, decrypts with any (never shows a key)."""

    def __init__(self, keys: Sequence[str]) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError:  # pragma: no cover - the extra is missing
            raise ConfigError(
                "secret keys need the cryptography package: pip install 'hotparams[secrets]'"
            ) from None
        if not keys:
            raise ConfigError("secret keys: at least one Fernet key is needed")
        fernets = []
        for index, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.strip().encode()))
            except (ValueError, TypeError):
                raise ConfigError(
                    f"secret key {index} of {len(keys)} is not a Fernet key (32 url-safe "
                    "base64-encoded bytes: Fernet.generate_key())"
                ) from None
        self._fernet = MultiFernet(fernets)
        self.count = len(fernets)

    def __repr__(self) -> str:
        return f"<hotparams Sealer: {self.count} key{'s' if self.count != 1 else ''}>"

    def seal(self, plain: str) -> str:
        """The token of a value's JSON text."""
        return TOKEN_PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, token: str) -> str | None:
        """The JSON text sealed in ``token``, or None when no key opens it."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token[len(TOKEN_PREFIX) :].encode()).decode()
        except (InvalidToken, ValueError, UnicodeDecodeError):
            return None


def sealer_from(keys: Sequence[str] = ()) -> Sealer | None:
    """A Sealer of ``keys``, else of ``HOTPARAMS_SECRET_KEYS``, else None."""
    listed = [k.strip() for k in keys if k.strip()]
    if not listed:
        listed = [k.strip() for k in os.environ.get(ENV_KEYS, "").split(",") if k.strip()]
    return Sealer(listed) if listed else None


def seal_rules(rules_json: str) -> tuple[str, frozenset[str]]:
    """The rules with every secret field sealed (its default left out), and those fields."""
    rules = loads(rules_json)
    sealed = []
    for name, rule in rules.get("fields", {}).items():
        if rule.get("secret"):
            rule["sealed"] = True
            rule.pop("default", None)
            sealed.append(name)
    return dumps(rules), frozenset(sealed)


# ---------------------------------------------------------------- the wrapper


def sealed_op(
    op: Op[T],
    sealer: Sealer | None,
    known: MutableMapping[str, frozenset[str]],
    defaults: Callable[[str], Mapping[str, str]],
) -> Op[T]:
    """``op`` with secret values sealed on the way out and opened on the way in.

    ``known`` caches each namespace's sealed fields (read from its stored
    rules on first need); ``defaults(ns)`` gives the JSON text of the bound
    model's defaults, for an ``@unset`` of a sealed field (whose rule has
    no default: it is sent as its sealed default instead).
    """
    try:
        call = next(op)
        while True:
            try:
                sent = yield from _outgoing(call, sealer, known, defaults)
                reply = yield sent
            except Exception as exc:
                if isinstance(exc, InvalidParams) and "must be encrypted" in str(exc):
                    known.pop(exc.namespace, None)  # re-learn: it was registered anew
                call = op.throw(exc)
            else:
                call = op.send(_incoming(call, reply, sealer))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def learn_op(
    namespace: str, known: MutableMapping[str, frozenset[str]]
) -> Op[frozenset[str] | None]:
    """The sealed fields of a namespace by its stored rules (None: it does not exist)."""
    if namespace in known:
        return known[namespace]
    try:
        head = yield FCall("hp_head", namespace, (), readonly=True)
    except NamespaceNotFound:
        return None
    raw = yield Command(namespace, ("HGET", f"hp:{{{namespace}}}:schema", text(head[3])))
    rules = loads(raw) if raw else {}
    sealed = frozenset(n for n, r in rules.get("fields", {}).items() if r.get("sealed"))
    known[namespace] = sealed
    return sealed


def _outgoing(
    call: Any,
    sealer: Sealer | None,
    known: MutableMapping[str, frozenset[str]],
    defaults: Callable[[str], Mapping[str, str]],
) -> Op[Any]:
    if sealer is None:
        return call
    if isinstance(call, Batch):
        calls = []
        for inner in call.calls:
            calls.append((yield from _outgoing(inner, sealer, known, defaults)))
        return Batch(tuple(calls))
    if not isinstance(call, FCall) or call.readonly:
        return call
    if call.function in _RULES_FUNCTIONS:
        stored = yield from learn_op(call.namespace, known)
        if stored is not None and not stored:
            return call  # an existing namespace without encryption stays so
        rules, sealed = seal_rules(call.args[0])
        args = (rules, *call.args[1:])
        if call.function == "hp_register":
            args = (rules, args[1], *_seal_pairs(args[2:], sealed, sealer, {}))
        return FCall(call.function, call.namespace, args, call.readonly)
    if call.function == "hp_commit":
        fields = yield from learn_op(call.namespace, known)
        if not fields:
            return call
        args = _seal_pairs(call.args, fields, sealer, defaults(call.namespace))
        return FCall(call.function, call.namespace, args, call.readonly)
    return call


def _seal_pairs(
    args: Sequence[str], sealed: frozenset[str], sealer: Sealer, defaults: Mapping[str, str]
) -> tuple[str, ...]:
    out: list[str] = []
    for i in range(0, len(args) - 1, 2):
        name, value = args[i], args[i + 1]
        if name == "@unset" and value in sealed and value in defaults:
            out += [value, dumps(sealer.seal(defaults[value]))]
        elif name == "@variants" and value:
            out += [name, _seal_variants(value, sealed, sealer)]
        elif name in sealed and not _is_token_text(value):
            out += [name, dumps(sealer.seal(value))]
        else:
            out += [name, value]
    if len(args) % 2:
        out.append(args[-1])
    return tuple(out)


def _is_token_text(raw: str) -> bool:
    return raw.startswith('"' + TOKEN_PREFIX)


def _seal_variants(document: str, sealed: frozenset[str], sealer: Sealer) -> str:
    doc = loads(document)
    for spec in doc.get("variants", {}).values():
        overrides = spec.get("overrides") or {}
        for name in sealed & set(overrides):
            if not is_token(overrides[name]):
                overrides[name] = sealer.seal(dumps(overrides[name]))
    return dumps(doc)


def _incoming(call: Any, reply: Any, sealer: Sealer | None) -> Any:
    """An ``hp_get`` reply with every token a key opens replaced by its value."""
    if sealer is None or not isinstance(call, FCall) or call.function != "hp_get":
        return reply
    if not isinstance(reply, list):
        return reply
    out = list(reply)
    for i in range(5, len(out), 2):
        raw = text(out[i])
        if text(out[i - 1]) == VARIANTS_FIELD:
            out[i] = _open_variants(raw, sealer)
        elif _is_token_text(raw):
            opened = sealer.open(loads(raw))
            if opened is not None:
                out[i] = opened
    return out


def _open_variants(document: str, sealer: Sealer) -> str:
    if TOKEN_PREFIX not in document:
        return document
    doc = loads(document)
    for spec in doc.get("variants", {}).values():
        overrides = spec.get("overrides") or {}
        for name, value in overrides.items():
            if is_token(value):
                opened = sealer.open(value)
                if opened is not None:
                    overrides[name] = loads(opened)
    return dumps(doc)


# ---------------------------------------------------------------- rotation


def rotate_op(
    namespace: str, known: MutableMapping[str, frozenset[str]], who: Who
) -> Op[tuple[int, int, tuple[str, ...]]]:
    """Re-encrypt every secret value of ``namespace`` (base and variant
    overrides) with the first key: a new version (audited as ``rotate``).

    Returns (previous version, new version, the fields re-encrypted).
    """
    for _ in range(_MAX_ROTATE_RETRIES):
        known.pop(namespace, None)
        sealed = yield from learn_op(namespace, known)
        if sealed is None:
            raise NamespaceNotFound(namespace)
        if not sealed:
            raise InvalidParams(
                namespace, {"*": "the namespace is not encrypted (it was registered without keys)"}
            )
        stored = parse_stored(namespace, (yield FCall("hp_get", namespace, (), readonly=True)))
        values = stored.values()
        left = unopened({k: v for k, v in values.items() if k in sealed})
        if stored.variants and TOKEN_PREFIX in stored.variants:
            left["@variants"] = UNOPENED
        if left:
            raise InvalidParams(namespace, left)
        fields = tuple(sorted(n for n in sealed if n in stored.raw))
        args: list[str] = []
        for name in fields:
            args += [name, stored.raw[name]]
        args += ["@variants", stored.variants or "", "@op", "rotate"]
        args += ["@base", str(stored.version), *who.args()]
        try:
            version = int((yield FCall("hp_commit", namespace, tuple(args))))
        except Stale:
            continue
        return stored.version, version, fields
    raise InvalidParams(namespace, {"*": "kept changing while its secrets were re-encrypted"})

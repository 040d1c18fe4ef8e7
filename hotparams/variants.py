"""A/B variants of a namespace: allocation and sticky assignment (I/O-free).

A namespace's variants are part of its versioned state (the ``@variants``
field of each version hash), so creating, widening or removing one is a
new version like any other change, audited and rollback-able.

Assignment is deterministic everywhere: a user's *bucket* is a keyed
BLAKE2b hash of (namespace, salt, user id) into ``BUCKETS`` buckets; each
variant owns a set of bucket ranges, disjoint from every other variant's.

Rules (documented in docs/live-handles.md and docs/cli.md):

- an allow-list wins over percentages; a user may be on one allow-list only;
- percentages never overlap: ranges are disjoint by construction, so 10% and
  20% variants get exactly 10% and 20% of the bucket space;
- widening a variant only adds free buckets (everyone already in stays in),
  narrowing only removes its most recently added buckets (only users leave);
- buckets a removed variant frees go back to the pool, lowest first;
- the salt is drawn when the first variant of an experiment is created and
  kept until the last one is removed, so a new experiment reshuffles users.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from .codec import dumps, loads
from .errors import InvalidParams
from .redact import masked

if TYPE_CHECKING:
    from .schema import ParamSchema

__all__ = [
    "BUCKETS",
    "Variant",
    "VariantSet",
    "bucket_of",
    "validate_merged",
    "validate_variants",
]

M = TypeVar("M", bound=BaseModel)

#: the bucket space: one bucket is 0.01% of users
BUCKETS = 10_000
MAX_USERS = 10_000
#: assignments remembered per version (a bounded cache; cleared when full)
_RECENT = 100_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def bucket_of(namespace: str, salt: str, user_id: str) -> int:
    """The user's bucket in ``range(BUCKETS)``: stable across processes and hosts."""
    return _bucket(_prefix(namespace, salt), user_id)


def _prefix(namespace: str, salt: str) -> Any:
    """A BLAKE2b state that has hashed the namespace and the salt (copied per user)."""
    return hashlib.blake2b(f"{namespace}\x00{salt}\x00".encode(), digest_size=8)


def _bucket(prefix: Any, user_id: str) -> int:
    h = prefix.copy()
    h.update(user_id.encode())
    return int.from_bytes(h.digest(), "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Variant:
    """A named set of overrides and who gets it."""

    name: str
    overrides: Mapping[str, Any]
    ranges: tuple[tuple[int, int], ...] = ()
    users: frozenset[str] = frozenset()

    @property
    def percent(self) -> float:
        return sum(end - start for start, end in self.ranges) * 100 / BUCKETS

    def __repr__(self) -> str:
        # an override may be a secret, and a variant does not know which
        # fields are: the repr names the overridden fields, never a value
        return (
            f"Variant(name={self.name!r}, overrides={sorted(self.overrides)!r}, "
            f"percent={self.percent:g}, users={len(self.users)})"
        )

    def as_json(self, secrets: Collection[str] = ()) -> dict[str, Any]:
        """The variant's part of the variants document; the overrides of the
        fields ``secrets`` masked (for showing, never for storing)."""
        return {
            "overrides": masked(self.overrides, secrets),
            "buckets": [list(r) for r in self.ranges],
            "users": sorted(self.users),
        }


@dataclass(frozen=True, slots=True)
class VariantSet:
    """All variants of one version, with a fast ``assign``."""

    salt: str = ""
    variants: Mapping[str, Variant] = field(default_factory=dict)
    _by_user: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)
    _owners: tuple[tuple[int, str], ...] = field(default=(), repr=False, compare=False)
    #: per namespace: the hash state of the prefix, and recent assignments
    #: (plain dicts: a lost race costs one recomputation, never a wrong answer)
    _prefixes: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _recent: dict[tuple[str, str], str | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def build(cls, salt: str, variants: Iterable[Variant]) -> VariantSet:
        table = {v.name: v for v in variants}
        by_user: dict[str, str] = {}
        spans: list[tuple[int, int, str]] = []
        for v in table.values():
            for user in v.users:
                by_user[user] = v.name
            spans += [(start, end, v.name) for start, end in v.ranges]
        spans.sort()
        return cls(
            salt=salt,
            variants=table,
            _by_user=by_user,
            _starts=tuple(s for s, _, _ in spans),
            _owners=tuple((e, n) for _, e, n in spans),
        )

    @classmethod
    def from_json(cls, text: str | None) -> VariantSet:
        if not text:
            return EMPTY
        doc = loads(text)
        return cls.build(
            str(doc.get("salt", "")),
            (
                Variant(
                    name=name,
                    overrides=dict(spec.get("overrides", {})),
                    ranges=tuple((int(s), int(e)) for s, e in spec.get("buckets", [])),
                    users=frozenset(str(u) for u in spec.get("users", [])),
                )
                for name, spec in doc.get("variants", {}).items()
            ),
        )

    def to_json(self) -> str | None:
        """Canonical JSON, or None when there are no variants."""
        if not self.variants:
            return None
        return dumps(self.as_json())

    def as_json(self, secrets: Collection[str] = ()) -> dict[str, Any]:
        """The variants document as data (what :meth:`to_json` encodes); the
        overrides of the fields ``secrets`` masked (for showing)."""
        return {
            "salt": self.salt,
            "variants": {n: v.as_json(secrets) for n, v in sorted(self.variants.items())},
        }

    def __bool__(self) -> bool:
        return bool(self.variants)

    def __repr__(self) -> str:
        listed = ", ".join(repr(v) for _, v in sorted(self.variants.items()))
        return f"VariantSet(salt={self.salt!r}, variants=[{listed}])"

    # ------------------------------------------------------------ reading

    def assign(self, namespace: str, user_id: str) -> str | None:
        """The variant a user gets, or None for the base."""
        if not self.variants:
            return None
        named = self._by_user.get(user_id)
        if named is not None:
            return named
        key = (namespace, user_id)
        try:
            return self._recent[key]
        except KeyError:
            pass
        prefix = self._prefixes.get(namespace)
        if prefix is None:
            prefix = self._prefixes[namespace] = _prefix(namespace, self.salt)
        bucket = _bucket(prefix, user_id)
        found: str | None = None
        index = bisect.bisect_right(self._starts, bucket) - 1
        if index >= 0:
            end, name = self._owners[index]
            if bucket < end:
                found = name
        if len(self._recent) >= _RECENT:
            self._recent.clear()
        self._recent[key] = found
        return found

    # ------------------------------------------------------------ changing

    def with_variant(
        self,
        name: str,
        overrides: Mapping[str, Any] | None,
        percent: float | None,
        users: Iterable[str] | None,
    ) -> VariantSet:
        """A new set with ``name`` created or changed (None keeps a part as is)."""
        check_name(name)
        old = self.variants.get(name)
        new_overrides = (
            dict(overrides) if overrides is not None else (dict(old.overrides) if old else {})
        )
        new_users = (
            frozenset(str(u) for u in users)
            if users is not None
            else (old.users if old else frozenset())
        )
        ranges = old.ranges if old else ()
        if percent is not None:
            ranges = self._resize(name, ranges, buckets_for(percent))
        variant = Variant(name, new_overrides, ranges, new_users)
        check_users(self, variant)
        salt = self.salt or secrets.token_hex(8)
        return VariantSet.build(
            salt, [*(v for n, v in self.variants.items() if n != name), variant]
        )

    def without(self, name: str) -> VariantSet:
        if name not in self.variants:
            raise KeyError(name)
        rest = [v for n, v in self.variants.items() if n != name]
        return VariantSet.build(self.salt if rest else "", rest)

    def _resize(
        self, name: str, ranges: tuple[tuple[int, int], ...], target: int
    ) -> tuple[tuple[int, int], ...]:
        have = sum(e - s for s, e in ranges)
        if target == have:
            return ranges
        if target < have:  # narrow: drop the most recently added buckets first
            out: list[tuple[int, int]] = []
            left = target
            for start, end in ranges:
                if left <= 0:
                    break
                take = min(end - start, left)
                out.append((start, start + take))
                left -= take
            return tuple(out)
        taken = sorted(r for n, v in self.variants.items() if n != name for r in v.ranges)
        taken = sorted([*taken, *ranges])
        free: list[tuple[int, int]] = []
        cursor = 0
        for start, end in taken:
            if start > cursor:
                free.append((cursor, start))
            cursor = max(cursor, end)
        if cursor < BUCKETS:
            free.append((cursor, BUCKETS))
        need = target - have
        if sum(e - s for s, e in free) < need:
            raise ValueError(
                f"percent: only {sum(e - s for s, e in free) * 100 / BUCKETS:g}% of users "
                "are free; narrow or remove another variant first"
            )
        added: list[tuple[int, int]] = []
        for start, end in free:
            if need <= 0:
                break
            take = min(end - start, need)
            added.append((start, start + take))
            need -= take
        return _merge([*ranges, *added])


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Join touching ranges, keeping the order in which they were added."""
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return tuple(out)


def buckets_for(percent: float) -> int:
    if (
        isinstance(percent, bool)
        or not isinstance(percent, (int, float))
        or not (0 <= percent <= 100)
    ):
        raise ValueError("percent: must be a number from 0 to 100")
    return round(percent * BUCKETS / 100)


def check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"variant name {name!r}: must be 1-64 characters of letters, digits, "
            '"_", "." or "-", starting with a letter or digit'
        )


def check_users(current: VariantSet, variant: Variant) -> None:
    if len(variant.users) > MAX_USERS:
        raise ValueError(f"users: at most {MAX_USERS} user ids per allow-list")
    for other in current.variants.values():
        if other.name == variant.name:
            continue
        both = variant.users & other.users
        if both:
            raise ValueError(
                f"users: {sorted(both)[0]!r} is already on the allow-list of variant "
                f"{other.name!r} (a user may be on one allow-list only)"
            )


# ---------------------------------------------------------------- the merge


def validate_merged(
    namespace: str,
    schema: ParamSchema[M],
    base: Mapping[str, Any],
    name: str,
    overrides: Mapping[str, Any],
) -> tuple[M, dict[str, Any]]:
    """The base values merged with one variant's overrides, validated by the
    full model: ``(params, values)``.  What a user of the variant gets, so
    a variant is refused unless it makes a valid parameter set: InvalidParams
    names the variant, ``{"variant NAME FIELD": reason}``.

    The one merge-and-validate of variants: the writers (before a write
    reaches Redis), the live handles (before a version is served) and the
    cache file (before a cached version is served or restored) call it."""
    values = {**base, **overrides}
    try:
        return schema.validate(namespace, values), values
    except InvalidParams as exc:
        raise InvalidParams(
            namespace,
            {f"variant {name} {field}": reason for field, reason in exc.errors.items()},
        ) from None


def validate_variants(
    namespace: str, schema: ParamSchema[M], base: Mapping[str, Any], variants: VariantSet
) -> dict[str, tuple[M, dict[str, Any]]]:
    """:func:`validate_merged` of each variant: name -> ``(params, values)``."""
    return {
        name: validate_merged(namespace, schema, base, name, variant.overrides)
        for name, variant in variants.variants.items()
    }


EMPTY = VariantSet()

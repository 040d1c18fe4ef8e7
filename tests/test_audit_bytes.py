"""The audit is bounded in bytes as well as in entries: a value larger than
AUDIT_INLINE_BYTES is audited by its digest and size (the value itself is in
the retained version hash), so many changes of a large prompt do not make a
stream of hundreds of MiB; small values stay inline."""

from __future__ import annotations

import hashlib
import re

import pytest
from pydantic import BaseModel, SecretStr

import hotparams
from hotparams.keys import keys_for
from hotparams.library import library_source

NS = "big"
INLINE = int(re.search(r"local AUDIT_INLINE_BYTES = (\d+)", library_source()).group(1))  # type: ignore[union-attr]


class Big(BaseModel):
    prompt: str = "x"
    small: int = 0
    token: SecretStr = SecretStr("t")


def stream_bytes(bus: hotparams.Bus) -> int:
    return sum(
        len(k) + len(v)
        for _, fields in bus.client.xrange(keys_for(NS).audit)
        for k, v in fields.items()
    )


@pytest.mark.slow
def test_large_values_are_audited_by_digest_and_size(bus: hotparams.Bus) -> None:
    bus.register(NS, Big)
    big = "y" * 60_000
    for i in range(200):
        bus.set(NS, {"prompt": f"{i:06d}{big}", "small": i})
    per_entry = stream_bytes(bus) / 200
    assert per_entry < 1_000, per_entry  # was two copies of the value: ~120 KB an entry
    last = bus.history(NS, limit=1)[0]
    assert last.changes["small"].old == 198 and last.changes["small"].new == 199  # inline
    raw = bus.client.hget(keys_for(NS).version(last.version), "prompt")
    assert raw is not None
    assert last.changes["prompt"].new == {
        "$large": {"sha1": hashlib.sha1(raw).hexdigest(), "bytes": len(raw)}
    }
    # the value itself, while the version is retained
    assert bus.get(NS, version=last.version).values["prompt"] == f"000199{big}"
    # a value at the limit is still inline; one byte more is not
    bus.set(NS, {"prompt": "z" * (INLINE - 2)})  # JSON text: INLINE bytes with its quotes
    assert bus.history(NS, limit=1)[0].changes["prompt"].new == "z" * (INLINE - 2)
    bus.set(NS, {"prompt": "z" * (INLINE - 1)})
    assert "$large" in bus.history(NS, limit=1)[0].changes["prompt"].new


def test_a_large_secret_stays_masked_in_the_audit(bus: hotparams.Bus) -> None:
    bus.register(NS, Big)
    bus.set(NS, {"token": "s" * 10_000})
    change = bus.history(NS, limit=1)[0].changes["token"]
    assert change.new == "******"

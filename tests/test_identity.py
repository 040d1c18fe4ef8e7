"""Content identity: every version has a digest of its content, stored with
it, in the head probe and in the events; a worker that holds a state Redis
does not (a forged event) adopts Redis's within one reconcile interval, a
forged version never blocks a real change, and the fleet's convergence
counts only workers whose digest is Redis's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

import hotparams
from hotparams.fleet import WorkerReport, convergence
from hotparams.keys import keys_for
from hotparams.protocol import Head

from .helpers import wait_until
from .models import PairParams

NS = "pair"


def fcall(bus: hotparams.Bus, *args: str) -> Any:
    return bus.client.execute_command("FCALL", args[0], 1, NS, *args[1:])  # type: ignore[no-untyped-call]


def meta(bus: hotparams.Bus) -> dict[str, str]:
    raw = bus.client.hgetall(keys_for(NS).meta)
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_every_version_has_a_digest_of_its_content(bus: hotparams.Bus) -> None:
    bus.register(NS, PairParams)
    pubsub = bus.client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.ssubscribe(keys_for(NS).channel)
    first = bus.head(NS)
    assert len(first.digest) == 40  # sha1 hex
    v2 = bus.set(NS, {"a": 1, "b": 1})
    second = bus.head(NS)
    assert second.version == v2 and second.digest not in ("", first.digest)
    stored = bus.client.hget(keys_for(NS).version(v2), "@digest")
    assert stored is not None and stored.decode() == second.digest == meta(bus)["digest"]
    assert bus.get(NS).digest == second.digest  # read functions return it
    # the same content (values, variants, schema revision) has the same digest
    v3 = bus.rollback(NS, 1)
    assert bus.head(NS).digest == first.digest and v3 == 3
    events = []
    while len(events) < 2:
        message = pubsub.get_message(timeout=5)
        assert message is not None
        if message["type"] == "smessage":
            events.append(orjson.loads(message["data"]))
    pubsub.close()
    assert [(e["digest"], e["prev_digest"]) for e in events] == [
        (second.digest, first.digest),
        (first.digest, second.digest),
    ]
    # variants are part of the content
    bus.set_variant(NS, "t", {"b": 5}, percent=50)
    assert bus.head(NS).digest != first.digest
    audit = bus.client.xrevrange(keys_for(NS).audit, count=1)[0][1]
    assert audit[b"digest"].decode() == bus.head(NS).digest


def test_a_client_of_the_previous_calling_convention_gets_its_replies(bus: hotparams.Bus) -> None:
    bus.register(NS, PairParams)
    assert len(fcall(bus, "hp_head")) == 4
    reply = fcall(bus, "hp_get")
    assert b"@digest" not in reply[4::2]
    assert b"@digest" in fcall(bus, "hp_get", "", "digest")[4::2]


# ---------------------------------------------------------------- forged events


@pytest.fixture
def writer(redis_url: str) -> Iterator[hotparams.Bus]:
    bus = hotparams.connect(redis_url)
    bus.register(NS, PairParams)
    yield bus
    bus.close()


def forge(client: redis.Redis, head: Head, upto: int, **values: Any) -> None:
    """SPUBLISH a chain of made-up events from the head to version ``upto``:
    what anyone allowed to SPUBLISH on the channel (every editor) can do."""
    pipe = client.pipeline(transaction=False)
    prev = head.digest
    for v in range(head.version + 1, upto + 1):
        digest = f"{v:040x}"
        doc = {
            "ns": NS,
            "epoch": head.epoch,
            "v": v,
            "prev": v - 1,
            "ts": int(time.time() * 1000),
            "op": "set",
            "schema": head.schema_rev,
            "changed": values,
            "removed": [],
            "redacted": [],
            "digest": digest,
            "prev_digest": prev,
        }
        pipe.spublish(keys_for(NS).channel, orjson.dumps(doc))
        prev = digest
    pipe.execute()


def serves_redis(live: hotparams.Live[PairParams], bus: hotparams.Bus) -> bool:
    snap, real = live.current, bus.get(NS)
    return (snap.version, snap.digest, dict(snap.values)) == (
        real.version,
        real.digest,
        dict(real.values),
    )


def test_a_forged_event_is_served_at_most_one_reconcile_interval(
    redis_url: str, writer: hotparams.Bus
) -> None:
    writer.set(NS, {"a": 1, "b": 1})
    interval = 0.5
    reader = hotparams.connect(redis_url)
    live = reader.watch(NS, PairParams, reconcile_interval=interval)
    try:
        assert serves_redis(live, writer)
        seen: list[int] = []
        live.on_change(lambda old, new: seen.append(new.values["a"]))
        forged_at = time.monotonic()
        forge(writer.client, writer.head(NS), 1001, a=-7, b=-7)
        # it cannot tell at first: the first batch of forged events is applied
        assert wait_until(lambda: -7 in seen, 5)
        assert wait_until(lambda: serves_redis(live, writer), 5)
        served = time.monotonic() - forged_at
        # one interval, plus the slack of a busy machine for the re-read
        assert served <= interval + 0.5, served
        status = live.status()
        assert status.rewinds == 1 and status.digest == writer.head(NS).digest
        # a real change after that applies as usual
        v = writer.set(NS, {"a": 2, "b": 2})
        assert live.wait_for(v, 5) and serves_redis(live, writer)
    finally:
        live.close()
        reader.close()


def test_a_forged_higher_version_never_blocks_a_real_change_or_counts_as_on_target(
    redis_url: str, writer: hotparams.Bus
) -> None:
    reader = hotparams.connect(redis_url, report_interval=0.2)
    live = reader.watch(NS, PairParams, reconcile_interval=60)  # no probe during the test
    try:
        head = writer.head(NS)
        forge(writer.client, head, 1001, a=-7, b=-7)
        assert wait_until(lambda: [r.version for r in writer.workers(NS)] == [1001], 5)
        conv = writer.convergence(NS)
        assert (conv.workers, conv.on_target, conv.complete) == (1, 0, False)  # not fooled
        v = writer.set(NS, {"a": 3, "b": 3})  # real: version 2
        assert v == 2
        assert wait_until(lambda: serves_redis(live, writer), 5)  # at once, not after 60 s
        assert wait_until(lambda: writer.convergence(NS).complete, 5)
        assert writer.workers(NS)[0].digest == writer.head(NS).digest
    finally:
        live.close()
        reader.close()


def report(version: int, digest: str, epoch: str = "e1") -> WorkerReport:
    return WorkerReport(f"w{version}{digest}", NS, version, epoch, digest=digest)


def test_convergence_counts_a_worker_only_with_the_head_s_digest() -> None:
    head = Head(5, "e1", 0, 1, "d5")
    reports = [
        report(5, "d5"),  # on target
        report(5, "forged"),  # the head's number, another content
        report(9, "x9"),  # above the head: a version Redis never held
        report(4, "d4"),  # behind
        report(5, ""),  # an older client without digests: by number
    ]
    conv = convergence(NS, 5, "e1", reports, head)
    assert conv.on_target == 2
    assert {r.id for r in conv.behind} == {"w5forged", "w9x9", "w4d4"}
    # --wait for an older version: workers between it and the head are on target
    assert convergence(NS, 4, "e1", reports, head).on_target == 3

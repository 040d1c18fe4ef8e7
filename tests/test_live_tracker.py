"""The live handle's decisions, without Redis: tracker and listener phases."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import pytest

from hotparams.codec import dumps
from hotparams.errors import ConnectionFailed, InvalidParams, NamespaceNotFound, ProtocolError
from hotparams.events import Event, parse_event
from hotparams.follow import (
    Lost,
    Ping,
    Publish,
    Read,
    Receive,
    Subscribe,
    Unanswered,
    connect,
    listen,
    start,
)
from hotparams.keys import keys_for
from hotparams.observer import Observer
from hotparams.protocol import Head, Stored
from hotparams.schema import ParamSchema
from hotparams.snapshot import Snapshot
from hotparams.tracker import Tracker
from hotparams.views import defaults_snapshot, touches

from .models import ChatParams, PairParams

NS = "pair"
SCHEMA = ParamSchema.of(PairParams)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stored(version: int, epoch: str = "e1", **values: Any) -> Stored:
    raw = {"a": "0", "b": "0", "note": '""'}
    raw.update({k: dumps(v) for k, v in values.items()})
    return Stored(NS, version, epoch, 1000 + version, 1, raw)


def event(version: int, epoch: str = "e1", prev: int | None = None, **changed: Any) -> Event:
    return Event(
        namespace=NS,
        epoch=epoch,
        version=version,
        previous=version - 1 if prev is None else prev,
        committed_ms=1000 + version,
        op="set",
        schema_rev=1,
        changed=changed,
    )


def tracker_at(version: int, epoch: str = "e1", **values: Any) -> Tracker[PairParams]:
    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0, clock=Clock())
    step = tracker.on_stored(stored(version, epoch, **values))
    assert step.action == "apply"
    return tracker


def test_the_next_version_is_applied_from_the_event_alone() -> None:
    tracker = tracker_at(3, a=1, b=1)
    step = tracker.on_events([event(4, a=2, b=2)])
    assert step.action == "apply" and step.new is not None and step.old is not None
    assert (step.old.version, step.new.version) == (3, 4)
    assert (step.new.params.a, step.new.params.b, step.new.params.note) == (2, 2, "")
    assert step.new.committed_ms == 1004
    assert tracker.current is step.new


def test_a_burst_is_folded_into_its_newest_version() -> None:
    tracker = tracker_at(3)
    step = tracker.on_events([event(5, b=5), event(4, a=4), event(6, a=6, b=6), event(5, b=5)])
    assert step.action == "apply" and step.new is not None
    assert (step.new.version, step.new.params.a, step.new.params.b) == (6, 6, 6)
    assert tracker.applied == 2  # the first read, then one fold for four events


def test_a_gap_asks_for_a_reread_and_applies_nothing() -> None:
    tracker = tracker_at(3)
    assert tracker.on_events([event(5, a=1, b=1)]).action == "resync"
    assert tracker.on_events([event(4, prev=2, a=1, b=1)]).action == "resync"
    assert tracker.current is not None and tracker.current.version == 3


def test_events_published_before_the_last_reread_are_ignored() -> None:
    tracker = tracker_at(7)
    assert tracker.on_events([event(6), event(7)]).action == "ignore"


def test_a_duplicate_of_a_version_applied_from_events_asks_for_a_reread() -> None:
    tracker = tracker_at(3)
    assert tracker.on_events([event(4, a=1, b=1)]).action == "apply"
    assert tracker.on_events([event(4, a=1, b=1)]).action == "resync"


def test_an_event_of_another_history_asks_for_a_reread() -> None:
    tracker = tracker_at(3)
    assert tracker.on_events([event(1, epoch="e2")]).action == "resync"


def test_a_changed_secret_asks_for_a_reread() -> None:
    tracker = tracker_at(3)
    secret = Event(NS, "e1", 4, 3, 0, "set", 1, {}, redacted=("note",))
    assert tracker.on_events([secret]).action == "resync"


def digested(snap: Stored, digest: str) -> Stored:
    return Stored(
        snap.namespace,
        snap.version,
        snap.epoch,
        snap.committed_ms,
        snap.schema_rev,
        snap.raw,
        snap.variants,
        digest=digest,
    )


def chained(version: int, digest: str, prev_digest: str, **changed: Any) -> Event:
    e = event(version, **changed)
    return Event(
        **{
            **{f: getattr(e, f) for f in e.__dataclass_fields__},
            "digest": digest,
            "prev_digest": prev_digest,
        }
    )


def test_a_version_redis_does_not_hold_gives_way_to_redis_s_state() -> None:
    # a forged event (anyone who may PUBLISH) took the handle to version 1001;
    # Redis's current version is 2: the handle serves Redis's state again
    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0, clock=Clock())
    tracker.on_stored(digested(stored(2, a=2, b=2), "d2"))
    forged = [
        chained(v, f"x{v}", "d2" if v == 3 else f"x{v - 1}", a=-1, b=-1) for v in range(3, 1002)
    ]
    assert tracker.on_events(forged).action == "apply"  # it cannot tell yet
    assert tracker.current is not None and tracker.current.version == 1001
    # the reconcile probe: Redis's head differs, so the handle re-reads
    assert tracker.on_head(Head(2, "e1", 0, 1, "d2")) is True
    step = tracker.on_stored(digested(stored(2, a=2, b=2), "d2"))
    assert step.action == "apply" and step.new is not None
    assert (step.new.version, step.new.digest, step.new.values["a"]) == (2, "d2", 2)
    assert tracker.status().rewinds == 1
    # and the next real change applies from its event at once
    step = tracker.on_events([chained(3, "d3", "d2", a=3, b=3)])
    assert step.action == "apply" and step.new is not None and step.new.values["a"] == 3


def test_a_real_change_is_not_blocked_by_a_forged_higher_version() -> None:
    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0, clock=Clock())
    tracker.on_stored(digested(stored(2, a=2, b=2), "d2"))
    forged = [
        chained(v, f"x{v}", "d2" if v == 3 else f"x{v - 1}", a=-1, b=-1) for v in range(3, 1002)
    ]
    tracker.on_events(forged)
    # the real version 3 arrives: below the forged 1001, never confirmed by a
    # read, so it is a reason to ask Redis, whose state is then served
    assert tracker.on_events([chained(3, "d3", "d2", a=3, b=3)]).action == "resync"
    step = tracker.on_stored(digested(stored(3, a=3, b=3), "d3"))
    assert step.action == "apply" and step.new is not None
    assert (step.new.version, step.new.values["a"]) == (3, 3)


def test_a_change_made_to_another_content_than_the_one_held_is_re_read() -> None:
    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0, clock=Clock())
    tracker.on_stored(digested(stored(2, a=2, b=2), "d2"))
    step = tracker.on_events([chained(3, "d3", "other", a=3, b=3)])
    assert step.action == "resync" and "another content" in step.reason
    assert tracker.current is not None and tracker.current.version == 2


def test_the_same_version_with_another_digest_is_replaced_by_redis_s() -> None:
    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0, clock=Clock())
    tracker.on_stored(digested(stored(2, a=2, b=2), "d2"))
    tracker.on_events([chained(3, "forged", "d2", a=-1, b=-1)])
    assert tracker.on_head(Head(3, "e1", 0, 1, "d3")) is True  # same number, not the same
    step = tracker.on_stored(digested(stored(3, a=3, b=3), "d3"))
    assert step.action == "apply" and step.new is not None
    assert (step.new.digest, step.new.values["a"]) == ("d3", 3)
    # the same version and digest again: confirmed, nothing to apply
    assert tracker.on_head(Head(3, "e1", 0, 1, "d3")) is False
    assert tracker.on_stored(digested(stored(3, a=3, b=3), "d3")).action == "keep"


def test_a_new_history_is_applied_even_with_lower_version_numbers() -> None:
    tracker = tracker_at(50, a=50, b=50)
    step = tracker.on_stored(stored(1, epoch="e2"))
    assert step.action == "apply" and step.new is not None
    assert (step.new.epoch, step.new.version) == ("e2", 1)
    assert tracker.epoch_changes == 1


def test_a_version_the_model_refuses_is_kept_out_and_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = tracker_at(3, a=1, b=1)
    caplog.set_level(logging.ERROR, logger="hotparams.live")
    step = tracker.on_events([event(4, a="not a number")])
    assert step.action == "keep"
    assert tracker.current is not None and tracker.current.version == 3
    assert tracker.rejected is not None
    assert (tracker.rejected.version, set(tracker.rejected.errors)) == (4, {"a"})
    assert tracker.status().stale
    # the same problem again (a re-read of that version, a later one): no new log line
    assert tracker.on_stored(stored(5, a="still not")).action == "keep"
    assert len([r for r in caplog.records if "does not fit" in r.getMessage()]) == 1
    assert tracker.on_head(Head(5, "e1", 0, 1)) is False  # known bad: no re-read loop
    assert tracker.on_stored(stored(6, a=6, b=6)).action == "apply"
    assert tracker.rejected is None


def test_a_missing_namespace_keeps_the_snapshot_and_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = tracker_at(9, a=9, b=9)
    caplog.set_level(logging.ERROR, logger="hotparams.live")
    tracker.on_missing()
    tracker.on_missing()
    assert tracker.lost and tracker.status().stale
    assert tracker.current is not None and tracker.current.params.a == 9
    assert len([r for r in caplog.records if "missing" in r.getMessage()]) == 1


def test_the_head_probe_confirms_or_asks_for_a_reread() -> None:
    clock = Clock()
    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0, clock=clock)
    tracker.on_stored(stored(3))
    tracker.connected = True
    clock.now += 10
    assert tracker.status().stale  # not confirmed for 10 s
    assert tracker.on_head(Head(3, "e1", 0, 1)) is False
    assert tracker.staleness() == 0 and not tracker.status().stale
    assert tracker.on_head(Head(4, "e1", 0, 1)) is True
    assert tracker.on_head(Head(3, "e2", 0, 1)) is True


def test_start_falls_back_to_the_cache_then_the_defaults_else_raises() -> None:
    down = ConnectionFailed("redis://x", "refused")
    cached = tracker_at(4, a=4, b=4).current
    assert cached is not None
    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0)
    assert tracker.begin(None, down, cached=cached) is cached
    assert tracker.origin == "cache" and tracker.staleness() == float("inf")
    # Redis then confirms the cached version: it becomes a normal, fresh handle
    assert tracker.on_stored(stored(4, a=4, b=4)).action == "keep"
    assert tracker.origin == "redis" and tracker.staleness() < 1

    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0)
    snap = tracker.begin(None, NamespaceNotFound(NS), defaults=True)
    assert (snap.version, snap.params.a, tracker.origin, tracker.lost) == (0, 0, "defaults", True)

    with pytest.raises(ConnectionFailed):
        Tracker(NS, SCHEMA, reconcile_interval=1.0).begin(None, down)
    with pytest.raises(InvalidParams):
        Tracker(NS, SCHEMA, reconcile_interval=1.0).begin(stored(2, a="x"), None)


def test_defaults_need_a_model_whose_fields_all_have_defaults() -> None:
    assert defaults_snapshot("chat", ParamSchema.of(ChatParams)).params.temperature == 0.7


def test_a_field_filter_fires_only_for_changes_of_those_fields() -> None:
    tracker = tracker_at(1, a=1, b=1)
    old = tracker.current
    step = tracker.on_events([event(2, note="hello")])
    assert old is not None and step.new is not None
    assert touches(None, old, step.new)
    assert touches({"note"}, old, step.new)
    assert not touches({"a", "b"}, old, step.new)


def test_malformed_events_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        parse_event(b"{not json")
    with pytest.raises(ProtocolError):
        parse_event(b'{"ns": "x"}')
    good = parse_event(
        b'{"ns":"pair","epoch":"e","v":2,"prev":1,"ts":5,"op":"set","schema":1,'
        b'"changed":{"a":1},"removed":[],"redacted":[]}'
    )
    assert (good.version, good.changed, good.variants_changed) == (2, {"a": 1}, False)


# ---------------------------------------------------------------- phases


def drive(phase: Generator[Any, Any, Any], replies: list[Any]) -> list[Any]:
    """Run a phase against scripted replies; returns the actions it took."""
    actions = []
    reply: Any = None
    try:
        action = next(phase)
        while True:
            actions.append(action)
            reply = replies.pop(0)
            failed = isinstance(reply, BaseException)
            action = phase.throw(reply) if failed else phase.send(reply)
    except StopIteration:
        pass
    return actions


def test_connect_subscribes_before_it_rereads() -> None:
    tracker = tracker_at(3)
    actions = drive(connect(tracker, keys_for(NS)), [None, stored(5, a=5, b=5), None])
    assert isinstance(actions[0], Subscribe) and isinstance(actions[1], Read)
    assert isinstance(actions[2], Publish) and actions[2].view.base.version == 5
    assert tracker.connected


def test_start_reads_patiently_only_without_a_fallback() -> None:
    tracker = Tracker(NS, SCHEMA, reconcile_interval=1.0)
    phase = start(tracker, keys_for(NS), cached=None, defaults=False)
    first = next(phase)
    assert isinstance(first, Read) and first.patient
    phase.close()
    phase = start(tracker, keys_for(NS), cached=None, defaults=True)
    first = next(phase)
    assert isinstance(first, Read) and not first.patient
    phase.close()


def message(data: bytes) -> dict[str, Any]:
    return {"type": "message", "channel": b"hp:{pair}:events", "data": data}


def test_listen_probes_and_declares_a_silent_subscription_lost() -> None:
    assert issubclass(Unanswered, Lost)  # a Reset(dead=True): every handle on it reconnects
    clock = Clock()
    tracker = tracker_at(3)
    phase = listen(tracker, keys_for(NS), clock)
    assert isinstance(next(phase), Receive)
    clock.now += 1.5  # the reconcile interval passed in silence
    ping = phase.send([])
    assert isinstance(ping, Ping)
    head_read = phase.send(None)  # None: a pong of the shared connection just came
    assert isinstance(head_read, Read)
    assert isinstance(phase.send(Head(3, "e1", 0, 1)), Receive)  # confirmed: listen on
    clock.now += 1.5
    assert isinstance(phase.send([]), Ping)
    assert isinstance(phase.send("hotparams-1-7"), Read)  # the token of the pong to wait for
    assert isinstance(phase.send(Head(3, "e1", 0, 1)), Receive)
    clock.now += 1.5  # no pong came back in a whole interval
    with pytest.raises(Unanswered):
        phase.send([])


def test_listen_rereads_after_a_resubscribe_and_applies_events() -> None:
    clock = Clock()
    tracker = tracker_at(3)
    phase = listen(tracker, keys_for(NS), clock)
    next(phase)
    ev = dumps(
        {
            "ns": NS,
            "epoch": "e1",
            "v": 4,
            "prev": 3,
            "ts": 1,
            "op": "set",
            "schema": 1,
            "changed": {"a": 4, "b": 4},
            "removed": [],
            "redacted": [],
        }
    ).encode()
    publish = phase.send([message(ev)])
    assert isinstance(publish, Publish) and publish.view.base.version == 4
    assert isinstance(phase.send(None), Receive)
    reread = phase.send([{"type": "subscribe", "channel": b"x", "data": 1}])
    assert isinstance(reread, Read)
    missing = phase.throw(NamespaceNotFound(NS))
    assert isinstance(missing, Receive) and tracker.lost
    phase.close()


def test_a_snapshot_is_immutable() -> None:
    snap: Snapshot[PairParams] | None = tracker_at(1, a=1, b=1).current
    assert snap is not None
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass and frozen model
        snap.version = 2  # type: ignore[misc]
    with pytest.raises(Exception):  # noqa: B017
        snap.params.a = 2
    with pytest.raises(TypeError):
        snap.values["a"] = 2  # type: ignore[index]


def test_a_refused_version_counts_once_however_often_it_is_offered() -> None:
    """``hotparams_rejected_snapshots_total`` counts versions the model refused:
    the event of a bad version, then a re-read of it, is one (CI once saw 2)."""

    class Count(Observer):
        def __init__(self) -> None:
            self.n = 0

        def rejected(self) -> None:
            self.n += 1

    tracker = tracker_at(3, a=1, b=1)
    seen = Count()
    tracker.observer = seen
    assert tracker.on_events([event(4, a="not a number")]).action == "keep"
    assert tracker.on_stored(stored(4, a="not a number")).action == "keep"  # re-read of it
    assert seen.n == 1
    assert tracker.on_stored(stored(5, a="still not")).action == "keep"  # another version
    assert seen.n == 2

"""``live.for_user``: A/B variants on the read path, on redis and fakeredis.

Assignment is sticky and matches ``VariantSet.assign``; merged snapshots
are built once per applied version; a variant change is applied with the
base as one swap (readers never mix two versions); exposure counts add up
exactly in Redis.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import hotparams

from .helpers import wait_until
from .models import ChatParams, PairParams

USERS = [f"user-{i}" for i in range(4000)]


def fast(bus: hotparams.Bus, **settings: Any) -> hotparams.Bus:
    """The same connection with short reporting intervals."""
    values = {"exposure_interval": 0.2, "report_interval": 0.5, **settings}
    return hotparams.Bus(bus.client, settings=hotparams.Settings(**values), url=bus.url)


@pytest.fixture
def chat(bus: hotparams.Bus) -> Iterator[hotparams.Live[ChatParams]]:
    bus.register("chat", ChatParams)
    bus.set_variant("chat", "cool", {"temperature": 0.3, "model": "gpt-4o"}, percent=30)
    v = bus.set_variant("chat", "vip", {"tone": "friendly"}, users=["alice", "bob"])
    live = fast(bus).watch("chat", ChatParams)
    assert live.wait_for(v)
    yield live
    live.close()


def test_for_user_gives_each_user_their_variant_merged_with_the_base(
    bus: hotparams.Bus, chat: hotparams.Live[ChatParams]
) -> None:
    variants = bus.variants("chat")
    got = Counter()
    for user in USERS:
        snap = chat.for_user(user)
        assert snap.variant == variants.assign("chat", user), user
        assert snap.version == chat.current.version
        got[snap.variant] += 1
        if snap.variant is None:
            assert snap is chat.current  # the base itself
        else:
            assert (snap.params.temperature, snap.params.model) == (0.3, "gpt-4o")
            assert snap.params.max_tokens == chat.current.params.max_tokens
            assert snap is chat.for_user(user)  # built once per version, not per call
    assert 0.26 < got["cool"] / len(USERS) < 0.34  # 30% of the buckets
    alice = chat.for_user("alice")
    assert (alice.variant, alice.params.tone, alice.params.temperature) == ("vip", "friendly", 0.7)
    assert chat.current.params.tone == "plain"


def test_assignment_is_sticky_across_base_changes_and_widening(
    bus: hotparams.Bus, chat: hotparams.Live[ChatParams]
) -> None:
    before = {u: chat.for_user(u).variant for u in USERS}
    bus.set("chat", {"max_tokens": 1024})
    v = bus.set_variant("chat", "cool", percent=60)  # widening keeps everyone in
    assert chat.wait_for(v)
    after = {u: chat.for_user(u).variant for u in USERS}
    assert all(after[u] == "cool" for u, name in before.items() if name == "cool")
    assert all(after[u] == before[u] for u in USERS if before[u] != "cool" and after[u] is None)
    widened = sum(1 for name in after.values() if name == "cool") / len(USERS)
    assert 0.55 < widened < 0.65
    assert chat.for_user(USERS[0]).params.max_tokens == 1024  # the base change reaches variants
    v = bus.remove_variant("chat", "cool")
    assert chat.wait_for(v)
    assert {chat.for_user(u).variant for u in USERS} == {None}


def test_a_variant_change_is_applied_atomically_with_the_base(redis_url: str) -> None:
    """The writer alternates variant changes (a = k for the variant's user)
    and base changes (b = k); it records what each version must look like.
    Readers sample ``for_user`` in tight loops: every sample must match the
    version it claims, so a base of one version with the variants of
    another is caught."""
    bus = hotparams.connect(redis_url)
    bus.register("pair", PairParams)
    v = bus.set_variant("pair", "v", {"a": 0}, users=["in"])
    truth: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {v: ((0, 0), (0, 0))}
    live = bus.watch("pair", PairParams)
    stop = threading.Event()
    samples: list[set[tuple[int, str | None, int, int]]] = []

    def read() -> None:
        seen: set[tuple[int, str | None, int, int]] = set()
        samples.append(seen)
        while not stop.is_set():
            for _ in range(100):
                for user in ("in", "out"):
                    snap = live.for_user(user)
                    seen.add((snap.version, snap.variant, snap.params.a, snap.params.b))
            time.sleep(0.0002)  # let the writer and the listener have the GIL too

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for k in range(1, 101):
            v = bus.set_variant("pair", "v", {"a": k})
            truth[v] = ((k, k - 1), (0, k - 1))
            v = bus.set("pair", {"b": k})
            truth[v] = ((k, k), (0, k))
        assert live.wait_for(v)
    finally:
        stop.set()
        for t in readers:
            t.join()
        live.close()
        bus.close()
    seen = set().union(*samples)
    assert len({s[0] for s in seen}) > 5  # the readers saw the stream go by
    for version, variant, a, b in seen:
        in_variant, base = truth[version]
        assert (variant, (a, b)) == (("v", in_variant) if variant else (None, base)), version


def test_exposure_counts_add_up_exactly_in_redis(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.set_variant("chat", "cool", {"temperature": 0.3}, percent=25)
    v = bus.set_variant("chat", "warm", {"temperature": 1.1}, percent=25, users=["alice"])
    live = fast(bus).watch("chat", ChatParams)
    assert live.wait_for(v)
    variants = bus.variants("chat")
    expected: Counter[str | None] = Counter()

    def burst(users: list[str]) -> None:
        for user in users:
            live.for_user(user)

    def run(rounds: int) -> None:
        threads = [threading.Thread(target=burst, args=(USERS[i::4] * rounds,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for user in USERS * rounds:
            expected[variants.assign("chat", user)] += 1

    try:
        run(2)
        # flushed by the handle's reporter within two intervals, no close needed
        assert wait_until(lambda: bus.exposures("chat") == dict(expected), timeout=10), (
            bus.exposures("chat"),
            expected,
        )
        run(1)
        live.for_user("alice")
        expected["warm"] += 1
    finally:
        live.close()  # sends what is left
    assert bus.exposures("chat") == dict(expected)
    assert sum(expected.values()) == 3 * len(USERS) + 1 and len(expected) == 3


def test_without_variants_for_user_is_the_base_and_counts_nothing(bus: hotparams.Bus) -> None:
    bus.register("pair", PairParams)
    with fast(bus).watch("pair", PairParams) as live:
        snap = live.for_user("anyone")
        assert snap is live.current and snap.variant is None
    assert bus.exposures("pair") == {}
    assert not bus.client.exists("hp:{pair}:exposures")


def _child_reads(live: hotparams.Live[ChatParams], users: list[str]) -> None:
    """In a forked child: the inherited handle counts this process's reads itself."""
    for user in users:
        live.for_user(user)
    live.close()  # sends the child's counts


def test_exposures_of_a_forked_child_are_counted_once(redis_url: str) -> None:
    import multiprocessing

    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    v = bus.set_variant("chat", "cool", {"temperature": 0.3}, percent=50)
    live = fast(bus).watch("chat", ChatParams)
    assert live.wait_for(v)
    variants = bus.variants("chat")
    expected: Counter[str | None] = Counter()
    for user in USERS[:100]:  # the parent's picks exist before the fork
        live.for_user(user)
        expected[variants.assign("chat", user)] += 1
    child = multiprocessing.get_context("fork").Process(target=_child_reads, args=(live, USERS))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    for user in USERS:
        expected[variants.assign("chat", user)] += 1
    live.close()
    assert bus.exposures("chat") == dict(expected)
    bus.close()


# ------------------------------------------------------------ pinned assignment

#: a variants document with a fixed salt (an experiment's salt is drawn at
#: random when its first variant is made): two bucket variants and an
#: allow-list
PINNED = {
    "salt": "pin-salt-1",
    "variants": {
        "cool": {"overrides": {"temperature": 0.3}, "buckets": [[0, 3000]], "users": []},
        "warm": {
            "overrides": {"tone": "friendly"},
            "buckets": [[5000, 6500], [9000, 9500]],
            "users": [],
        },
        "vip": {"overrides": {"max_tokens": 1024}, "buckets": [], "users": ["user-7", "user-42"]},
    },
}
#: ``for_user(f"user-{i}").variant`` for i in 0..1999 (``.`` the base, ``c``
#: cool, ``w`` warm, ``v`` vip), computed before for_user's read path was
#: rewritten: the assignment is a contract (a user keeps their variant
#: across releases of hotparams)
PINNED_TABLE = (
    "..ccwcwv.c....w..wcwcw..c.www..cc.c.w..cccv..cw..."
    ".c.....wc..cc...cccwc.cwcw.c..c.c.c...w....c.wcc.."
    "cwcwccccww..cw..w..cc.cc.........c...wc.wc.w.w..cc"
    ".c..cc.cw.wc..c.w...w..cc.w..cwc.c.w....cw..w..w.."
    ".cwww......wcccwcwcc.c.cccccc.wc.w.cc.c.ccc.w..c.w"
    "c.c.c.cc.w.....ccw..cw...cc..cw.c.c.c.w.wcw.wccw.w"
    ".wc.c.c.cw.cc....c..c.cccwccc.c..wcwc...w.....w..."
    ".c.....w.c.cc....w.c.wcc...w..c.....wc.w.w.w...wcc"
    "wcwwc.w.c..cw.w....ww.c.c.wcc...c.cw.c...wc..w..c."
    ".cc.c.c.c.wcww...wwc....c.......ccc.c..cwwcc..c.cw"
    "..wcw...c..c.c.wc.ccwcc.wwcc.cwwc..wwcww.w.wwc.www"
    "ww..www.ww.c..ccccw.ww.cc.cwcc..........c....ww.c."
    "...c...cw.c..cwwc.wc.w..wc...wc...w.c..wcwcc.w.w.w"
    ".wc.w.c.c....cw..c.w...cw...c.w...c.cww.ccc.c.cc.."
    ".c.c......w.w...c....wc.cw.cccc....wcw.cccwcwccww."
    "w......ccwww.w...c...wwcc.wcwc.c.c.ww..cc.w.w.cw.w"
    ".ww....w....w.wccc.w..w.wc.wcc.w...ww...c.www.w..."
    ".....w.w.ccc....ccwcw...c.w.....ccc.c..cc.......cw"
    "wc..cc.....ccccc.www.cwc.cw..w..ccc....c.cw..cww.c"
    "..cc...c.ccc...cc.cc.cc..c.c..cwc....c.wccc..w..c."
    "cw......cw.w.....w.w.c.c......wc.c..c.cc...c.w.c.."
    "ccc..cc....c..wc.wc...cwc.wc...c.cc....ww..w....c."
    ".cccc.w.cw..cwc..cwwc..c...w..wwcc..w.c..c.....c.c"
    ".c...ww.w.cw...wc.c.ww.cw...ww..www.cwcc.c.c.cccwc"
    "..wcwww..ccc.c..c.w..cccw..ccc....cw....c.c....w.."
    ".cw.w.ccc...ccwc.cwcw.........cww.cc...c..c..w..c."
    "ccw........ccc..w..c......c.w.cwwcc.ww.c...cc.w.cc"
    ".c.c....cc..cc..cww.w..ccw.ww...wc.wc....cc.w.cw.."
    "c..cc........wc..w...w.cc..ccwc.w...ww.cw.......c."
    ".cc.cccw.w.c......w..cw..ccwc..w...c.ww.wcc....c.c"
    "w.cc.c.wc.....cw..c.wc.w.wc....w..w....c......cw.c"
    "..ccw..ccc..cwwwwccwcccw.c.c.w.cc.c.....cw.c..c..w"
    "c.cw.c.cw..w.....w..cccw.w..c...wcw.w...w.w.c....."
    "wcccc.ww..ww.cw..c.wcc...cw...c..wwcc.w..c.wc..cwc"
    "w...c.c.......ccc..w.w.cc.c....w...wc...cc.wc..w.."
    "cw.....wc...wwc.w....cwcww.c.w..ww.....ww..wccw..."
    ".w.w.cc.c.ww..cwcccww..ccc.w.....wwwc...w..wccwwcw"
    "..www.cwccwwwccc..w.wc.w....w.c..cww.w.....wcwcw.."
    ".cw...c.w..c.w..w..cc.wcwwc.w..c..cwcwcw.cc.ccw.c."
    "c...cw.c..c..www.cwwccwcw..cwc...c.c..ccww...w..ww"
)
CODES = {None: ".", "cool": "c", "warm": "w", "vip": "v"}


def test_the_assignment_of_2000_users_is_the_pinned_table(bus: hotparams.Bus) -> None:
    bus.register("pin-ab", ChatParams)
    bus.client.fcall("hp_commit", 1, "pin-ab", "@variants", json.dumps(PINNED), "@op", "variant")
    variants = bus.variants("pin-ab")
    with fast(bus).watch("pin-ab", ChatParams) as live:
        for _ in range(2):  # a user's first call for a version, then a remembered pick
            got = "".join(CODES[live.for_user(f"user-{i}").variant] for i in range(2000))
            assert got == PINNED_TABLE
    assert "".join(CODES[variants.assign("pin-ab", f"user-{i}")] for i in range(2000)) == (
        PINNED_TABLE
    )


def test_exposure_counts_stay_exact_while_versions_change(bus: hotparams.Bus) -> None:
    """Readers call for_user while the base changes under them: every call
    is counted once, for the variant it returned, whatever version it read."""
    bus.register("chat", ChatParams)
    v = bus.set_variant("chat", "cool", {"temperature": 0.3}, percent=40)
    live = fast(bus).watch("chat", ChatParams)
    assert live.wait_for(v)
    got: Counter[str | None] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def read() -> None:
        mine: Counter[str | None] = Counter()
        while not stop.is_set():
            for user in USERS[:500]:
                mine[live.for_user(user).variant] += 1
        with lock:
            got.update(mine)

    readers = [threading.Thread(target=read) for _ in range(3)]
    try:
        for t in readers:
            t.start()
        for i in range(30):
            v = bus.set("chat", {"max_tokens": 100 + i})
        assert live.wait_for(v)
    finally:
        stop.set()
        for t in readers:
            t.join()
        live.close()  # sends what is left
    assert live.status().applied >= 2  # the readers read across versions
    assert bus.exposures("chat") == dict(got)

"""Fleet data a worker cannot abuse through the library: every fleet function
checks all of its arguments before its first write (the namespace's keys,
fleet included, byte-identical after each refusal), exposure counts are
bounded, and the fleet calls page through 10,000+ reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import hotparams
from hotparams.fleet import (
    MAX_REPORTS,
    MAX_TTL_MS,
    WorkerReport,
    acl_user,
    exposures_op,
    leave_op,
    report_op,
)
from tests.helpers import dump_namespace
from tests.models import ChatParams


def _refused(raw: redis.Redis, call: Callable[[], Any], code: str) -> None:
    """``call`` gets an error reply starting with ``code`` and changes nothing."""
    before = dump_namespace(raw, "chat", include_fleet=True)
    with pytest.raises(redis.ResponseError) as caught:
        call()
    assert str(caught.value).startswith(code), caught.value
    assert dump_namespace(raw, "chat", include_fleet=True) == before


def _report(bus: hotparams.Bus, worker: str, version: int = 1, ttl: float = 30) -> None:
    bus.run(report_op("chat", WorkerReport(worker, "chat", version, "e"), ttl))


# ---------------------------------------------------------------- hp_expose


def _counts(bus: hotparams.Bus) -> dict[str | None, int]:
    return bus.run(exposures_op("chat", "hp:{chat}:exposures", "s"))


def test_hp_expose_checks_every_pair_before_adding_any(
    bus: hotparams.Bus, raw: redis.Redis
) -> None:
    bus.register("chat", ChatParams)
    raw.fcall("hp_expose", 1, "chat", "s", "a", 1)

    def expose(*args: Any) -> Callable[[], Any]:
        return lambda: raw.fcall("hp_expose", 1, "chat", *args)

    for args in [
        ("s", "a", 5, "b", "1e3"),  # a float-looking count after a good pair
        ("s", "a", 5, "b", "-1"),
        ("s", "a", 5, "b", "1.5"),
        ("s", "a", 5, "b", " 7"),
        ("s", "a", 5, "b"),  # odd count
        ("s", "a", str(2**63 - 1)),  # no setting a counter to 2^63-1
        ("s", "a", str(10**9 + 1)),  # more than one flush can count
        ("s", "a", 5, "b" * 65, 1),
        ("s", "a", 5, b"b\xff", 1),
        ("", "a", 1),
        ("s" * 65, "a", 1),
        ("s", *[x for i in range(300) for x in (f"v{i}", 1)]),  # too many pairs
    ]:
        _refused(raw, expose(*args), "HP_BADARG")
    assert _counts(bus) == {"a": 1}


def test_a_counter_never_passes_2_to_the_53(bus: hotparams.Bus, raw: redis.Redis) -> None:
    bus.register("chat", ChatParams)
    raw.hset("hp:{chat}:exposures", "s:a", 2**53 - 5)  # as if counted for years
    _refused(raw, lambda: raw.fcall("hp_expose", 1, "chat", "s", "b", 1, "a", 5), "HP_LIMIT")
    raw.fcall("hp_expose", 1, "chat", "s", "a", 4)
    assert _counts(bus) == {"a": 2**53 - 1}


# ---------------------------------------------------------------- hp_report / hp_leave


def test_hp_report_checks_everything_before_writing(bus: hotparams.Bus, raw: redis.Redis) -> None:
    bus.register("chat", ChatParams)
    _report(bus, "w1")

    def report(*args: Any) -> Callable[[], Any]:
        return lambda: raw.fcall("hp_report", 1, "chat", *args)

    for args in [
        ("w2", "{}", MAX_TTL_MS + 1),  # lives too long
        ("w2", "{}", 0),
        ("w2", "{}", "1e3"),
        ("w2", "[]", 1000),
        ("w2", '{"a":"' + "x" * 5000 + '"}', 1000),  # larger than a report may be
        ("w2", b'{"a":"\xff"}', 1000),  # not UTF-8
        ("", "{}", 1000),
        ("w" * 257, "{}", 1000),
        (b"w\xff", "{}", 1000),
        ("w2", "{}"),
        ("w2", "{}", 1000, "two words"),  # not an ACL user name
        ("w2", "{}", 1000, ""),
        ("w2", "{}", 1000, "u" * 129),
        ("w2", "{}", 1000, "default", "extra"),
    ]:
        _refused(raw, report(*args), "HP_BADARG")


def test_hp_leave_checks_its_argument(bus: hotparams.Bus, raw: redis.Redis) -> None:
    bus.register("chat", ChatParams)
    _report(bus, "w1")
    for args in [(), ("",), ("w" * 257,), ("w1", "two words"), ("w1", "default", "extra")]:
        _refused(raw, lambda args=args: raw.fcall("hp_leave", 1, "chat", *args), "HP_BADARG")
    assert raw.fcall("hp_leave", 1, "chat", "w1") == 1


def test_a_namespace_holds_a_bounded_number_of_reports(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    raw = bus.client
    bus.load_library()
    pipe = raw.pipeline(transaction=False)
    for i in range(MAX_REPORTS):
        pipe.fcall("hp_report", 1, "chat", f"w{i}", "{}", 60_000)
    pipe.execute()
    _refused(raw, lambda: raw.fcall("hp_report", 1, "chat", "one-too-many", "{}", 1000), "HP_LIMIT")
    raw.fcall("hp_report", 1, "chat", "w7", '{"version":1}', 1000)  # a known id renews
    assert raw.zcard("hp:{chat}:workers") == MAX_REPORTS
    bus.close()


def test_an_expired_report_frees_its_place(bus: hotparams.Bus, raw: redis.Redis) -> None:
    bus.register("chat", ChatParams)
    raw.fcall("hp_report", 1, "chat", "gone", "{}", 1)
    deadline = time.monotonic() + 5
    while bus.workers("chat") and time.monotonic() < deadline:
        pass  # a 1 ms report is gone within a few ms
    assert bus.workers("chat") == []
    _report(bus, "w1")
    assert [r.id for r in bus.workers("chat")] == ["w1"]
    assert raw.zscore("hp:{chat}:workers", "gone") is None


# ---------------------------------------------------------------- identity


def test_a_report_records_the_acl_user_the_client_claims(
    bus: hotparams.Bus, raw: redis.Redis
) -> None:
    bus.register("chat", ChatParams)
    live = bus.watch("chat", ChatParams)
    (report,) = bus.workers("chat")
    assert report.user == "default" and report.id == live.worker_id
    live.close()
    assert acl_user("redis://ana:pw@h:1/0") == "ana"
    assert acl_user("redis://:pw@h:1/0") == "default"
    assert acl_user("unix:///tmp/r.sock?username=wk") == "wk"


# ---------------------------------------------------------------- 10,000+ reports


@pytest.mark.parametrize("count", [10_000, 20_000])
def test_the_fleet_calls_work_with_many_reports(redis_url: str, count: int) -> None:
    bus = hotparams.connect(redis_url)
    v = bus.register("chat", ChatParams).version
    epoch = bus.head("chat").epoch
    pipe = bus.client.pipeline(transaction=False)
    for i in range(count):
        report = WorkerReport(f"w{i:05d}", "chat", v if i % 10 else 0, epoch, lag_ms=1.0)
        pipe.fcall("hp_report", 1, "chat", report.id, report.to_json(), 60_000)
    pipe.execute()
    started = time.perf_counter()
    workers = bus.workers("chat")
    assert len(workers) == count and len({r.id for r in workers}) == count
    conv = bus.convergence("chat")
    elapsed = time.perf_counter() - started
    assert conv.workers == count and conv.on_target == count - count // 10
    assert len(conv.behind) == count // 10
    assert elapsed < 10, elapsed
    # no call may block Redis long: each page is bounded work
    slow = bus.client.slowlog_get(128)
    assert all(int(e["duration"]) < 200_000 for e in slow if b"hp_workers" in e["command"])
    bus.close()


def test_status_lists_the_laggards_first_and_counts_the_rest(redis_url: str) -> None:
    from tests.test_cli import run_cli

    bus = hotparams.connect(redis_url)
    v = bus.register("chat", ChatParams).version
    epoch = bus.head("chat").epoch
    pipe = bus.client.pipeline(transaction=False)
    for i in range(10_000):
        report = WorkerReport(f"w{i:05d}", "chat", v if i != 7777 else 0, epoch)
        pipe.fcall("hp_report", 1, "chat", report.id, report.to_json(), 60_000)
    pipe.execute()
    out = run_cli(redis_url, "status", "chat")
    assert out.code == 0, out.err
    assert "w07777" in out.out  # the one behind is listed
    assert "... and 9950 more workers, on v1 (--all lists them)" in out.out
    assert "9999/10000 workers on v1" in out.out
    doc = run_cli(redis_url, "status", "chat", "--json").json()
    assert len(doc["workers"]) == 10_000 and doc["convergence"]["behind"] == ["w07777"]
    bus.close()


# ---------------------------------------------------------------- ACL users


@pytest.fixture
def worker_urls(redis_url: str) -> Iterator[dict[str, str]]:
    """Two worker users, each allowed to write the fleet index and its own report key."""
    admin = redis.Redis.from_url(redis_url)
    host = redis_url.split("//", 1)[1]
    urls = {}
    for name in ("wk1", "wk2"):
        admin.execute_command(
            "ACL", "SETUSER", name, "reset", "on", ">pw-" + name,
            "%R~hp:{chat}:*", "~chat", "~hp:{chat}:workers", f"~hp:{{chat}}:workers:u:{name}",
            "&hp:{chat}:events", "+@all", "-function",
        )  # fmt: skip
        urls[name] = f"redis://{name}:pw-{name}@{host}"
    yield urls
    for name in urls:
        admin.acl_deluser(name)
    admin.close()


def test_a_worker_cannot_overwrite_or_remove_another_users_report(
    redis_url: str, worker_urls: dict[str, str]
) -> None:
    installer = hotparams.connect(redis_url)
    installer.register("chat", ChatParams)
    raw = installer.client
    wk1 = hotparams.connect(worker_urls["wk1"], auto_install=False)
    wk2 = hotparams.connect(worker_urls["wk2"], auto_install=False)
    wk2.run(report_op("chat", WorkerReport("web-2:9", "chat", 1, "e", user="wk2"), 30))
    before = dump_namespace(raw, "chat", include_fleet=True)
    forged = WorkerReport("web-2:9", "chat", 99, "e", user="wk2")
    with pytest.raises(hotparams.PermissionDenied, match=r"hp:\{chat\}:workers:u:wk2"):
        wk1.run(report_op("chat", forged, 30))  # says it is wk2
    with pytest.raises(hotparams.PermissionDenied):
        wk1.run(leave_op("chat", "web-2:9", "wk2"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        wk1.client.hset("hp:{chat}:workers:u:wk2", "web-2:9", "{}")  # raw, too
    assert dump_namespace(raw, "chat", include_fleet=True) == before
    # its own report may say anything; the user and the time are Redis's
    wk1.client.fcall(
        "hp_report",
        1,
        "chat",
        "web-1:1",
        '{"version":1,"user":"wk2","reported_ms":1}',
        30_000,
        "wk1",
    )
    listed = {(r.id, r.user): r for r in installer.workers("chat")}
    assert set(listed) == {("web-1:1", "wk1"), ("web-2:9", "wk2")}
    assert listed[("web-1:1", "wk1")].reported_ms > 1
    assert listed[("web-2:9", "wk2")].version == 1
    # what a worker can still do: drop another's entry from the shared index,
    # which hides it until that worker's next heartbeat lists it again
    wk1.client.zrem("hp:{chat}:workers", "wk2\nweb-2:9")
    assert [r.user for r in installer.workers("chat")] == ["wk1"]
    wk2.run(report_op("chat", WorkerReport("web-2:9", "chat", 1, "e", user="wk2"), 30))
    assert {r.user for r in installer.workers("chat")} == {"wk1", "wk2"}
    for bus in (installer, wk1, wk2):
        bus.close()


def test_a_live_handle_files_its_reports_under_its_acl_user(
    redis_url: str, worker_urls: dict[str, str]
) -> None:
    installer = hotparams.connect(redis_url)
    installer.register("chat", ChatParams)
    worker = hotparams.connect(worker_urls["wk1"], auto_install=False)
    live = worker.watch("chat", ChatParams)
    (report,) = installer.workers("chat")
    assert (report.id, report.user) == (live.worker_id, "wk1")
    live.close()
    assert installer.workers("chat") == []  # it left, as itself
    worker.close()
    installer.close()


def test_hp_workers_refuses_a_bad_page(bus: hotparams.Bus, raw: redis.Redis) -> None:
    bus.register("chat", ChatParams)
    _report(bus, "w1")
    for args in [("0",), ("0", "0"), ("0", "1001"), ("x", "10"), ("-1", "10"), ("0", "1e2")]:
        with pytest.raises(redis.ResponseError, match="HP_BADARG"):
            raw.fcall_ro("hp_workers", 1, "chat", *args)
    _, cursor, worker, report = raw.fcall_ro("hp_workers", 1, "chat", "0", "10")
    assert (cursor, worker) == (b"0", b"w1") and b'"user":"default"' in report

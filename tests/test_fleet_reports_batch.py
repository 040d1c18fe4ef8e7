"""Fleet reports batched per process: ``hp_reports`` files several workers'
reports of one namespace in one atomic call, each exactly as ``hp_report``
would file it; ``reports_op`` sends any number of them in calls of at most
``MAX_REPORTS_PER_CALL``."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import hotparams
from hotparams.acl import acl_user
from hotparams.fleet import (
    MAX_REPORTS,
    MAX_REPORTS_PER_CALL,
    MAX_TTL_MS,
    WorkerReport,
    report_op,
    reports_op,
)
from hotparams.protocol import FCall
from hotparams.server import LocalRedis
from tests.conftest import need
from tests.helpers import dump_namespace
from tests.models import ChatParams
from tests.test_redis_cli import REDIS_CLI, redis_cli


def _reports(namespace: str, count: int, prefix: str = "w") -> list[WorkerReport]:
    return [
        WorkerReport(
            f"{prefix}{i:04d}",
            namespace,
            i % 7,
            "e1",
            host="h",
            pid=i,
            lag_ms=i / 10,
            last_error="" if i % 5 else f"error \u00e9 {i}",
            extra={"i": i},
        )
        for i in range(count)
    ]


def _fleet(client: redis.Redis, namespace: str) -> dict[str, Any]:
    """The namespace's fleet keys (``hp:{ns}:workers*``) without the namespace in
    their names, Redis's clock taken out: each index entry's time to live
    (expiry - reported_ms) and each body without reported_ms."""
    prefix = f"hp:{{{namespace}}}:"
    dump = dump_namespace(client, namespace, include_fleet=True)
    fleet = {k[len(prefix) :]: v for k, v in dump.items() if k.startswith(prefix + "workers")}
    bodies: dict[str, dict[str, Any]] = {}
    reported: dict[str, int] = {}
    for key, body in fleet.items():
        if key == "workers":
            continue
        user = key.rsplit(":", 1)[1]
        bodies[key] = {}
        for worker, raw in body.items():
            doc = json.loads(raw)
            reported[f"{user}\n{worker}"] = doc.pop("reported_ms")
            bodies[key][worker] = doc
    index = sorted((m, score - reported[m]) for m, score in fleet.pop("workers", []))
    return {"workers": index, **bodies}


def _user_ttls(client: redis.Redis, namespace: str) -> dict[str, bool]:
    """Whether each body key has a time to live (of at most the longest report's)."""
    out = {}
    for key in client.scan_iter(match=f"hp:{{{namespace}}}:workers:u:*"):
        pttl = client.pttl(key)
        out[key.decode().rsplit(":", 1)[1]] = 0 < pttl <= MAX_TTL_MS
    return out


# ---------------------------------------------------------------- the op, free of I/O


def _calls(op: Any) -> tuple[list[FCall], Any]:
    """Drive ``op``, answering each call with a clock that ticks; its calls and result."""
    calls: list[FCall] = []
    try:
        call = next(op)
        while True:
            calls.append(call)
            call = op.send(1000 + len(calls))
    except StopIteration as stop:
        return calls, stop.value


def test_reports_op_sends_as_few_calls_as_the_bound_allows() -> None:
    reports = _reports("chat", 2 * MAX_REPORTS_PER_CALL + 88)
    calls, now = _calls(reports_op("chat", reports, 30, "wk1"))
    assert [c.function for c in calls] == ["hp_reports"] * 3 and now == 1003
    assert [(len(c.args) - 2) // 2 for c in calls] == [256, 256, 88]
    assert all(c.namespace == "chat" and c.args[:2] == ("30000", "wk1") for c in calls)
    sent = [arg for c in calls for arg in c.args[2:]]
    assert sent == [x for r in reports for x in (r.id, r.to_json())]  # in order, as report_op
    assert not any(c.readonly for c in calls)


def test_reports_op_with_nothing_to_send_sends_nothing() -> None:
    assert _calls(reports_op("chat", [], 30, "wk1")) == ([], 0)


def test_reports_op_ttl_and_user_as_report_op_sends_them() -> None:
    (one,) = _reports("chat", 1)
    (single,), _ = _calls(report_op("chat", one, 7200))
    (batch,), _ = _calls(reports_op("chat", [one], 7200, ""))
    assert batch.args == (single.args[2], single.args[3], single.args[0], single.args[1])
    assert batch.args[:2] == (str(MAX_TTL_MS), "default")
    (short,), _ = _calls(reports_op("chat", [one], 0, "u"))
    assert short.args[0] == "1"


def test_reports_op_refuses_a_report_of_another_user() -> None:
    mine = WorkerReport("w1", "chat", 1, "e", user="wk1")
    theirs = WorkerReport("w2", "chat", 1, "e", user="wk2")
    with pytest.raises(ValueError, match=r"'w2' says ACL user 'wk2', sent as 'wk1'"):
        next(reports_op("chat", [mine, theirs], 30, "wk1"))
    assert _calls(reports_op("chat", [mine], 30, "wk1"))[0]


# ---------------------------------------------------------------- filed as hp_report files


def test_many_workers_in_one_call_land_as_separate_hp_reports_would(
    bus: hotparams.Bus, raw: redis.Redis
) -> None:
    bus.load_library()
    count = MAX_REPORTS_PER_CALL + 44  # two calls
    reports = _reports("chat", count)  # the same reports, into namespaces one and many
    # a few already listed (renewed, with a shorter time to live this time)
    for ns in ("one", "many"):
        for report in reports[:5]:
            bus.run(report_op(ns, report, 600))
    for report in reports:
        bus.run(report_op("one", report, 30))
    bus.run(reports_op("many", reports, 30, "default"))
    # what a caller may put in a report: Redis's clock and user win over its own
    forged = '{"version":3,"user":"mallory","reported_ms":1}'
    raw.fcall("hp_report", 1, "one", "forger", forged, 30_000)
    raw.fcall("hp_reports", 1, "many", 30_000, "default", "forger", forged, "empty", " { } ")
    raw.fcall("hp_report", 1, "one", "empty", " { } ", 30_000)
    one, many = _fleet(raw, "one"), _fleet(raw, "many")
    assert len(one["workers"]) == count + 2
    assert many == one
    assert one["workers:u:default"]["forger"]["user"] == "default"
    assert _user_ttls(raw, "many") == _user_ttls(raw, "one") == {"default": True}
    assert [(r.id, r.version) for r in bus.workers("many")] == [
        (r.id, r.version) for r in bus.workers("one")
    ]


def test_a_repeated_id_in_one_call_is_filed_once_the_last_one_winning(
    bus: hotparams.Bus, raw: redis.Redis
) -> None:
    bus.load_library()
    raw.fcall("hp_reports", 1, "chat", 1000, "default", "w1", '{"v":1}', "w1", '{"v":2}')
    assert raw.zcard("hp:{chat}:workers") == 1
    assert json.loads(raw.hget("hp:{chat}:workers:u:default", "w1"))["v"] == 2


# ---------------------------------------------------------------- refusals


def _refused(raw: redis.Redis, call: Callable[[], Any], code: str, *needles: str) -> None:
    """``call`` gets an error reply starting with ``code`` and changes nothing."""
    before = {ns: dump_namespace(raw, ns, include_fleet=True) for ns in ("chat", "other")}
    with pytest.raises(redis.ResponseError) as caught:
        call()
    assert str(caught.value).startswith(code), caught.value
    for needle in needles:
        assert needle in str(caught.value), caught.value
    after = {ns: dump_namespace(raw, ns, include_fleet=True) for ns in ("chat", "other")}
    assert after == before


def test_a_bad_report_in_the_middle_refuses_the_whole_call(
    bus: hotparams.Bus, raw: redis.Redis
) -> None:
    bus.register("chat", ChatParams)
    bus.run(reports_op("chat", _reports("chat", 3), 30, "default"))

    def batch(*pairs: Any, ttl: Any = 30_000, user: Any = "default") -> Callable[[], Any]:
        return lambda: raw.fcall("hp_reports", 1, "chat", ttl, user, *pairs)

    good = ("w0000", '{"version":9}', "fresh-1", "{}")  # a renewal and a new one, then the bad
    tail = ("fresh-2", "{}")
    for bad, why in [
        (("w2", "[]"), "report must be a JSON object"),
        (("w2", "{bad"), "report must be a JSON object"),
        (("w2", '{"a":"' + "x" * 5000 + '"}'), "at most 4 KiB"),
        (("w2", b'{"a":"\xff"}'), "UTF-8"),
        (("", "{}"), "worker id must be"),
        (("w" * 257, "{}"), "worker id must be"),
        ((b"w\xff", "{}"), "worker id must be"),
        (("w\n2", "{}"), "without control characters"),
    ]:
        _refused(raw, batch(*good, *bad, *tail), "HP_BADARG", why, "(pair 3)")
    for call, why in [
        (batch(*good, ttl=0), "ttl must be"),
        (batch(*good, ttl=MAX_TTL_MS + 1), "ttl must be"),
        (batch(*good, ttl="1e3"), "ttl must be"),
        (batch(*good, user="two words"), "ACL user must be"),
        (batch(*good, user=""), "ACL user must be"),
        (batch(*good, "odd"), "usage: hp_reports 1 <ns> <ttl ms> <acl user>"),
        (batch(), "usage"),  # no pair at all
        (lambda: raw.fcall("hp_reports", 1, "bad name!", 1000, "default", "w", "{}"), "namespace"),
    ]:
        _refused(raw, call, "HP_BADARG", why)
    assert [r.version for r in bus.workers("chat")] == [0, 1, 2]


def test_a_call_files_at_most_256_workers(bus: hotparams.Bus, raw: redis.Redis) -> None:
    bus.load_library()
    pairs = [x for i in range(MAX_REPORTS_PER_CALL + 1) for x in (f"w{i}", "{}")]
    _refused(
        raw,
        lambda: raw.fcall("hp_reports", 1, "chat", 30_000, "default", *pairs),
        "HP_BADARG",
        "(1 to 256 pairs)",
    )
    raw.fcall("hp_reports", 1, "chat", 30_000, "default", *pairs[:-2])
    assert raw.zcard("hp:{chat}:workers") == MAX_REPORTS_PER_CALL


def _args(*ids: str) -> tuple[Any, ...]:
    """``hp_reports``'s arguments for ``ids`` in namespace chat (a report each)."""
    pairs = [x for worker in ids for x in (worker, '{"version":2}')]
    return (1, "chat", 600_000, "default", *pairs)


def test_the_report_limit_counts_the_new_workers_of_the_call(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.load_library()
    raw = bus.client
    live = MAX_REPORTS - 3
    reports = [WorkerReport(f"w{i}", "chat", 1, "e") for i in range(live)]
    bus.run(reports_op("chat", reports, 600, "default"))
    assert raw.zcard("hp:{chat}:workers") == live

    def batch(*ids: str) -> Callable[[], Any]:
        return lambda: raw.fcall("hp_reports", *_args(*ids))

    # 4 new ones where 3 fit: none of the call is filed, not even the renewals
    _refused(raw, batch("w0", "n1", "n2", "n3", "n4"), "HP_LIMIT", f"holds {live} live", "4 new")
    assert raw.zcard("hp:{chat}:workers") == live
    # 3 new ones (one of them twice) and renewals fit exactly
    raw.fcall("hp_reports", *_args("w0", "n1", "n1", "n2", "n3", "w1"))
    assert raw.zcard("hp:{chat}:workers") == MAX_REPORTS
    _refused(raw, batch("w2", "n4"), "HP_LIMIT")
    _refused(raw, lambda: raw.fcall("hp_report", 1, "chat", "n4", "{}", 1000), "HP_LIMIT")
    raw.fcall("hp_reports", *_args("w2", "w3", "n1"))  # renewals only: always filed
    versions = {r.id: r.version for r in bus.workers("chat")}
    assert len(versions) == MAX_REPORTS
    assert {versions[w] for w in ("w0", "w1", "w2", "w3", "n1", "n2", "n3")} == {2}
    assert versions["w4"] == 1
    bus.close()


# ---------------------------------------------------------------- ACL users


@pytest.fixture
def worker_url(redis_url: str) -> Iterator[str]:
    """A user of the ``worker`` role on namespace chat (``hotparams acl worker``)."""
    admin = redis.Redis.from_url(redis_url)
    name, password = "wk1", secrets.token_hex(8)
    admin.execute_command(*acl_user("worker", ["chat"], name, password).command())
    yield f"redis://{name}:{password}@{redis_url.split('//', 1)[1]}"
    admin.acl_deluser(name)
    admin.close()


def test_a_worker_user_files_its_batch_and_cannot_claim_another_user(
    redis_url: str, worker_url: str
) -> None:
    installer = hotparams.connect(redis_url)
    installer.register("chat", ChatParams)
    installer.run(reports_op("chat", [WorkerReport("web-2:9", "chat", 1, "e")], 30, "wk2"))
    worker = hotparams.connect(worker_url, auto_install=False)
    worker.run(reports_op("chat", _reports("chat", 3), 30, "wk1"))
    raw = installer.client
    before = dump_namespace(raw, "chat", include_fleet=True)
    forged = [WorkerReport("web-2:9", "chat", 99, "e"), *_reports("chat", 3)]
    with pytest.raises(hotparams.PermissionDenied, match=r"hp:\{chat\}:workers:u:wk2"):
        worker.run(reports_op("chat", forged, 30, "wk2"))  # says it is wk2
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.client.hset("hp:{chat}:workers:u:wk2", "web-2:9", "{}")  # raw, too
    assert dump_namespace(raw, "chat", include_fleet=True) == before
    listed = {(r.id, r.user): r.version for r in installer.workers("chat")}
    assert listed == {("web-2:9", "wk2"): 1, **{(f"w{i:04d}", "wk1"): i for i in range(3)}}
    # the worker role may not write outside the fleet keys, batched or not
    with pytest.raises(hotparams.PermissionDenied):
        worker.set("chat", {"temperature": 0.2})
    worker.close()
    installer.close()


# ---------------------------------------------------------------- redis-cli


def test_redis_cli_files_a_batch_and_gets_a_refusal_that_changes_nothing(
    redis_url: str, redis_server: LocalRedis
) -> None:
    need(shutil.which(REDIS_CLI) is not None, "redis-cli (redis-tools)")
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    reply = redis_cli(
        redis_server,
        *("FCALL", "hp_reports", "1", "chat", "30000", "default"),
        *("cli-1", '{"version": 1}', "cli-2", '{"version": 1, "name": "night shift"}'),
    )
    assert reply.startswith("(integer) ") and int(reply.split()[1]) > 0, reply
    assert [(r.id, r.name) for r in bus.workers("chat")] == [
        ("cli-1", ""),
        ("cli-2", "night shift"),
    ]
    before = dump_namespace(bus.client, "chat", include_fleet=True)
    out = redis_cli(
        redis_server,
        *("FCALL", "hp_reports", "1", "chat", "30000", "default"),
        *("cli-3", "{}", "cli-4", "not json"),
    )
    assert out.startswith("(error) HP_BADARG report must be a JSON object") and "(pair 2)" in out
    assert out.count("\n") == 1, out
    assert dump_namespace(bus.client, "chat", include_fleet=True) == before
    bus.close()


# ---------------------------------------------------------------- what readers can decode


@pytest.mark.parametrize("bad", ['{"a":1', '{"a" 1}', "{,,}", '{"a":1}}', '{"a":1,}', "{"])
def test_a_report_that_is_not_a_well_formed_object_is_refused(
    bus: hotparams.Bus, raw: redis.Redis, bad: str
) -> None:
    """Tokens and UTF-8 alone let '{"a":1' through, and every reader of the
    fleet then failed on it."""
    bus.load_library()
    _refused(raw, lambda: raw.fcall("hp_report", 1, "chat", "w", bad, 1000), "HP_BADARG")
    _refused(
        raw,
        lambda: raw.fcall("hp_reports", 1, "chat", 1000, "default", "w1", "{}", "w2", bad),
        "HP_BADARG",
        "(pair 2)",
    )
    assert bus.workers("chat") == []


@pytest.mark.parametrize(
    "bad",
    [
        '{"a":NaN}',
        '{"a":0x1f}',
        '{"a":01}',
        '{"a":Infinity}',
        '{"a":"x\x01"}',  # a raw control character in a literal
        '{"a":"1',  # unterminated, digits only: a lone quote
        '{"a":"b","c":"1}',
        '{"a":"\\q"}',  # a bad escape (the slow path's)
    ],
)
def test_a_report_with_tokens_json_forbids_is_refused_on_either_path(
    bus: hotparams.Bus, raw: redis.Redis, bad: str
) -> None:
    """Reports without backslashes or control bytes are checked by pattern
    work in C (the fast path), the others literal by literal: both refuse
    what cjson would accept and JSON does not."""
    bus.load_library()
    _refused(raw, lambda: raw.fcall("hp_report", 1, "chat", "w", bad, 1000), "HP_BADARG")
    assert bus.workers("chat") == []


def test_a_report_with_escapes_takes_the_literal_by_literal_path_and_is_filed(
    bus: hotparams.Bus, raw: redis.Redis
) -> None:
    bus.load_library()
    body = '{"version":3,"last_error":"said \\"no\\" \\u00e9\\n","name":"a,b}:c"}'
    raw.fcall("hp_report", 1, "chat", "w", body, 10_000)
    (worker,) = bus.workers("chat")
    assert (worker.version, worker.last_error, worker.name) == (3, 'said "no" \u00e9\n', "a,b}:c")


def test_a_body_written_past_the_library_is_listed_as_unreadable(
    bus: hotparams.Bus, raw: redis.Redis
) -> None:
    """A worker's user may HSET its own report key directly: such a body
    shows in the listing as unreadable instead of breaking it."""
    bus.register("chat", ChatParams)
    bus.run(reports_op("chat", _reports("chat", 2), 30, "default"))
    raw.zadd("hp:{chat}:workers", {"default\nbroken": 2**52, "default\ntyped": 2**52})
    raw.hset("hp:{chat}:workers:u:default", "broken", '{"version":1')
    raw.hset("hp:{chat}:workers:u:default", "typed", '{"version":"9","pid":true,"user":"x"}')
    listed = {r.id: r for r in bus.workers("chat")}
    assert set(listed) == {"w0000", "w0001", "broken", "typed"}
    assert listed["broken"].last_error == "unreadable report: not a JSON object"
    assert listed["typed"].last_error == "unreadable report: wrong type of pid, version"
    assert (listed["typed"].version, listed["typed"].user) == (0, "x")
    conv = bus.convergence("chat")
    assert conv.workers == 4 and {r.id for r in conv.behind} >= {"broken", "typed"}

"""Size limits come first and cost nothing: a 120 MB argument is refused
before any per-byte work, in well under 100 ms of Redis time (SLOWLOG)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

import hotparams
from hotparams.server import LocalRedis
from tests.helpers import dump_namespace
from tests.models import ChatParams

BIG = 120 * 1024 * 1024
#: Redis time a refusal may take beyond what Redis spends on carrying the
#: argument into Lua at all (a function that does nothing with it, measured
#: alongside); the 120 MB refusal took 13.8 s before sizes came first
BUDGET_US = 100_000
#: at 120 MB, carrying the argument alone takes 0.3-1 s on a loaded machine
#: and varies by a few hundred ms between two calls: the budget there is
#: 1 s over the no-op call, still a tenth of the per-byte work it replaces
#: (11.9 s on this machine before sizes came first)
BIG_BUDGET_US = 1_000_000


@pytest.fixture
def big_redis() -> Iterator[redis.Redis]:
    """A server of this test alone, with SLOWLOG timing every command."""
    server = LocalRedis().start()
    client = server.client()
    client.config_set("slowlog-log-slower-than", 0)
    yield client
    client.close()
    server.close()


def _redis_time_us(client: redis.Redis, *call: bytes | str) -> tuple[int, str]:
    """The Redis time (µs, from SLOWLOG) of one FCALL and its error ("" if none)."""
    client.slowlog_reset()
    error = ""
    try:
        client.execute_command(*call)
    except redis.ResponseError as exc:
        error = str(exc)
    entries = [e for e in client.slowlog_get(10) if e["command"].startswith(b"FCALL")]
    assert len(entries) == 1
    return int(entries[0]["duration"]), error


def _fastest_us(
    client: redis.Redis,
    call: tuple[bytes | str, ...],
    floor: tuple[bytes | str, ...],
    runs: int = 3,
) -> tuple[int, int, str]:
    """The fastest of ``runs`` tries of ``call`` and of ``floor`` (a no-op
    FCALL with an argument of the same size), interleaved so that load on
    the machine weighs on both alike; and the call's error."""
    timings, floors, errors = [], [], []
    for _ in range(runs):
        floors.append(_redis_time_us(client, *floor)[0])
        took, error = _redis_time_us(client, *call)
        timings.append(took)
        errors.append(error)
    return min(timings), min(floors), errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("function", ["hp_set", "hp_commit"])  # one test each: ~1.4 GB sent
def test_a_120mb_value_is_refused_before_any_per_byte_work(
    big_redis: redis.Redis, function: str
) -> None:
    bus = hotparams.Bus(big_redis)
    bus.register("chat", ChatParams)
    before = dump_namespace(big_redis, "chat")
    huge = b"x" * BIG  # for the no-op call: the same size
    prompt = b'"' + b"\xc3\xa9" * (BIG // 2 - 1) + b'"'  # valid UTF-8 and JSON: the slow kind
    noop = ("FCALL", "hp_libversion", "0", huge)
    took, floor, error = _fastest_us(
        big_redis, ("FCALL", function, "1", "chat", "system_prompt", prompt), noop
    )
    assert error.startswith("HP_INVALID system_prompt: value is 125829120 bytes"), error
    assert dump_namespace(big_redis, "chat") == before
    print(f"\n120 MB: Redis time (us) of the {function} json refusal {took}, of a no-op {floor}")
    assert took < floor + BIG_BUDGET_US, (function, took, floor)


@pytest.mark.slow
def test_every_write_checks_sizes_first(big_redis: redis.Redis) -> None:
    """8 MB in each argument of each write function: refused in about the
    time Redis needs to carry 8 MB into Lua (per-byte Lua work on 8 MB
    takes seconds)."""
    bus = hotparams.Bus(big_redis)
    bus.register("chat", ChatParams)
    before = dump_namespace(big_redis, "chat")
    big = b"\xc3\xa9" * (4 * 1024 * 1024)
    noop = ("FCALL", "hp_libversion", "0", big)
    calls = {
        "hp_set value": ("hp_set", "system_prompt", big),
        "hp_commit value": ("hp_commit", "stop", b'["' + big + b'"]'),
        "hp_commit @variants": ("hp_commit", "@variants", big, "@op", "variant"),
        "hp_set @reason": ("hp_set", "max_tokens", "100", "@reason", big),
        "hp_commit @author": ("hp_commit", "max_tokens", "100", "@author", big),
        "hp_unset @source": ("hp_unset", "max_tokens", "@source", big),
        "hp_rollback @reason": ("hp_rollback", "1", "@reason", big),
    }
    timings, floors = {}, {}
    for label, (function, *args) in calls.items():
        took, floor, error = _fastest_us(big_redis, ("FCALL", function, "1", "chat", *args), noop)
        assert error.split(" ", 1)[0] in {"HP_INVALID", "HP_BADARG"}, (label, error)
        assert "bytes" in error or "1 MiB" in error, (label, error)
        timings[label], floors[label] = took, floor
    assert dump_namespace(big_redis, "chat") == before
    print(f"\n8 MB: Redis time (us) of the refusals {timings}, of a no-op FCALL {floors}")
    for label, took in timings.items():
        assert took < floors[label] + BUDGET_US, (label, took, floors[label])

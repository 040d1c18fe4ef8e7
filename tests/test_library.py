"""The Lua library's identity, the install step, ACL refusals and mixed releases,
against a real redis-server (ACL users made per test)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis

import hotparams
from hotparams.cli.context import exit_code_for
from hotparams.library import (
    API,
    RELEASE,
    RELEASE_DIGEST,
    Library,
    LibraryInfo,
    Load,
    Use,
    current,
    plan,
    source_text,
)
from tests.helpers import dump_namespace
from tests.models import ChatParams
from tests.test_cli import run_cli

OWN = current().info


def test_the_library_release_is_bumped_with_its_source() -> None:
    digest = OWN.digest
    assert digest == RELEASE_DIGEST, (
        "the Lua source changed: in hotparams/library.py set "
        f"RELEASE = {RELEASE + 1} and RELEASE_DIGEST = {digest!r} "
        "(a client never replaces a newer release, so a changed library needs a new number)"
    )


def test_the_library_answers_who_it_is(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    info = LibraryInfo.from_reply(bus.client.fcall_ro("hp_libversion", 0))
    assert info == OWN and info.release == RELEASE and info.api == API
    bus.close()


# ---------------------------------------------------------------- the plan, free of I/O


def _info(release: int, api: int = API, api_min: int = API) -> LibraryInfo:
    return LibraryInfo(release=release, api=api, api_min=api_min, digest=f"d{release}")


def test_the_plan_loads_only_what_is_missing_or_older() -> None:
    own = _info(5)
    assert plan(None, own, may_load=True) == Load(replace=False)
    assert plan(_info(4), own, may_load=True) == Load(replace=True)
    assert plan(_info(0, 0, 0), own, may_load=True) == Load(replace=True)  # unversioned
    assert plan(_info(5), own, may_load=True) == Use(_info(5))
    assert plan(_info(9), own, may_load=True) == Use(_info(9))  # newer, still serves us


def test_the_plan_of_a_client_that_may_not_load_says_to_install() -> None:
    own = _info(5)
    with pytest.raises(hotparams.LibraryMismatch, match=r"not installed.*hotparams install"):
        plan(None, own, may_load=False)
    with pytest.raises(hotparams.LibraryMismatch, match=r"release 4.*older.*release 5.*install"):
        plan(_info(4), own, may_load=False)
    assert plan(_info(6), own, may_load=False) == Use(_info(6))


def test_a_newer_library_that_dropped_our_calling_convention_names_both() -> None:
    own = _info(5, api=1, api_min=1)
    with pytest.raises(hotparams.LibraryMismatch) as caught:
        plan(_info(8, api=3, api_min=2), own, may_load=True)
    message = str(caught.value)
    assert "release 8 (calling convention 3" in message and "release 5" in message
    assert "upgrade this client" in message
    assert caught.value.installed == _info(8, 3, 2) and caught.value.wanted == own


# ---------------------------------------------------------------- two releases


def _release(n: int) -> Library:
    """This library's code as another release (a variant of the source, so its digest differs)."""
    return Library.build(source_text() + f"\n-- release {n}\n", release=n)


def _function_loads(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_function|load", {}).get("calls", 0))


def _rejected_loads(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_function|load", {})
    return int(stats.get("rejected_calls", 0))


def test_an_older_client_never_replaces_a_newer_library(redis_url: str) -> None:
    newer, older = hotparams.connect(redis_url), hotparams.connect(redis_url)
    newer.library, older.library = _release(RELEASE + 1), _release(RELEASE)
    newer.register("chat", ChatParams)
    loads = _function_loads(newer.client)
    for i in range(5):  # the two releases in one fleet, taking turns
        older.set("chat", {"max_tokens": 100 + i})
        newer.set("chat", {"temperature": 0.1 * i})
        older.load_library()  # even after Redis lost track of nothing: no reload
    assert _function_loads(newer.client) == loads
    info = LibraryInfo.from_reply(older.client.fcall_ro("hp_libversion", 0))
    assert info == newer.library.info
    assert older.get("chat").params.max_tokens == 104
    newer.close()
    older.close()


def test_a_newer_client_upgrades_an_older_library_once(redis_url: str) -> None:
    older, newer = hotparams.connect(redis_url), hotparams.connect(redis_url)
    older.library, newer.library = _release(RELEASE), _release(RELEASE + 1)
    older.register("chat", ChatParams)
    result = newer.install()
    assert result.action == "upgraded" and result.previous == older.library.info
    assert "upgraded the hotparams library from release" in result.describe()
    assert newer.install().action == "current"
    older.close()
    newer.close()


def test_an_older_client_against_an_incompatible_newer_library_names_both(
    redis_url: str,
) -> None:
    newer = hotparams.connect(redis_url)
    newer.library = Library.build(source_text(), release=RELEASE + 5, api=API + 2, api_min=API + 1)
    newer.install()
    old = hotparams.connect(redis_url)
    with pytest.raises(hotparams.LibraryMismatch) as caught:
        old.register("chat", ChatParams)
    assert f"release {RELEASE + 5}" in str(caught.value) and f"release {RELEASE}" in str(
        caught.value
    )
    assert LibraryInfo.from_reply(old.client.fcall_ro("hp_libversion", 0)).release == RELEASE + 5
    newer.close()
    old.close()


def test_two_clients_that_race_to_load_do_not_overwrite_each_other(redis_url: str) -> None:
    first, second = hotparams.connect(redis_url), hotparams.connect(redis_url)
    first.library, second.library = _release(RELEASE + 1), _release(RELEASE)
    first.install()
    # the second looked before the first loaded: its FUNCTION LOAD (no REPLACE) fails,
    # it looks again and uses the newer library (each look and load is a Broadcast:
    # one reply, or decoded error, per primary)
    from hotparams.library import install_op

    op = install_op(second.library, may_load=True)
    call = next(op)
    assert call.args == ("FCALL_RO", "hp_libversion", "0")
    from hotparams.protocol import LibraryMissing

    load = op.send([LibraryMissing("Function not found")])
    assert load.args[:2] == ("FUNCTION", "LOAD") and "REPLACE" not in load.args
    with pytest.raises(redis.ResponseError, match="already exists") as caught:
        second.client.execute_command(*load.args)
    from hotparams.protocol import ErrorReply, decode_error

    look = op.send([decode_error("", ErrorReply(str(caught.value)))])
    reply = second.client.execute_command(*look.args)
    with pytest.raises(StopIteration) as done:
        op.send([reply])
    assert done.value.value.action == "newer"
    first.close()
    second.close()


def test_primaries_of_a_cluster_each_get_the_library_and_none_is_downgraded() -> None:
    """The look and the load go to every primary (a Broadcast, one reply each):
    a primary without the library gets it, the others answer 'already exists'
    and the next look finds them all current; a primary running a newer
    release while another runs none refuses, rather than downgrading it."""
    from hotparams.library import LibraryInfo, install_op
    from hotparams.protocol import LibraryExists, LibraryMissing

    own = _release(RELEASE)
    op = install_op(own, may_load=True)
    next(op)
    load = op.send([own.info.to_json(), LibraryMissing("Function not found")])
    assert load.args[:2] == ("FUNCTION", "LOAD") and "REPLACE" not in load.args
    op.send([LibraryExists("Library 'hotparams' already exists"), "hotparams"])
    with pytest.raises(StopIteration) as done:
        op.send([own.info.to_json()] * 2)
    assert done.value.value.action == "current"

    op = install_op(own, may_load=True)
    next(op)
    newer = LibraryInfo(RELEASE + 1, own.info.api, own.info.api_min, "abc")
    with pytest.raises(hotparams.LibraryMismatch, match="primaries run different"):
        op.send([newer.to_json(), LibraryMissing("Function not found")])


# ---------------------------------------------------------------- ACL users


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    made: list[str] = []
    client.made = made  # type: ignore[attr-defined]
    yield client
    for name in made:
        client.acl_deluser(name)
    client.close()


def _user(admin: redis.Redis, redis_url: str, *rules: str) -> str:
    """The URL of a new ACL user with these rules."""
    name = f"u{secrets.token_hex(4)}"
    password = secrets.token_hex(8)
    admin.execute_command("ACL", "SETUSER", name, "on", f">{password}", *rules)
    admin.made.append(name)  # type: ignore[attr-defined]
    host = redis_url.split("//", 1)[1]
    return f"redis://{name}:{password}@{host}"


#: a user who may run everything but FUNCTION (so no FUNCTION LOAD)
EDITOR = ("~*", "&*", "+@all", "-function")


def test_a_client_that_may_not_load_says_to_run_install_and_never_loads(
    admin: redis.Redis, redis_url: str
) -> None:
    url = _user(admin, redis_url, *EDITOR)
    bus = hotparams.connect(url, auto_install=False)
    before = _function_loads(admin)
    with pytest.raises(hotparams.LibraryMismatch, match=r"not installed.*hotparams install"):
        bus.register("chat", ChatParams)
    assert _function_loads(admin) == before  # not even tried
    installer = hotparams.connect(redis_url)
    assert installer.install().action == "installed"
    bus.register("chat", ChatParams)  # works as soon as an admin installed it
    bus.close()
    installer.close()


def test_a_refused_function_load_is_a_clear_error_tried_once(
    admin: redis.Redis, redis_url: str
) -> None:
    url = _user(admin, redis_url, *EDITOR)
    bus = hotparams.connect(url)  # auto_install (the default) but no function|load
    before = _rejected_loads(admin)
    for _ in range(3):
        with pytest.raises(hotparams.LibraryMismatch) as caught:
            bus.register("chat", ChatParams)
        assert "function|load" in str(caught.value) and "hotparams install" in str(caught.value)
        assert exit_code_for(caught.value) == 8
    assert _rejected_loads(admin) == before + 1
    bus.close()


def test_a_write_an_acl_allows_only_in_part_is_refused_whole(
    admin: redis.Redis, redis_url: str
) -> None:
    installer = hotparams.connect(redis_url)
    installer.register("chat", ChatParams)
    before = dump_namespace(admin, "chat", include_fleet=True)
    # may write the version hashes but not SPUBLISH the change event
    url = _user(admin, redis_url, *EDITOR, "-spublish")
    bus = hotparams.connect(url, auto_install=False)
    with pytest.raises(hotparams.PermissionDenied) as caught:
        bus.set("chat", {"temperature": 0.2})
    assert caught.value.permission == "run SPUBLISH on hp:{chat}:events"
    assert "may not run SPUBLISH on hp:{chat}:events" in str(caught.value)
    assert exit_code_for(caught.value) == 8
    assert dump_namespace(admin, "chat", include_fleet=True) == before
    installer.close()
    bus.close()


def test_a_user_without_fcall_gets_permission_denied(admin: redis.Redis, redis_url: str) -> None:
    installer = hotparams.connect(redis_url)
    installer.register("chat", ChatParams)
    url = _user(
        admin,
        redis_url,
        "~*",
        "+fcall_ro",
        "+client|setname",
        "+hgetall",
        "+hmget",
        "+hget",
        "+time",
    )
    bus = hotparams.connect(url, auto_install=False)
    bus.get("chat")  # reads work
    with pytest.raises(hotparams.PermissionDenied, match="may not run 'fcall'") as caught:
        bus.set("chat", {"temperature": 0.2})
    assert caught.value.permission == "run 'fcall'"
    installer.close()
    bus.close()


# ---------------------------------------------------------------- the CLI


def test_cli_install_says_what_it_did(admin: redis.Redis, redis_url: str) -> None:
    first = run_cli(redis_url, "install")
    assert first.code == 0, first.err
    assert first.out.strip() == f"installed the hotparams library {OWN}"
    again = run_cli(redis_url, "install", "--json")
    assert again.code == 0 and again.json()["action"] == "current"
    assert again.json()["release"] == RELEASE


def test_cli_install_without_the_permission_exits_8(admin: redis.Redis, redis_url: str) -> None:
    url = _user(admin, redis_url, *EDITOR)
    result = run_cli(url, "install")
    assert result.code == 8, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "function|load" in lines[0], result.err
    assert "Traceback" not in result.err
    denied = run_cli(url, "get", "chat")
    assert denied.code == 8 and "hotparams install" in denied.err


def test_the_asyncio_bus_installs_and_refuses_alike(redis_url: str) -> None:
    import asyncio

    from hotparams import aio

    async def scenario() -> None:
        async with aio.connect(redis_url, auto_install=False) as shy:
            with pytest.raises(hotparams.LibraryMismatch, match="hotparams install"):
                await shy.register("chat", ChatParams)
            async with aio.connect(redis_url) as admin:
                assert (await admin.install()).action == "installed"
            assert (await shy.register("chat", ChatParams)).version == 1

    asyncio.run(scenario())

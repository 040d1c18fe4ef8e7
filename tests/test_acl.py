"""Each role of ``hotparams acl`` against a real redis-server, with users made
by the command itself: what the role may do works, what it may not is
:class:`hotparams.PermissionDenied` (CLI exit 8) with nothing half-written."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

import hotparams
from hotparams.acl import ROLES, acl_user
from hotparams.library import PARTS
from hotparams.server import LocalRedis
from tests.models import ChatParams

from .conftest import need
from .helpers import dump_namespace, wait_until
from .test_cli import run_cli

LUA = Path(hotparams.__file__).parent / "lua"


class ChatParamsPlus(ChatParams):
    """A schema with one field more: a migration."""

    note: str = ""


@dataclass
class Deployment:
    server: LocalRedis
    admin: hotparams.Bus  # the default user: sets the stage and checks end states

    def user(self, role: str, name: str, *namespaces: str) -> str:
        """Make a user with ``hotparams acl ... --apply``; returns its URL."""
        password = f"Pw-{name}-5ecret"
        result = run_cli(
            self.server.url,
            "acl",
            role,
            *(arg for ns in namespaces or ("chat",) for arg in ("--namespace", ns)),
            "--user",
            name,
            "--password-env",
            "HP_TEST_PASSWORD",
            "--apply",
            HP_TEST_PASSWORD=password,
        )
        assert result.code == 0, result.err
        assert result.out.count("\n") == 1 and result.out.startswith(f"ACL SETUSER {name} ")
        assert password not in result.out
        return f"redis://{name}:{password}@127.0.0.1:{self.server.port}/0"

    def dump(self, *, fleet: bool = True) -> dict[str, Any]:
        client = self.admin.client
        return {ns: dump_namespace(client, ns, include_fleet=fleet) for ns in ("chat", "other")}


@pytest.fixture
def deployment(private_redis: LocalRedis) -> Iterator[Deployment]:
    admin = hotparams.connect(private_redis.url)
    admin.register("chat", ChatParams, author="setup")
    admin.register("other", ChatParams, author="setup")
    admin.set("chat", {"temperature": 0.3, "api_key": "sk-chat-1"})
    admin.set_variant("chat", "cool", {"temperature": 0.1}, percent=50)
    yield Deployment(private_redis, admin)
    admin.close()


def _denied(action: Callable[[], object], dep: Deployment, *, fleet: bool = True) -> None:
    """``action`` raises PermissionDenied and leaves every key as it was."""
    before = dep.dump(fleet=fleet)
    with pytest.raises(hotparams.PermissionDenied) as caught:
        action()
    assert "permission" in str(caught.value).lower()
    assert "\n" not in str(caught.value)
    assert dep.dump(fleet=fleet) == before


def _raw_denied(client: redis.Redis, *command: str) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def _writes(bus: hotparams.Bus, namespace: str = "chat") -> dict[str, Callable[[], object]]:
    """Every write verb of the Python API on ``namespace``."""
    bus.bind(namespace, ChatParams)
    return {
        "set": lambda: bus.set(namespace, {"temperature": 1.5}),
        "unset": lambda: bus.unset(namespace, ["temperature"]),
        "variant set": lambda: bus.set_variant(namespace, "warm", {"temperature": 1.2}, percent=5),
        "variant remove": lambda: bus.remove_variant(namespace, "cool"),
        "rollback": lambda: bus.rollback(namespace, 1),
        "restore": lambda: bus.restore(namespace, {"temperature": 0.9}, model=ChatParams),
        "configure": lambda: bus.configure(namespace, retention=7),
        "migrate": lambda: bus.migrate(namespace, ChatParamsPlus),
        "delete": lambda: bus.delete(namespace),
    }


# ------------------------------------------------------------------ the line


def test_the_command_prints_one_setuser_line_per_role_with_a_hashed_password() -> None:
    for role in ROLES:
        made = acl_user(role, ["chat", "team-*"], f"u-{role}", "s3cret!")
        line = made.line()
        assert line.startswith(f"ACL SETUSER u-{role} reset on #") and "\n" not in line
        assert "s3cret!" not in line
        assert "~hp:{chat}:" in line and "~hp:{team-*}:" in line and "&hp:{chat}:events" in line
        assert "+@all" not in line and "flushall" not in line and "~*" not in line
    assert "+function|load" in acl_user("admin", ["chat"], "a").line()
    for role in ("viewer", "worker", "editor"):
        assert "function" not in acl_user(role, ["chat"], "x").line()
    for role in ("viewer", "worker"):
        line = acl_user(role, ["chat"], "x").line()
        assert "+publish" not in line and "+spublish" not in line and " ~hp:{chat}:* " not in line
        assert "%R~hp:{chat}:*" in line


@pytest.mark.parametrize(
    "args",
    [
        ["boss", "--namespace", "chat", "--user", "x"],
        ["viewer", "--namespace", "ch at", "--user", "x"],
        ["viewer", "--namespace", "chat", "--user", "a b"],
        ["viewer", "--namespace", "chat", "--user", "default"],
        ["viewer", "--namespace", "chat", "--user", "x", "--password-env", "HP_UNSET_VAR"],
    ],
)
def test_bad_roles_patterns_users_and_password_variables_are_usage_errors(
    args: list[str],
) -> None:
    result = run_cli("redis://127.0.0.1:1/0", "acl", *args)
    assert result.code == 2 and result.err.startswith("hotparams: error: ")
    assert result.out == ""


def test_every_command_the_library_calls_is_granted_to_the_roles_that_call_it() -> None:
    called: dict[str, set[str]] = {}
    for part in PARTS:
        source = (LUA / part).read_text()
        called[part] = {c.lower() for c in re.findall(r"redis\.p?call\('([A-Za-z]+)'", source)}
    everything = set().union(*called.values())
    for role in ("editor", "admin"):
        assert everything <= set(ROLES[role].commands), everything - set(ROLES[role].commands)
    assert called["fleet.lua"] <= set(ROLES["worker"].commands)
    assert called["reads.lua"] <= set(ROLES["viewer"].commands)


def test_the_line_works_piped_into_redis_cli_and_as_an_acl_file(tmp_path: Path) -> None:
    need(shutil.which("redis-cli") is not None, "redis-cli (on PATH)")
    made = acl_user("worker", ["chat"], "piped", "pw-piped-1")
    with LocalRedis() as server:
        proc = subprocess.run(
            ["redis-cli", "-p", str(server.port)],
            input=made.line() + "\n",
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert proc.stdout.strip() == "OK", proc.stdout
        rules = server.client().execute_command("ACL", "GETUSER", "piped")
        assert rules[b"selectors"], "the selector was joined back"
        listed = [r.decode() for r in server.client().execute_command("ACL", "LIST")]
    acl_file = tmp_path / "users.acl"
    acl_file.write_text("user default on nopass ~* &* +@all\n" + made.file_line() + "\n")
    with LocalRedis(extra=["--aclfile", str(acl_file)]) as server:
        loaded = [r.decode() for r in server.client().execute_command("ACL", "LIST")]
        worker = redis.Redis(port=server.port, username="piped", password="pw-piped-1")
        assert worker.ping()
        worker.close()

    def tokens(lines: list[str]) -> list[list[str]]:
        return [
            sorted(r.replace("(", " ").replace(")", " ").split()) for r in lines if "piped" in r
        ]

    assert tokens(loaded) == tokens(listed) != []


def test_without_a_password_variable_the_user_keeps_its_passwords(
    deployment: Deployment,
) -> None:
    url = deployment.user("viewer", "keeper")
    run_cli(
        deployment.server.url, "acl", "editor", "--namespace", "chat", "--user", "keeper", "--apply"
    )
    with hotparams.connect(url) as bus:
        assert bus.set("chat", {"max_tokens": 99}) > 0  # now an editor, same password


# ------------------------------------------------------------------ the roles


def test_a_viewer_reads_history_and_fleet_status_and_writes_nothing(
    deployment: Deployment,
) -> None:
    url = deployment.user("viewer", "ops-viewer")
    live = deployment.admin.watch("chat", ChatParams, worker_name="w1")
    try:
        with hotparams.connect(url) as viewer:
            assert viewer.get("chat").values["temperature"] == 0.3
            assert viewer.head("chat").version == deployment.admin.head("chat").version
            assert viewer.history("chat", limit=5)[0].op == "variant"
            assert viewer.diff("chat", 1, 2)
            assert viewer.variants("chat").variants["cool"].percent == 50
            assert wait_until(lambda: len(viewer.workers("chat")) == 1)
            assert viewer.convergence("chat").workers == 1
            viewer.exposures("chat")
            for write in _writes(viewer).values():
                _denied(write, deployment, fleet=False)
            _denied(lambda: viewer.record_exposures("chat", "salt", {None: 5}), deployment)
            _denied(lambda: viewer.get("other"), deployment)
            raw = viewer.client
            _raw_denied(raw, "FUNCTION", "LOAD", "REPLACE", "#!lua name=x\n")
            _raw_denied(raw, "FLUSHALL")
            _raw_denied(raw, "PUBLISH", "hp:{chat}:events", "{}")
            _raw_denied(raw, "HSET", "hp:{chat}:meta", "version", "99")
            _raw_denied(raw, "GET", "unrelated")
        for verb in (["get", "chat"], ["history", "chat"], ["status", "chat"], ["schema", "chat"]):
            assert run_cli(url, *verb).code == 0, verb
        before = deployment.dump(fleet=False)
        refused = run_cli(url, "set", "chat", "temperature=1.1")
        assert refused.code == 8 and refused.err.count("\n") == 1, refused.err
        assert refused.err.startswith("hotparams: error: permission denied")
        assert deployment.dump(fleet=False) == before
    finally:
        live.close()


def test_a_worker_follows_reports_and_counts_exposures_and_writes_no_version(
    deployment: Deployment,
) -> None:
    url = deployment.user("worker", "chat-worker")
    admin = deployment.admin
    with hotparams.connect(url) as worker_bus:
        live = worker_bus.watch("chat", ChatParams, worker_name="w1")
        try:
            assert live.current.params.temperature == 0.3
            v = admin.set("chat", {"temperature": 0.6}, author="ana")
            assert live.wait_for(v, timeout=10)
            assert live.current.params.temperature == 0.6
            assert wait_until(lambda: [r.version for r in admin.workers("chat")] == [v])
            for user in ("u1", "u2", "u3"):
                live.for_user(user)
        finally:
            live.close()
        assert sum(admin.exposures("chat").values()) == 3
        assert admin.workers("chat") == []  # it left the fleet on close
        for write in _writes(worker_bus).values():
            _denied(write, deployment, fleet=False)
        _denied(lambda: worker_bus.get("other"), deployment)
        raw = worker_bus.client
        _raw_denied(raw, "PUBLISH", "hp:{chat}:events", "{}")
        _raw_denied(raw, "FUNCTION", "LOAD", "REPLACE", "#!lua name=x\n")
        _raw_denied(raw, "FLUSHDB")
        _raw_denied(raw, "HSET", f"hp:{{chat}}:v:{v + 1}", "temperature", "9")
        _raw_denied(raw, "HSET", "chat", "a", "1")  # the bare name is for FCALL only
    before = deployment.dump(fleet=False)
    refused = run_cli(url, "rollback", "chat", "1")
    assert refused.code == 8, refused.err
    assert deployment.dump(fleet=False) == before


def test_an_editor_uses_every_write_verb_of_its_namespaces_and_nothing_else(
    deployment: Deployment,
) -> None:
    url = deployment.user("editor", "ana-editor")
    with hotparams.connect(url) as editor:
        writes = _writes(editor)
        delete = writes.pop("delete")
        for verb, write in writes.items():
            before = deployment.admin.head("chat").version
            write()
            assert deployment.admin.head("chat").version >= before, verb
        assert deployment.admin.get("chat").values["temperature"] == 0.9  # the restore
        (chat,) = [n for n in deployment.admin.namespaces() if n.namespace == "chat"]
        assert chat.settings.retention == 7  # the configure
        for write in _writes(editor, "other").values():
            _denied(write, deployment)
        raw = editor.client
        _raw_denied(raw, "FUNCTION", "LOAD", "REPLACE", "#!lua name=x\n")
        _raw_denied(raw, "FUNCTION", "DELETE", "hotparams")
        _raw_denied(raw, "FLUSHALL")
        _raw_denied(raw, "FLUSHDB")
        _raw_denied(raw, "SET", "unrelated", "1")
        _raw_denied(raw, "CONFIG", "SET", "appendonly", "no")
        _raw_denied(raw, "PUBLISH", "hp:{other}:events", "{}")
    for verb in (
        ["set", "chat", "max_tokens=128"],
        ["unset", "chat", "max_tokens"],
        ["variant", "set", "chat", "cool", "--percent", "20"],
        ["variant", "remove", "chat", "cool"],
        ["rollback", "chat", "10"],
    ):
        result = run_cli(url, *verb)
        assert result.code == 0, (verb, result.err)
    assert run_cli(url, "set", "other", "max_tokens=128").code == 8
    with hotparams.connect(url) as editor:
        assert [n.namespace for n in editor.namespaces()] == ["chat"]  # "other" is not its
        delete()
    assert [n.namespace for n in deployment.admin.namespaces()] == ["other"]


def test_an_admin_installs_the_library_and_writes_but_reaches_no_other_key(
    deployment: Deployment,
) -> None:
    url = deployment.user("admin", "root-ish", "chat", "new-*")
    deployment.admin.client.function_flush()
    with hotparams.connect(url) as admin:
        admin.load_library()  # what `hotparams install` does
        assert admin.register("new-one", ChatParams).created
        assert admin.set("chat", {"max_tokens": 64}) > 0
        _raw_denied(admin.client, "FLUSHALL")
        _raw_denied(admin.client, "SET", "unrelated", "1")
        _raw_denied(admin.client, "CONFIG", "GET", "*")
        _denied(lambda: admin.set("other", {"max_tokens": 64}), deployment)

"""docker-compose.yml and the Dockerfile, checked without a Docker engine:
well-formed, one image for the fleet, and every command, module, path and
environment variable they name exists in the repository."""

from __future__ import annotations

import fnmatch
import importlib
import re
import runpy
import shlex
import tomllib
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
FLEET = ("web", "chat-worker")


def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, p) for p in patterns for prefix in prefixes)


def as_argv(command: Any) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), command
    return list(command)


def check_command(argv: list[str]) -> None:
    """A command run in the fleet image: its program, module and paths exist."""
    program, args = argv[0], argv[1:]
    if program == "python":
        assert args[0] == "-m", argv
        module_name, module_args = args[1], args[2:]
        assert module_name.startswith("workers."), argv
        assert (ROOT / (module_name.replace(".", "/") + ".py")).is_file(), module_name
        module = importlib.import_module(module_name)
        assert callable(module.main)
        module.parse_args(module_args)  # the arguments parse (argparse exits on an error)
    elif program == "gunicorn":
        config = args[args.index("--config") + 1]
        check_gunicorn_config(config)
    elif program == "hotparams":
        pass  # the console script of the package the image installs
    else:
        pytest.fail(f"unknown program in the fleet: {argv}")


def check_gunicorn_config(path: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    assert (ROOT / path).is_file(), path
    assert not dockerignored(path)
    # the config's prepare_master() declares its process a fork server (every
    # later Live handle would stay dormant) and sets PROMETHEUS_MULTIPROC_DIR:
    # neither may leak into the test process
    with mock.patch("hotparams.gunicorn.prepare_master") as prepare:
        settings = runpy.run_path(str(ROOT / path))
    prepare.assert_called_once_with()
    module_name, _, factory = settings["wsgi_app"].partition(":")
    module = importlib.import_module(module_name)  # no Redis needed to import it
    assert callable(getattr(module, factory.removesuffix("()")))
    assert settings["preload_app"] is True
    return settings


def test_the_compose_file_is_well_formed_with_redis_and_the_fleet() -> None:
    found = services()
    assert set(found) >= {"redis", *FLEET}
    assert found["redis"]["image"].startswith(("redis:", "valkey/"))
    for name in FLEET:
        svc = found[name]
        assert "HOTPARAMS_URL" not in svc["environment"], name  # it holds a password
        assert svc["env_file"], name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["depends_on"]["install"]["condition"] == "service_completed_successfully"
    assert found["chat-worker"]["deploy"]["replicas"] >= 2
    for name, svc in found.items():
        if svc.get("restart") == "no":  # a one-shot step (the ACL file, the install)
            continue
        assert as_argv(svc["healthcheck"]["test"])[0] in ("CMD", "CMD-SHELL"), name
    volumes = compose().get("volumes") or {}
    for svc in found.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in volumes or (ROOT / source).exists(), volume


def test_the_fleet_is_one_image_built_from_the_repository_dockerfile() -> None:
    found = services()
    images = {found[name]["image"] for name in FLEET}
    builds = {found[name]["build"] for name in FLEET}
    assert len(images) == 1 and builds == {"."}
    assert DOCKERFILE.is_file()


def test_every_command_and_healthcheck_names_something_that_exists() -> None:
    for name in ("redis-users", "install"):
        assert services()[name]["image"] == services()["web"]["image"]
        check_command(as_argv(services()[name]["command"]))
    for name in FLEET:
        svc = services()[name]
        check_command(as_argv(svc["command"]))
        test = as_argv(svc["healthcheck"]["test"])
        assert test[0] == "CMD"
        check_command(test[1:])


def test_every_environment_variable_of_the_fleet_is_read_by_the_code() -> None:
    code = "\n".join(
        p.read_text() for d in ("workers", "hotparams") for p in (ROOT / d).rglob("*.py")
    )
    for name in FLEET:
        for variable in services()[name]["environment"]:
            assert f'"{variable}"' in code or f"'{variable}'" in code, (name, variable)


def test_the_gunicorn_config_runs_several_preloaded_workers_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = services()["web"]["environment"]
    monkeypatch.setenv("PORT", env["PORT"])
    monkeypatch.setenv("WEB_CONCURRENCY", env["WEB_CONCURRENCY"])
    monkeypatch.delenv("BIND", raising=False)
    settings = check_gunicorn_config("workers/gunicorn.conf.py")
    assert settings["workers"] == int(env["WEB_CONCURRENCY"]) >= 2
    assert settings["bind"] == f"0.0.0.0:{env['PORT']}"
    assert services()["web"]["ports"] == [f"{env['PORT']}:{env['PORT']}"]


def test_the_dockerfile_copies_what_exists_installs_the_extras_runs_unprivileged() -> None:
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    copies = [args.split() for word, args in steps if word == "COPY"]
    assert copies
    for parts in copies:
        assert not any(p.startswith("--from") for p in parts)
        for source in parts[:-1]:
            assert (ROOT / source).exists(), source
            assert not dockerignored(source), source
    installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    assert installs
    for extra in re.findall(r"\.\[([a-z,]+)\]", " ".join(installs)):
        assert set(extra.split(",")) <= set(extras), extra
    gunicorn_extra = [e for e in re.findall(r"\.\[([a-z,]+)\]", " ".join(installs))]
    assert any("gunicorn" in " ".join(extras[e]) for e in gunicorn_extra)
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    cmd = [args for word, args in steps if word == "CMD"][-1]
    check_command(as_argv(yaml.safe_load(cmd)))
    assert "tests" not in {p[0] for p in copies}


# ------------------------------------------------------------------ security


ENV_FILES = {"redis.env", "admin.env", "web.env", "worker.env"}


def _env_files(svc: dict[str, Any]) -> list[str]:
    files = svc.get("env_file") or []
    return [files] if isinstance(files, str) else list(files)


def test_no_url_password_or_token_is_ever_on_a_command_line() -> None:
    for name, svc in services().items():
        argv = as_argv(svc.get("command") or [])
        joined = " ".join(argv + as_argv(svc.get("healthcheck", {}).get("test") or []))
        assert "--url" not in argv and "redis://" not in joined and "rediss://" not in joined
        assert " -a " not in f" {joined} " and "--pass" not in joined, name
        for variable, value in (svc.get("environment") or {}).items():
            assert "PASSWORD" not in variable and "TOKEN" not in variable, (name, variable)
            assert "://" not in str(value), (name, variable)


def test_redis_runs_on_an_acl_file_of_hotparams_roles_from_environment_files() -> None:
    found = services()
    redis_argv = as_argv(found["redis"]["command"])
    assert redis_argv[redis_argv.index("--aclfile") + 1] == "/acl/users.acl"
    assert found["redis"]["depends_on"]["redis-users"]["condition"] == (
        "service_completed_successfully"
    )
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert "deploy/*.env" in gitignore
    generator = (ROOT / "scripts" / "compose-env").read_text()
    for name, svc in found.items():
        for path in _env_files(svc):
            assert path.startswith("deploy/") and Path(path).name in ENV_FILES, (name, path)
            assert f'"{Path(path).name}"' in generator, path


@pytest.mark.slow
def test_the_generated_environment_files_make_a_working_least_privilege_fleet(
    tmp_path: Path,
) -> None:
    """scripts/compose-env's files and workers.redis_users's ACL file, on a
    real redis-server: each service's user can do its part, and no more."""
    import subprocess
    import sys

    import redis

    import hotparams
    from hotparams.server import LocalRedis
    from workers import redis_users
    from workers.params import ChatParams

    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compose-env"), "--dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    env = {}
    for name in ENV_FILES:
        path = tmp_path / name
        assert path.stat().st_mode & 0o077 == 0, name  # 0600: they hold secrets
        env[name] = dict(line.split("=", 1) for line in path.read_text().splitlines())
    acl = tmp_path / "users.acl"
    acl.write_text(redis_users.acl_file(["chat"], env["redis.env"]))
    with LocalRedis(extra=["--aclfile", str(acl)]) as server:

        def url(service: str) -> str:
            return env[service]["HOTPARAMS_URL"].replace("@redis:6379", f"@127.0.0.1:{server.port}")

        with pytest.raises(redis.exceptions.AuthenticationError):
            server.client().ping()  # the default user is off
        keys = [env["admin.env"]["HOTPARAMS_SECRET_KEYS"]]
        with hotparams.connect(url("admin.env"), secret_keys=keys) as admin:
            admin.install()
            admin.register("chat", ChatParams)
        with hotparams.connect(url("web.env"), secret_keys=keys) as web:
            web.bind("chat", ChatParams)  # the web app writes with its model
            assert web.set("chat", {"temperature": 0.4, "api_key": "sk-compose-1"}) > 1
        with hotparams.connect(url("worker.env"), secret_keys=keys) as worker:
            live = worker.watch("chat", ChatParams)
            assert live.current.params.api_key.get_secret_value() == "sk-compose-1"
            live.close()
            worker.bind("chat", ChatParams)
            with pytest.raises(hotparams.PermissionDenied):
                worker.set("chat", {"temperature": 0.9})
        viewer = redis.Redis(
            port=server.port,
            username="ops-viewer",
            password=env["redis.env"]["HOTPARAMS_VIEWER_PASSWORD"],
        )
        assert viewer.ping()  # the healthcheck's user
        admin_password = env["redis.env"]["HOTPARAMS_ADMIN_PASSWORD"]
        stored = server.client(username="hotparams-admin", password=admin_password)
        assert b"hpenc:1:" in stored.hget("hp:{chat}:v:2", "api_key")  # encrypted at rest


def test_the_tls_override_serves_tls_only_and_mounts_the_certificates() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.tls.yml").read_text())
    redis_argv = as_argv(doc["services"]["redis"]["command"])
    assert redis_argv[redis_argv.index("--port") + 1] == "0"
    for option in ("--tls-port", "--tls-cert-file", "--tls-key-file", "--tls-ca-cert-file"):
        assert option in redis_argv
    assert redis_argv[: len(as_argv(services()["redis"]["command"]))] == as_argv(
        services()["redis"]["command"]
    )
    assert "--tls" in " ".join(as_argv(doc["services"]["redis"]["healthcheck"]["test"]))
    for name in ("install", *FLEET):
        assert "./deploy/tls:/tls:ro" in doc["services"][name]["volumes"], name
    generator = (ROOT / "scripts" / "compose-env").read_text()
    assert "rediss" in generator and "ssl_ca_certs=/tls/ca.crt" in generator


# ------------------------------------------------------------------ sentinel

SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")


def test_the_sentinel_profile_adds_a_replica_and_three_sentinels_beside_the_single_redis() -> None:
    from workers import redis_users

    found = services()
    profiled = {name for name, svc in found.items() if svc.get("profiles")}
    assert profiled == {"redis-replica", *SENTINELS}
    assert all(found[name]["profiles"] == ["sentinel"] for name in profiled)
    replica = as_argv(found["redis-replica"]["command"])
    master = as_argv(found["redis"]["command"])
    assert replica[: len(master)] == master  # the same node configuration and users
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert replica[replica.index("--replica-announce-ip") + 1] == "redis-replica"
    assert master[1] == "/acl/node.conf"
    for name in SENTINELS:
        svc = found[name]
        assert svc["hostname"] == name
        script = as_argv(svc["command"])[-1]
        assert "/acl/sentinel.conf" in script and "--sentinel" in script
        assert "redis-acl:/acl:ro" in svc["volumes"]
        assert redis_users.SERVICE in " ".join(as_argv(svc["healthcheck"]["test"]))
        assert "ports" not in svc  # the compose network alone
    conf = redis_users.sentinel_conf({"HOTPARAMS_SENTINEL_PASSWORD": "x"})
    quorum = int(conf.split(f"monitor {redis_users.SERVICE} redis 6379 ")[1].split()[0])
    assert quorum == len(SENTINELS) // 2 + 1


def test_compose_env_sentinel_points_every_url_at_the_profiles_sentinels(tmp_path: Path) -> None:
    import subprocess
    import sys

    from hotparams.urls import parse_topology
    from workers import redis_users

    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "compose-env"),
            "--sentinel",
            "--dir",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    for name in ("admin.env", "web.env", "worker.env"):
        env = dict(line.split("=", 1) for line in (tmp_path / name).read_text().splitlines())
        topology = parse_topology(env["HOTPARAMS_URL"])
        assert topology.nodes == tuple((host, 26379) for host in SENTINELS)
        assert topology.service == redis_users.SERVICE
        assert topology.username and topology.password
    redis_env = (tmp_path / "redis.env").read_text()
    assert "HOTPARAMS_REPLICA_PASSWORD=" in redis_env
    assert "HOTPARAMS_SENTINEL_PASSWORD=" in redis_env


def test_the_generated_users_and_configurations_make_a_working_sentinel_deployment(
    tmp_path: Path,
) -> None:
    """On real processes: the master and the replica run on the ACL file and
    node.conf of workers.redis_users (the replica authenticates as
    hotparams-replica), a sentinel on its sentinel.conf (as
    hotparams-sentinel), and a worker follows through redis+sentinel://."""
    import subprocess
    import sys
    import time

    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    import hotparams
    from hotparams.server import LocalRedis, free_port
    from workers import redis_users
    from workers.params import ChatParams

    from .sentinel import NODE_ARGS

    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compose-env"), "--dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    env = {
        name: dict(line.split("=", 1) for line in (tmp_path / name).read_text().splitlines())
        for name in ENV_FILES
    }
    secrets_env = env["redis.env"]
    (tmp_path / "users.acl").write_text(redis_users.acl_file(["chat"], secrets_env))
    (tmp_path / "node.conf").write_text(redis_users.node_conf(secrets_env))
    node = [
        "--include",
        str(tmp_path / "node.conf"),
        "--aclfile",
        str(tmp_path / "users.acl"),
        *NODE_ARGS,
    ]
    viewer = {
        "username": "ops-viewer",
        "password": secrets_env["HOTPARAMS_VIEWER_PASSWORD"],
        "retry": Retry(NoBackoff(), 0),  # the probes poll: no backoff of redis-py's own
    }
    master = LocalRedis(extra=node)
    master.client = lambda **kw: redis.Redis(port=master.port, **{**viewer, **kw})  # type: ignore[method-assign]
    replica = LocalRedis(extra=node)
    replica.client = lambda **kw: redis.Redis(port=replica.port, **{**viewer, **kw})  # type: ignore[method-assign]
    sport = free_port()
    sentinel: subprocess.Popen[bytes] | None = None
    try:
        master.start()
        replica.extra += ["--replicaof", "127.0.0.1", str(master.port)]
        replica.start()
        as_sentinel = redis.Redis(  # the user Sentinel runs INFO as
            port=master.port,
            username=redis_users.SENTINEL[0],
            password=secrets_env["HOTPARAMS_SENTINEL_PASSWORD"],
        )
        deadline = time.monotonic() + 10
        while as_sentinel.info("replication")["connected_slaves"] < 1:
            assert time.monotonic() < deadline, "the replica did not authenticate"
            time.sleep(0.05)
        as_sentinel.close()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            f"port {sport}\nbind 127.0.0.1\ndir {tmp_path}\n"
            + redis_users.sentinel_conf(secrets_env, "127.0.0.1", master.port, quorum=1)
        )
        sentinel = subprocess.Popen(
            [master.binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL
        )
        watcher = redis.Redis(port=sport, retry=Retry(NoBackoff(), 0))  # polled below
        while True:  # its first INFO of the master names the replica
            try:
                state = watcher.sentinel_master(redis_users.SERVICE)
                if int(state["num-slaves"]) >= 1 and "disconnected" not in state["flags"]:
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the sentinel did not see the master and replica"
            time.sleep(0.05)
        assert "s_down" not in state["flags"], state["flags"]
        watcher.close()

        def url(service: str) -> str:
            user = env[service]["HOTPARAMS_URL"].split("://")[1].split("@")[0]
            return f"redis+sentinel://{user}@127.0.0.1:{sport}/{redis_users.SERVICE}/0"

        keys = [env["admin.env"]["HOTPARAMS_SECRET_KEYS"]]
        with hotparams.connect(url("admin.env"), secret_keys=keys) as admin:
            admin.install()
            admin.register("chat", ChatParams)
        with hotparams.connect(url("worker.env"), secret_keys=keys) as worker:
            live = worker.watch("chat", ChatParams)
            assert live.current.version == 1
            live.close()
    finally:
        if sentinel is not None:
            sentinel.kill()
            sentinel.wait()
        replica.close()
        master.close()

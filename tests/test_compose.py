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
        env = svc["environment"]
        assert env["HOTPARAMS_URL"].startswith("redis://redis:"), name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert found["chat-worker"]["deploy"]["replicas"] >= 2
    for name, svc in found.items():
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

"""The command line's conventions: ``--version``, ``python -m hotparams``,
shell completion, global options before or after the verb, ``--json``
errors, and the imports a ``get`` pays for."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import hotparams
from tests.helpers import wait_until
from tests.models import ChatParams
from tests.test_cli import HOTPARAMS, ROOT, run_cli

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
def chat(redis_url: str) -> Iterator[hotparams.Bus]:
    b = hotparams.connect(redis_url)
    b.register("chat", ChatParams, author="setup")
    yield b
    b.close()


def test_version_is_the_installed_distribution_version(redis_url: str) -> None:
    r = run_cli(redis_url, "--version")
    assert (r.code, r.err) == (0, "")
    assert r.out == f"hotparams {importlib.metadata.version('hotparams')}\n"
    assert importlib.metadata.version("hotparams") == hotparams.__version__


def test_python_dash_m_hotparams_is_the_cli(redis_url: str, chat: hotparams.Bus) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hotparams", "--url", redis_url, "get", "chat", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["values"]["model"] == ChatParams().model


def test_url_is_accepted_before_or_after_the_verb(redis_url: str, chat: hotparams.Bus) -> None:
    # HOTPARAMS_URL points nowhere: only the --url given on the line can work
    before = run_cli(UNREACHABLE, "--url", redis_url, "get", "chat", "--json")
    after = run_cli(UNREACHABLE, "get", "chat", "--json", "--url", redis_url)
    equals = run_cli(UNREACHABLE, "get", f"--url={redis_url}", "chat", "--json")
    grouped = run_cli(UNREACHABLE, "variant", "list", "chat", "--url", redis_url, "--json")
    for r in (before, after, equals, grouped):
        assert r.code == 0, r.err
    assert json.loads(before.out) == json.loads(after.out) == json.loads(equals.out)
    assert json.loads(before.out)["version"] == 1
    assert run_cli(redis_url, "get", "chat", "--url", UNREACHABLE).code == 5


def test_json_is_accepted_before_or_after_the_verb(redis_url: str, chat: hotparams.Bus) -> None:
    before = run_cli(redis_url, "--json", "get", "chat")
    after = run_cli(redis_url, "get", "chat", "--json")
    assert before.code == after.code == 0
    assert json.loads(before.out)["values"] == json.loads(after.out)["values"]
    nested = run_cli(redis_url, "--json", "history", "chat", "--limit", "1")
    assert json.loads(nested.out)[0]["version"] == 1


@pytest.mark.parametrize(
    ("argv", "code", "name", "text"),
    [
        (["--json", "get", "nope"], 6, "not_found", "namespace 'nope' does not exist"),
        (["get", "nope", "--json"], 6, "not_found", "namespace 'nope' does not exist"),
        (["set", "chat", "temperature=5", "--json"], 3, "invalid_value", "must be <= 2 (got 5)"),
        (["get", "chat", "--bogus", "--json"], 2, "usage", "No such option: --bogus"),
        (
            ["--json", "set", "chat", "max_tokens=9", "--expect-version", "7"],
            4,
            "version_conflict",
            "expected version 7, current is 1",
        ),
        (["--json", "--url", UNREACHABLE, "get", "chat"], 5, "unreachable", "Redis unreachable"),
    ],
    ids=["not-found-before", "not-found-after", "invalid", "usage", "conflict", "unreachable"],
)
def test_json_errors_are_one_json_line_on_stderr_with_the_exit_code_and_its_name(
    redis_url: str, chat: hotparams.Bus, argv: list[str], code: int, name: str, text: str
) -> None:
    r = run_cli(redis_url, *argv)
    assert (r.code, r.out) == (code, "")
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    error = json.loads(lines[0])["error"]
    assert (error["code"], error["name"]) == (code, name)
    assert text in error["message"]


def test_errors_without_json_stay_one_plain_line(redis_url: str) -> None:
    r = run_cli(redis_url, "get", "nope")
    assert r.code == 6
    assert r.err.startswith("hotparams: error: namespace 'nope'") and r.err.count("\n") == 1


#: a line only the completion script of that shell has
SCRIPT_OF = {
    "bash": "complete -o default -F _hotparams_completion hotparams",
    "zsh": "#compdef hotparams",
    "fish": "complete --command hotparams --no-files",
}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_for_each_shell(redis_url: str, shell: str) -> None:
    r = run_cli(redis_url, "--show-completion", shell)
    assert (r.code, r.err) == (0, ""), r.err
    assert "_HOTPARAMS_COMPLETE" in r.out
    assert [s for s, line in SCRIPT_OF.items() if line in r.out] == [shell]


def test_completion_script_is_the_shell_named_wherever_the_cli_runs(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script is the one of the shell named, not of the shell the
    process runs under: typer's flag asked shellingham (the process's
    ancestors in /proc), printed bash's script for ``--show-completion
    fish`` under bash and failed with ``Shell  not supported.`` in a process
    with no shell among its ancestors (a service, cron, a CI runner)."""
    import shellingham

    def no_shell(*_args: object, **_kwargs: object) -> tuple[str, str]:
        raise shellingham.ShellDetectionFailure()

    monkeypatch.setattr(shellingham, "detect_shell", no_shell)
    for shell, line in SCRIPT_OF.items():
        r = run_cli(redis_url, "--show-completion", shell)
        assert (r.code, r.err) == (0, ""), r.err
        assert line in r.out and "_HOTPARAMS_COMPLETE" in r.out


def test_completion_scripts_stay_right_across_calls_of_one_process(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sequence of a test worker, in one process with no shell to
    detect: a completion request, other verbs, then each shell's script,
    twice, in both orders; every call prints the script of its shell."""
    import shellingham

    def no_shell(*_args: object, **_kwargs: object) -> tuple[str, str]:
        raise shellingham.ShellDetectionFailure()

    monkeypatch.setattr(shellingham, "detect_shell", no_shell)
    verbs = run_cli(
        redis_url, _HOTPARAMS_COMPLETE="complete_bash", COMP_WORDS="hotparams ro", COMP_CWORD="1"
    )
    assert verbs.out.split() == ["rollback"]
    assert run_cli(redis_url, "--version").code == 0
    assert run_cli(redis_url, "get", "nope").code == 6
    for shell in [*SCRIPT_OF, *reversed(SCRIPT_OF)]:
        r = run_cli(redis_url, "--show-completion", shell)
        assert (r.code, r.err) == (0, ""), r.err
        assert [s for s, line in SCRIPT_OF.items() if line in r.out] == [shell]


#: the console script run by a process whose parent exits first: its only
#: ancestors are then init (or a subreaper), no shell, as under a service
#: manager or a test run started in the background (``(pytest ... &)``)
ORPHAN = """
import json, os, subprocess, sys
if os.fork():
    os._exit(0)
runs = {}
for shell in sys.argv[3:]:
    argv = [sys.argv[1], "--show-completion", shell]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    runs[shell] = [r.returncode, r.stdout, r.stderr]
with open(sys.argv[2] + ".tmp", "w") as f:
    json.dump(runs, f)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
"""


def test_completion_script_from_a_process_without_a_shell_ancestor(tmp_path: Path) -> None:
    """The real case behind ``Shell  not supported.``: no mock, the console
    script with no shell among its ancestors (typer's flag failed there)."""
    out = tmp_path / "runs.json"
    subprocess.run(
        [sys.executable, "-c", ORPHAN, HOTPARAMS, str(out), *SCRIPT_OF], check=True, timeout=30
    )
    assert wait_until(out.exists, timeout=30)
    runs = json.loads(out.read_text())
    for shell, line in SCRIPT_OF.items():
        code, stdout, stderr = runs[shell]
        assert (code, stderr) == (0, ""), (shell, stderr)
        assert line in stdout


def test_completion_script_needs_a_shell_it_knows(redis_url: str) -> None:
    missing = run_cli(redis_url, "--show-completion")
    assert missing.code == 2 and "'--show-completion' requires an argument" in missing.err
    unknown = run_cli(redis_url, "--show-completion", "tcsh")
    assert unknown.code == 2 and "'tcsh' is not a shell hotparams completes" in unknown.err
    assert "bash, zsh, fish" in unknown.err and unknown.out == ""


def test_completion_completes_verbs_and_their_options(redis_url: str) -> None:
    verbs = run_cli(
        redis_url, _HOTPARAMS_COMPLETE="complete_bash", COMP_WORDS="hotparams ro", COMP_CWORD="1"
    )
    assert verbs.out.split() == ["rollback"]
    options = run_cli(
        redis_url,
        _HOTPARAMS_COMPLETE="complete_bash",
        COMP_WORDS="hotparams get chat --j",
        COMP_CWORD="3",
    )
    assert options.out.split() == ["--json"]


#: modules a ``hotparams get`` must not import (they belong to other verbs or to workers)
NOT_FOR_GET = (
    "flask",
    "prometheus_client",
    "hotparams.live",
    "hotparams.aio",
    "hotparams.metrics",
    "hotparams.demo",
    "hotparams.cli.demo",
    "hotparams.cli.watch",
    "hotparams.cli.variant",
    "hotparams.handle",  # the live handles' shared part
    "hotparams.lkg",  # the cache files: ``restore`` only
    "rich.live",
)


def test_get_imports_only_what_it_needs(redis_url: str, chat: hotparams.Bus) -> None:
    code = (
        "import sys\n"
        "from hotparams.cli import run\n"
        f"assert run(['--url', {redis_url!r}, 'get', 'chat']) == 0\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.splitlines()[-1].split())
    assert not loaded & set(NOT_FOR_GET), sorted(loaded & set(NOT_FOR_GET))

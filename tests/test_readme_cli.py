"""Every ``console`` example of the docs' "Command line" and "Quick edits
with redis-cli" pages (docs/cli.md, docs/redis-cli.md) is run, in order, and
its output compared.

How a block is run: each ``$ `` line is one ``bash -c`` command in the
repository root, with stdout and stderr merged (a plain ``hotparams ...``
command, with no pipe, redirection or variable, runs what the console script
runs in this process, which saves a Python start-up and the imports a step), against an empty
redis-server (``HOTPARAMS_URL`` points at it; ``redis-cli`` is a wrapper that
adds ``-p <port> --no-raw``, so its output is what a person sees at a
terminal); a ``<!-- docs-test: COMMAND -->`` comment of a page is a step
the reader does not see, run where it stands: there ``fake-worker``
(:data:`FAKE_WORKER`) writes the report a Live handle sends (``hp_report``),
so ``status`` and ``--wait`` have a fleet to show; the OS user is ``ana``;
the terminal is 100 columns wide.  The lines after a command, up to the
next ``$ ``, are its expected output.

How outputs are compared: both sides are normalised the same way, so the
docs can show real output: local times and ISO times become ``<time>``,
13-digit epoch milliseconds ``<ms>``, 16-hex-digit history epochs
``<epoch>``, the host in ``cli:<host>`` sources ``<host>``, ages (``3 s
ago``) ``<age>``; runs of spaces
(table padding) become one space, runs of ``─`` one ``─``, trailing spaces
and trailing empty lines go.

To refresh the examples after a deliberate change of output, run
``.venv/bin/python -m tests.test_readme_cli``: it prints each command with
its actual output, ready to paste.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotparams.server import LocalRedis

from .conftest import need
from .helpers import run_in_process

ROOT = Path(__file__).resolve().parent.parent
PAGES = (ROOT / "docs" / "cli.md", ROOT / "docs" / "redis-cli.md")
REDIS_CLI = "/usr/bin/redis-cli"

_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?"), "<time>"),
    (re.compile(r"\b\d{13}\b"), "<ms>"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "<epoch>"),
    (re.compile(r"\bcli:[A-Za-z0-9_.-]+"), "cli:<host>"),
    (re.compile(r"\b\d+ (s|min|h) ago\b"), "<age>"),
]

#: ``fake-worker NS ID [--behind N] [--lag MS] [--disconnected] [--error TEXT]``:
#: the report a Live handle of NS sends after applying the current version
#: (or N versions before it), valid for a minute
FAKE_WORKER = """\
import argparse, os, time
import hotparams
from hotparams.fleet import WorkerReport, report_op

parser = argparse.ArgumentParser(prog="fake-worker")
parser.add_argument("namespace")
parser.add_argument("id")
parser.add_argument("--behind", type=int, default=0)
parser.add_argument("--lag", type=float, default=1.0)
parser.add_argument("--disconnected", action="store_true")
parser.add_argument("--error", default="")
args = parser.parse_args()
with hotparams.connect(os.environ["HOTPARAMS_URL"]) as bus:
    head = bus.head(args.namespace)
    host, _, pid = args.id.partition(":")
    now = int(time.time() * 1000)
    report = WorkerReport(
        id=args.id, namespace=args.namespace, version=head.version - args.behind,
        epoch=head.epoch, host=host, pid=int(pid or 0), connected=not args.disconnected,
        applied_ms=now, lag_ms=args.lag, confirmed_ms=now, last_error=args.error,
    )
    bus.run(report_op(args.namespace, report, 60))
"""


@dataclass
class Example:
    section: str
    command: str
    expected: list[str]
    #: a step of the docs test the reader does not see (its output is not shown)
    hidden: bool = False


def examples(pages: tuple[Path, ...] = PAGES) -> list[Example]:
    """The commands of the pages' console blocks and their hidden steps, in order."""
    out: list[Example] = []
    for page in pages:
        title = page.name
        found = re.findall(
            r"^<!-- docs-test: (.*?) -->$|^```console\n(.*?)^```",
            page.read_text(encoding="utf-8"),
            re.S | re.M,
        )
        assert any(block for _, block in found), f"{title} has no console example"
        for step, block in found:
            if step:
                out.append(Example(title, step, [], hidden=True))
                continue
            for line in block.splitlines():
                if line.startswith("$ "):
                    out.append(Example(title, line[2:], []))
                else:
                    assert out and out[-1].section == title, f"output before a command: {line}"
                    out[-1].expected.append(line)
    return out


def normalise(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        for pattern, replacement in _VOLATILE:
            line = pattern.sub(replacement, line)
        line = re.sub(r"─+", "─", re.sub(r" +", " ", line)).rstrip()
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


class Shell:
    """Runs the docs' commands against one redis-server."""

    def __init__(self, server: LocalRedis, bin_dir: Path) -> None:
        wrapper = bin_dir / "redis-cli"
        wrapper.write_text(f'#!/bin/sh\nexec {REDIS_CLI} -p {server.port} --no-raw "$@"\n')
        wrapper.chmod(0o755)
        fake_worker = bin_dir / "fake-worker"
        fake_worker.write_text(f"#!{sys.executable}\n{FAKE_WORKER}")
        fake_worker.chmod(0o755)
        self.env = {
            **os.environ,
            "HOTPARAMS_URL": server.url,
            "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), "/usr/bin"]),
            "COLUMNS": "100",
            "LOGNAME": "ana",
            "USER": "ana",
            "NO_COLOR": "1",
        }
        self.env.pop("FORCE_COLOR", None)

    def run(self, command: str) -> list[str]:
        plain, or_exit, rest = command.partition(_OR_EXIT)
        argv = _hotparams_argv(plain) if not rest else None
        if argv is not None:  # what the console script runs, in this process
            code, out, _ = run_in_process(argv, env=self.env, cwd=ROOT, merged=True)
            lines = out.splitlines()
            return [*lines, f"exit {code}"] if code and or_exit else lines
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=30,
        )
        return proc.stdout.splitlines()


#: ``CMD || echo "exit $?"``: the docs show a failing command's exit code
_OR_EXIT = ' || echo "exit $?"'


def _hotparams_argv(command: str) -> list[str] | None:
    """The arguments of a plain ``hotparams ...`` command (no pipe, redirection,
    variable or second command), which runs in this process; None: bash runs it."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    if not words or words[0] != "hotparams" or "$" in command or "`" in command:
        return None
    if any(word and all(c in lexer.punctuation_chars for c in word) for word in words):
        return None
    return words[1:]


@pytest.mark.slow
@pytest.mark.timeout(300)  # a redis-cli or fake-worker process a step, one after another
def test_readme_cli_and_redis_cli_examples_print_what_they_show(
    redis_url: str, redis_server: LocalRedis, tmp_path: Path
) -> None:
    need(Path(REDIS_CLI).exists(), "redis-cli (redis-tools)")
    shell = Shell(redis_server, tmp_path)
    found = examples()
    assert len(found) >= 10
    for example in found:
        actual = shell.run(example.command)
        assert normalise(actual) == normalise(example.expected), (
            f"docs/{example.section}: $ {example.command}\n" + "\n".join(actual)
        )


def main() -> None:
    """Print each docs command with its actual output (to refresh the pages)."""
    with LocalRedis() as server:
        bin_dir = Path(server.dir) / "bin"
        bin_dir.mkdir()
        shell = Shell(server, bin_dir)
        for example in examples():
            print(f"{'<!-- docs-test: ' if example.hidden else '$ '}{example.command}")
            for line in shell.run(example.command):
                print(line.rstrip())


if __name__ == "__main__":
    main()

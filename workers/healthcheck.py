"""Container healthchecks (python:3.11-slim has no curl).

::

    python -m workers.healthcheck http://127.0.0.1:8000/healthz    # the web app answers 200
    python -m workers.healthcheck --file /tmp/chat-worker.alive   # the worker's heartbeat is fresh
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.healthcheck")
    parser.add_argument("url", nargs="?", help="an URL that must answer 200")
    parser.add_argument("--file", type=Path, help="a heartbeat file that must be fresh")
    parser.add_argument("--max-age", type=float, default=30.0, help="seconds (--file)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (url)")
    args = parser.parse_args(argv)
    if (args.url is None) == (args.file is None):
        parser.error("give either an URL or --file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.file is not None:
        try:
            age = time.time() - args.file.stat().st_mtime
        except OSError as exc:
            print(f"unhealthy: {exc}", file=sys.stderr)
            return 1
        if age > args.max_age:
            print(f"unhealthy: {args.file} is {age:.0f} s old", file=sys.stderr)
            return 1
        return 0
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

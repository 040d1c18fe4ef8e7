"""The one entry point: ``python -m scripts.bench [--quick] [--only SECTIONS]``.

A full run of every section writes ``scripts/bench/results/full.json`` and
renders ``BENCHMARKS.md`` at the repository root from it; a ``--quick`` run
or one with ``--only`` writes ``scripts/bench/results/last.json`` and
``last.md`` (not committed) unless ``--out``/``--markdown`` say otherwise.
``--render FILE.json`` renders the markdown of an earlier run again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from hotparams.server import LocalRedis

from . import peers, propagation, reads, report, scale, startup, suite, writes
from .common import ROOT, loadavg, machine, redis_version

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("read", "propagation", "scale", "write", "startup", "suite")
#: sections a --quick run leaves out unless --only names them (the suite takes ~2 min)
FULL_ONLY = ("suite",)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description="hotparams benchmarks, side by side with the alternatives (see BENCHMARKS.md)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and updates (~2 min)")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated sections of {', '.join(SECTIONS)} (default: all; "
        f"--quick leaves out {', '.join(FULL_ONLY)})",
    )
    parser.add_argument(
        "--workers", default="1,16,64", help="fleet sizes of the propagation section"
    )
    parser.add_argument("--pollers", type=int, default=16, help="polling processes per interval")
    parser.add_argument(
        "--handles", type=int, default=1000, help="AsyncLive handles of the scale section"
    )
    parser.add_argument(
        "--processes", type=int, default=4, help="processes the handles are spread over"
    )
    parser.add_argument("--out", type=Path, help="the JSON result file")
    parser.add_argument("--markdown", type=Path, help="the rendered tables")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only render an earlier result file"
    )
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    if not args.sections:
        args.sections = [s for s in SECTIONS if not (args.quick and s in FULL_ONLY)]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def section_runner(name: str, args: argparse.Namespace) -> Callable[[str], dict[str, Any]]:
    quick = args.quick
    if name == "read":
        return lambda url: reads.run(url, quick=quick)
    if name == "propagation":
        return lambda url: propagation.run(
            url, quick=quick, workers=_ints(args.workers), pollers=args.pollers
        )
    if name == "scale":
        return lambda url: scale.run(
            url, quick=quick, handles=args.handles, processes=args.processes
        )
    if name == "startup":
        return lambda url: startup.run(url, quick=quick)
    if name == "suite":
        return lambda url: suite.run(url, quick=quick)
    return lambda url: writes.run(url, quick=quick)


def metadata(command: str, mode: str) -> dict[str, Any]:
    """The run's facts: machine, versions, command, date, load (``redis`` added per section)."""
    return {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "machine": machine(),
        "constance": peers.available(),
        "loadavg_start": loadavg(),
        "loadavg_end": [],
        "total_seconds": 0.0,
        "section_seconds": {},
    }


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse(raw)
    full = not args.quick and list(args.sections) == list(SECTIONS)
    out = args.out or RESULTS / ("full.json" if full else "last.json")
    md = args.markdown or (ROOT / "BENCHMARKS.md" if full else RESULTS / "last.md")
    if args.render:
        results = json.loads(args.render.read_text())
        md.write_text(report.markdown(results))
        print(f"rendered {args.render} -> {md}")
        return
    command = " ".join(["python -m scripts.bench", *raw])
    meta = metadata(command, "quick" if args.quick else "full")
    results: dict[str, Any] = {"meta": meta}
    started = time.perf_counter()
    for name in SECTIONS:
        if name not in args.sections:
            continue
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        with LocalRedis() as server:
            client = redis.Redis.from_url(server.url)
            meta["redis"] = redis_version(client)
            client.close()
            results[name] = section_runner(name, args)(server.url)
        meta["section_seconds"][name] = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name} done in {meta['section_seconds'][name]} s", flush=True)
    meta["total_seconds"] = round(time.perf_counter() - started, 1)
    meta["loadavg_end"] = loadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    md.write_text(report.markdown(results))
    print(report.summary(results))
    print(f"\n[bench] {meta['total_seconds']} s; results in {out}, tables in {md}")


if __name__ == "__main__":
    main()

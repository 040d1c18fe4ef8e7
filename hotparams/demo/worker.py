"""An LLM chat worker: one member of the fleet, reading its parameters live
(what ``hotparams demo`` runs; the example fleet's ``workers/chat_worker.py``
runs it too).

::

    HOTPARAMS_URL=redis://127.0.0.1:6379/0 python -m hotparams.demo.worker --name chat-1

It registers the ``chat`` schema (idempotent), holds a :class:`hotparams.Live`
handle, and serves simulated chat requests in a loop: each request takes ONE
snapshot for its user (``live.for_user``: the base, or the user's A/B
variant) and uses it throughout.  Its LLM client is built from the
connection fields only and rebuilt by a filtered change callback when one
of them changes; a model or temperature change goes with the next request.
Every line it logs is one event (``--log json``: one JSON object per line,
what ``hotparams demo`` reads).  SIGTERM or SIGINT stops it cleanly: the
request in flight finishes, the handle is closed, exit status 0.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import hotparams
from hotparams import Live, Snapshot

from .llm import Completion, Connection, LLMClient, Message, connection_of
from .params import CONNECTION_FIELDS, NAMESPACE, ChatParams, in_quiet_hours

__all__ = ["ChatRequest", "ChatWorker", "main"]

log = logging.getLogger("workers.chat")

PROMPTS = (
    "What is a good name for a cat?",
    "Summarise the plot of Hamlet in one line.",
    "How do I reverse a list in Python?",
    "Write a haiku about Redis.",
    "Is it going to rain tomorrow?",
    "Translate 'good morning' into French.",
)
#: clients built for A/B variants that override a connection field
POOL_SIZE = 4


@dataclass(frozen=True, slots=True)
class ChatRequest:
    user: str
    text: str


def emit(event: str, **fields: Any) -> None:
    """One log line: an event name and its fields (never a secret)."""
    log.info(event, extra={"chat_event": event, "chat_fields": fields})


class ChatWorker:
    """Serves chat requests with the parameters a :class:`Live` handle keeps current."""

    def __init__(self, live: Live[ChatParams], *, latency_s: float = 0.02) -> None:
        self.live = live
        self.latency_s = latency_s
        self.requests = 0
        self.rebuilds = 0
        self._histories: dict[str, collections.deque[Message]] = {}
        self._pool: dict[Connection, LLMClient] = {}
        self._lock = threading.Lock()
        self.client = LLMClient(connection_of(live.current.params), latency_s=latency_s)
        live.on_change(self._rebuild_client, fields=CONNECTION_FIELDS)
        live.on_change(self._applied)
        # a change that landed before the callbacks were registered
        self._rebuild_client(live.current, live.current)

    # ------------------------------------------------------------ callbacks

    def _rebuild_client(self, old: Snapshot[ChatParams], new: Snapshot[ChatParams]) -> None:
        """Filtered to the connection fields: only they need a new client."""
        conn = connection_of(new.params)
        with self._lock:
            if conn == self.client.connection:
                return
            pooled = self._pool.pop(conn, None)
            self.client = pooled or LLMClient(conn, latency_s=self.latency_s)
            self.rebuilds += 1
        changed = sorted(f for f in CONNECTION_FIELDS if old.values.get(f) != new.values.get(f))
        emit(
            "client_rebuilt",
            version=new.version,
            client=self.client.id,
            changed=changed,
            api_base=conn.api_base,
            request_timeout=conn.request_timeout,
            retries=conn.retries,
        )

    def _applied(self, old: Snapshot[ChatParams], new: Snapshot[ChatParams]) -> None:
        changed = sorted(
            name
            for name in set(old.values) | set(new.values)
            if old.values.get(name) != new.values.get(name)
        )
        if old.variants != new.variants:
            changed.append("(variants)")
        emit(
            "applied",
            version=new.version,
            previous=old.version,
            lag_ms=round(time.time() * 1000 - new.committed_ms, 2),
            changed=changed,
            model=new.params.model,
            temperature=new.params.temperature,
            variants=sorted(new.variants.variants),
            client=self.client.id,
        )

    # ------------------------------------------------------------ requests

    def client_for(self, params: ChatParams) -> LLMClient:
        """The base client, or one built for a variant's own connection fields."""
        conn = connection_of(params)
        with self._lock:
            client = self.client
            if conn == client.connection:
                return client
            client = self._pool.get(conn) or LLMClient(conn, latency_s=self.latency_s)
            self._pool[conn] = client
            while len(self._pool) > POOL_SIZE:
                self._pool.pop(next(iter(self._pool)))
            return client

    def handle(self, request: ChatRequest) -> tuple[Snapshot[ChatParams], Completion]:
        """Answer one request with one snapshot, held from start to end."""
        snap = self.live.for_user(request.user)
        p = snap.params
        history = self._histories.setdefault(request.user, collections.deque(maxlen=100))
        turns = list(history)[-p.history_length :] if p.history_length else []
        messages = [Message("system", p.system_prompt), *turns, Message("user", request.text)]
        quiet = in_quiet_hours(p, datetime.now(UTC).hour)
        max_tokens = min(p.max_tokens, p.quiet_max_tokens) if quiet else p.max_tokens
        client = self.client_for(p)
        reply = client.complete(
            messages, model=p.model, temperature=p.temperature, top_p=p.top_p, max_tokens=max_tokens
        )
        history.extend([Message("user", request.text), Message("assistant", reply.text)])
        self.requests += 1
        emit(
            "request",
            user=request.user,
            version=snap.version,
            variant=snap.variant,
            model=p.model,
            temperature=p.temperature,
            max_tokens=max_tokens,
            quiet=quiet,
            history=len(turns),
            tokens=reply.completion_tokens,
            latency_ms=round(reply.latency_ms, 1),
            client=client.id,
        )
        return snap, reply

    def run(self, stop: threading.Event, *, interval: float, users: int = 200) -> None:
        """Serve simulated requests until ``stop`` is set."""
        rng = random.Random()
        while not stop.is_set():
            request = ChatRequest(f"user-{rng.randrange(users):03d}", rng.choice(PROMPTS))
            try:
                self.handle(request)
            except TimeoutError as exc:
                emit("request_failed", user=request.user, error=str(exc))
            stop.wait(interval)


# ---------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``worker``, ``event`` and its fields."""

    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "chat_fields", None)
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "worker": self.worker,
            "pid": record.process,
        }
        if fields is not None:
            doc["event"] = getattr(record, "chat_event", "log")
            doc.update(fields)
        else:  # a library's record (hotparams.live ...)
            doc["event"] = "log"
            doc.update(level=record.levelname, logger=record.name, message=record.getMessage())
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """``time worker event key=value ...`` for a person reading the logs."""

    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = getattr(record, "chat_fields", None)
        if fields is None:
            return f"{stamp} {self.worker} {record.levelname} {record.name}: {record.getMessage()}"
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{stamp} {self.worker} {record.getMessage()} {pairs}"


def setup_logging(kind: str, worker: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(worker) if kind == "json" else TextFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hotparams.demo.worker", description=__doc__)
    env = os.environ.get
    parser.add_argument("--url", default=env("HOTPARAMS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--namespace", default=env("HOTPARAMS_NAMESPACE", NAMESPACE))
    parser.add_argument("--name", default=env("WORKER_NAME", socket.gethostname()))
    parser.add_argument(
        "--interval", type=float, default=float(env("CHAT_INTERVAL", "0.5")), help="seconds"
    )
    parser.add_argument("--latency", type=float, default=0.02, help="simulated LLM seconds")
    parser.add_argument("--log", choices=("text", "json"), default=env("LOG_FORMAT", "text"))
    parser.add_argument("--heartbeat", type=Path, default=env("CHAT_HEARTBEAT") or None)
    parser.add_argument(
        "--no-register", action="store_true", help="do not register the schema at start"
    )
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the parent process exits"
    )
    parser.add_argument("--reconcile", type=float, default=None, help="reconcile interval, s")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log, args.name)
    parent = os.getppid()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        emit("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    bus = hotparams.connect(args.url)
    try:
        if not args.no_register:
            bus.register(args.namespace, ChatParams, author=args.name, source="chat_worker")
        live = bus.watch(
            args.namespace, ChatParams, reconcile_interval=args.reconcile, worker_name=args.name
        )
    except hotparams.HotParamsError as exc:
        emit("failed", error=str(exc))
        bus.close()
        return 1
    worker = ChatWorker(live, latency_s=args.latency)
    snap = live.current
    emit(
        "ready",
        namespace=args.namespace,
        version=snap.version,
        model=snap.params.model,
        temperature=snap.params.temperature,
        client=worker.client.id,
    )
    watchdog = threading.Thread(
        target=_watch, args=(stop, parent, args.exit_with_parent, args.heartbeat), daemon=True
    )
    watchdog.start()
    try:
        worker.run(stop, interval=args.interval)
    finally:
        live.close()
        bus.close()
        emit("stopped", requests=worker.requests, rebuilds=worker.rebuilds)
    return 0


def _watch(stop: threading.Event, parent: int, with_parent: bool, heartbeat: Path | None) -> None:
    """Touch the heartbeat file (the container healthcheck reads its age) and
    stop when the parent is gone (``--exit-with-parent``, as ``hotparams demo`` asks)."""
    last_beat = 0.0
    while not stop.wait(0.2):
        if heartbeat is not None and time.monotonic() - last_beat >= 1.0:
            heartbeat.touch()
            last_beat = time.monotonic()
        if with_parent and os.getppid() != parent:
            emit("stopping", reason="parent exited")
            stop.set()


if __name__ == "__main__":
    sys.exit(main())

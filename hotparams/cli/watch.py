"""``hotparams watch NS``: a live tail of a namespace's changes.

The pub/sub event only wakes the tail up; what it prints comes from the
audit stream (who, why, from where, old -> new, secrets masked), read from
the last version printed.  So a lost message, a reconnect or a gap prints
every change anyway, in version order, and a namespace recreated after a
loss (a new epoch) is announced and followed from its version 1.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from types import FrameType
from typing import Annotated

import redis
import typer
from redis.client import PubSub

from ..bus import Bus
from ..codec import loads
from ..errors import ConnectionFailed, NamespaceNotFound
from ..keys import keys_for
from ..snapshot import Change
from .commands import NamespaceArg
from .context import JsonOpt, State, state_of
from .render import change_block, print_json

__all__ = ["Backoff", "Tail", "watch"]

_LOST = (redis.ConnectionError, redis.TimeoutError, OSError, ConnectionFailed)


class Backoff:
    """Jittered exponential waits between reconnect attempts."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.next_wait = first

    def reset(self) -> None:
        self.next_wait = self.first

    def wait(self) -> float:
        delay = self.next_wait * random.uniform(0.8, 1.2)
        self.next_wait = min(self.cap, self.next_wait * 2)
        return delay


class Tail:
    """Prints every change of one namespace after ``version``, in order."""

    def __init__(
        self, state: State, namespace: str, *, json_out: bool, probe_every: float = 5.0
    ) -> None:
        self.state = state
        self.bus: Bus = state.bus()
        self.namespace = namespace
        self.channel = keys_for(namespace).channel
        self.json_out = json_out
        self.probe_every = probe_every
        self.version = 0
        self.epoch: str | None = None
        self.missing = False

    def note(self, message: str) -> None:
        self.state.err.print(f"[watch] {message}", markup=False)

    def start(self) -> None:
        head = self.bus.head(self.namespace)  # unknown namespace: exit 6 before tailing
        self.version, self.epoch = head.version, head.epoch
        self.note(f"{self.namespace} at version {head.version}; Ctrl-C to stop")

    def catch_up(self) -> None:
        """Print what the audit holds after the last printed version."""
        try:
            head = self.bus.head(self.namespace)
        except NamespaceNotFound:
            if not self.missing:
                self.note(f"{self.namespace} does not exist (any more); waiting for it")
            self.missing, self.version, self.epoch = True, 0, None
            return
        if head.epoch != self.epoch:
            if self.epoch is not None or self.missing:
                self.note(f"{self.namespace} has a new history (epoch {head.epoch})")
            self.version, self.epoch = 0, head.epoch
        self.missing = False
        if head.version <= self.version:
            return
        wanted = head.version - self.version
        entries = self.bus.history(self.namespace, limit=min(wanted + 10, 1000))
        for change in reversed(entries):
            if change.version > self.version:
                self.show(change)
                self.version = change.version

    def show(self, change: Change) -> None:
        if self.json_out:
            print_json(self.state.out, change.to_json(self.epoch), compact=True)
        else:
            self.state.out.print(change_block(change))

    def on_message(self, data: bytes | str) -> None:
        try:
            event = loads(data)
            version, epoch = int(event["v"]), str(event["epoch"])
        except (ValueError, KeyError, TypeError):
            version, epoch = self.version + 1, ""
        if epoch != self.epoch or version > self.version:
            self.catch_up()

    def listen(self, pubsub: PubSub) -> None:
        """Until the connection breaks (an exception) or Ctrl-C."""
        pubsub.subscribe(self.channel)
        self.catch_up()  # whatever happened while (re)subscribing
        last_probe = time.monotonic()
        while True:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message.get("type") == "message":
                self.on_message(message["data"])
                last_probe = time.monotonic()
            elif time.monotonic() - last_probe >= self.probe_every:
                self.catch_up()  # a lost message, or a frozen-then-thawed server
                last_probe = time.monotonic()

    def run(self) -> None:
        backoff = Backoff()
        while True:
            pubsub = self.bus.client.pubsub()  # type: ignore[no-untyped-call]
            try:
                self.listen(pubsub)
            except _LOST as exc:
                delay = backoff.wait()
                self.note(f"connection lost ({type(exc).__name__}); retrying in {delay:.1f}s")
                time.sleep(delay)
            else:  # pragma: no cover - listen() only returns by raising
                return
            finally:
                with contextlib.suppress(Exception):  # a dead connection may fail to close
                    pubsub.close()
            if self._reachable():
                backoff.reset()

    def _reachable(self) -> bool:
        try:
            self.bus.client.ping()
        except _LOST:
            return False
        return True


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def watch(
    ctx: typer.Context,
    namespace: NamespaceArg,
    json_out: JsonOpt = False,
    probe_every: Annotated[
        float,
        typer.Option("--probe-every", min=0.1, help="Seconds between checks for missed changes."),
    ] = 5.0,
) -> None:
    """Print each change of NS as it happens, until Ctrl-C (survives Redis restarts)."""
    state = state_of(ctx)
    tail = Tail(state, namespace, json_out=json_out, probe_every=probe_every)
    # SIGINT too: a shell starts background jobs with SIGINT ignored
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        tail.start()
        tail.run()
    except KeyboardInterrupt:
        tail.note("stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""TCP proxies to Redis that tests put between a client and its server.

``Forwarder`` holds what every proxy shares (the listener, one upstream
connection and two pump threads per client connection, close); the
subclasses decide what happens to the bytes.

``ReplyDropper(port, needle, every)`` forwards every byte both ways, except
that after the first of every ``every`` requests containing ``needle`` (e.g.
``b"hp_commit"``) was forwarded (up to ``limit`` times), the reply that comes back is thrown away
and the connection is closed: the command ran in Redis, the client only
sees its connection fail (a reply lost on the network, a proxy or a load
balancer that restarted).

``Partitioner(port)`` blackholes every connection while partitioned.

``Splitter(port, needle, pause)`` forwards every byte both ways, but a chunk
from Redis that holds ``needle`` goes out in two parts ``pause`` seconds
apart: a message split across TCP segments on a busy network or machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class Forwarder:
    """Accepts connections on a free loopback port and pumps each one to the
    upstream port; subclasses give ``_pumps`` (the two directions)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.closing = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _pumps(
        self, client: socket.socket, upstream: socket.socket
    ) -> list[tuple[Callable[..., None], tuple[object, ...]]]:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets += [client, upstream]
            for target, args in self._pumps(client, upstream):
                t = threading.Thread(target=target, args=args, daemon=True)
                self.threads.append(t)
                t.start()

    def close(self) -> None:
        self.closing.set()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self.threads:
            t.join(5)


class Partitioner(Forwarder):
    """Can blackhole its connections (a partition).

    During a partition every byte is dropped silently, on connections old
    and new; a connection that lost bytes stays silent for good (its stream
    is broken), and connections made after ``heal`` work.
    """

    def __init__(self, upstream: int) -> None:
        self.cut = threading.Event()
        super().__init__(upstream)

    def _pumps(
        self, client: socket.socket, upstream: socket.socket
    ) -> list[tuple[Callable[..., None], tuple[object, ...]]]:
        broken = [self.cut.is_set()]
        return [(self._pump, (client, upstream, broken)), (self._pump, (upstream, client, broken))]

    def _pump(self, src: socket.socket, dst: socket.socket, broken: list[bool]) -> None:
        try:
            while data := src.recv(65536):
                if broken[0] or self.cut.is_set():
                    broken[0] = True
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

    def partition(self) -> None:
        self.cut.set()

    def heal(self) -> None:
        self.cut.clear()


class ReplyDropper(Forwarder):
    def __init__(self, upstream: int, needle: bytes, every: int = 1, limit: int = 0) -> None:
        self.needle = needle
        self.every = every
        self.limit = limit  #: stop dropping after this many (0: never stop)
        self.seen = 0  #: requests containing the needle
        self.dropped = 0  #: replies thrown away
        self.enabled = True
        self._lock = threading.Lock()
        super().__init__(upstream)

    def _pumps(
        self, client: socket.socket, upstream: socket.socket
    ) -> list[tuple[Callable[..., None], tuple[object, ...]]]:
        drop = threading.Event()  # the next reply on this connection is lost
        return [
            (self._requests, (client, upstream, drop)),
            (self._replies, (upstream, client, drop)),
        ]

    def _requests(self, src: socket.socket, dst: socket.socket, drop: threading.Event) -> None:
        try:
            while data := src.recv(1 << 20):
                if self.enabled and self.needle in data:
                    with self._lock:
                        self.seen += 1
                        due = not self.limit or self.dropped < self.limit
                        if due and (self.seen - 1) % self.every == 0:
                            drop.set()  # before Redis can answer
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

    def _replies(self, src: socket.socket, dst: socket.socket, drop: threading.Event) -> None:
        try:
            while data := src.recv(1 << 20):
                if drop.is_set():
                    with self._lock:
                        self.dropped += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class Splitter(Forwarder):
    """Cuts each chunk from Redis holding ``needle`` in two, in the middle
    of the needle, and sends the second part ``pause`` seconds later."""

    def __init__(self, upstream: int, needle: bytes, pause: float) -> None:
        self.needle, self.pause = needle, pause
        self.splits = 0
        super().__init__(upstream)

    def _pumps(
        self, client: socket.socket, upstream: socket.socket
    ) -> list[tuple[Callable[..., None], tuple[object, ...]]]:
        return [(self._pump, (client, upstream, False)), (self._pump, (upstream, client, True))]

    def _pump(self, src: socket.socket, dst: socket.socket, split: bool) -> None:
        try:
            while data := src.recv(65536):
                at = data.find(self.needle) if split else -1
                if at < 0:
                    dst.sendall(data)
                    continue
                cut = at + len(self.needle) // 2
                dst.sendall(data[:cut])
                self.splits += 1
                self.closing.wait(self.pause)
                dst.sendall(data[cut:])
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

"""A TCP proxy to Redis that loses the replies of chosen commands.

``ReplyDropper(port, needle, every)`` forwards every byte both ways, except
that after the first of every ``every`` requests containing ``needle`` (e.g.
``b"hp_commit"``) was forwarded (up to ``limit`` times), the reply that comes back is thrown away
and the connection is closed: the command ran in Redis, the client only
sees its connection fail (a reply lost on the network, a proxy or a load
balancer that restarted).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class ReplyDropper:
    def __init__(self, upstream: int, needle: bytes, every: int = 1, limit: int = 0) -> None:
        self.upstream = upstream
        self.needle = needle
        self.every = every
        self.limit = limit  #: stop dropping after this many (0: never stop)
        self.seen = 0  #: requests containing the needle
        self.dropped = 0  #: replies thrown away
        self.enabled = True
        self._lock = threading.Lock()
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
            drop = threading.Event()  # the next reply on this connection is lost
            for target, args in (
                (self._requests, (client, upstream, drop)),
                (self._replies, (upstream, client, drop)),
            ):
                t = threading.Thread(target=target, args=args, daemon=True)
                self.threads.append(t)
                t.start()

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

    def close(self) -> None:
        self.closing.set()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self.threads:
            t.join(5)

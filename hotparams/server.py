"""A private ``redis-server`` on a free port: for tests, benchmarks and the demo.

The server keeps nothing on disk (no RDB, no AOF), so a restart loses every
key and every function, which is exactly the fault the tests provoke.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["LocalRedis", "ServerTls", "free_port", "redis_server_binary"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The files of a TLS-only server: its certificate and key, the CA it
    trusts for client certificates, and whether it requires one (mTLS)."""

    cert_file: str
    key_file: str
    ca_file: str
    auth_clients: bool = False
    #: the client's own certificate and key (for mTLS), used by client()/url
    client_cert: str = ""
    client_key: str = ""

    def args(self, port: int) -> list[str]:
        return [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            self.cert_file,
            "--tls-key-file",
            self.key_file,
            "--tls-ca-cert-file",
            self.ca_file,
            "--tls-auth-clients",
            "yes" if self.auth_clients else "no",
        ]

    def query(self) -> str:
        query = f"ssl_ca_certs={quote(self.ca_file)}"
        if self.client_cert:
            query += f"&ssl_certfile={quote(self.client_cert)}&ssl_keyfile={quote(self.client_key)}"
        return query


class _PortTaken(RuntimeError):
    """Internal: redis-server could not bind its port."""


class LocalRedis:
    """Start, stop, freeze and restart one redis-server process (with
    ``tls``, one that listens on TLS alone)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        extra: list[str] | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.binary = binary
        self._pick_port = port is None  # a port taken meanwhile: pick another
        self.port = port or free_port()
        self.extra = list(extra or [])
        self.dir = Path(tempfile.mkdtemp(prefix="hotparams-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.tls = tls

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?{self.tls.query()}"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        """A redis-py client of this server that does not retry: redis-py
        (6+) retries a refused or refused-auth connection ten times with an
        exponential backoff, seconds in all (the start-up probe below, or a
        test checking that a stopped server refuses); ``retry=`` overrides."""
        kwargs = {"retry": Retry(NoBackoff(), 0), **kwargs}
        if self.tls is not None:
            kwargs = {
                "ssl": True,
                "ssl_ca_certs": self.tls.ca_file,
                "ssl_certfile": self.tls.client_cert or None,
                "ssl_keyfile": self.tls.client_key or None,
                **kwargs,
            }
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]

    def start(self, timeout: float = 10.0) -> LocalRedis:
        if self.proc is not None and self.proc.poll() is None:
            return self
        for _ in range(4 if self._pick_port else 0):
            try:
                return self._start(timeout)
            except _PortTaken:  # another process bound the free port first
                self.port = free_port()
            finally:
                if self.proc is not None:  # a restart keeps its URL
                    self._pick_port = False
        return self._start(timeout)

    def _start(self, timeout: float) -> LocalRedis:
        listen = self.tls.args(self.port) if self.tls else ["--port", str(self.port)]
        args = [
            self.binary,
            *listen,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
            "--protected-mode",
            "no",
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        probe = self.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    log = self.dir / "redis.log"
                    text = f"{err} {log.read_text() if log.exists() else ''}"
                    self.proc = None
                    if "Address already in use" in text:
                        raise _PortTaken(self.port)
                    raise RuntimeError(f"redis-server exited at start: {err.strip()}")
                try:
                    # the server answering must be ours, not another one on that port
                    if probe.info("server").get("process_id") == self.proc.pid:
                        return self
                except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
                    return self  # it answers (an ACL file may switch the default user off)
                except redis.exceptions.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.frozen:
            self.thaw()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        """Kill and start again: every key and function is gone."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.proc is not None and self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.frozen = False

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

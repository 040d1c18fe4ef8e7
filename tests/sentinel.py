"""A Redis Sentinel deployment of real processes for tests: one master, its
replicas and three sentinels, on free ports of 127.0.0.1, in temp dirs.

The sentinels are told of each other and of the replicas in their
configuration files (``sentinel myid``, ``known-sentinel``,
``known-replica``), so the group is ready as soon as every process
answers, without the seconds of hello messages discovery takes.
``down_after_ms`` and ``failover_timeout_ms`` are small, so a killed master
is replaced within a few seconds.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hotparams.server import LocalRedis, ServerTls, free_port, redis_server_binary

__all__ = ["NODE_ARGS", "SERVICE", "SentinelGroup", "wait_replicated"]

SERVICE = "hpmaster"
#: every data node: a full sync starts at once (not after diskless-sync's 5 s)
NODE_ARGS = ("--repl-diskless-sync-delay", "0")


def replicated(master: LocalRedis, replicas: int) -> bool:
    """Whether ``replicas`` acknowledge the master's writes: after a diskless
    full sync a master streams writes to a replica only from its first ACK
    on (up to a second later), so a write must reach them all."""
    try:
        with master.client(socket_timeout=0.5) as client:
            client.set("hotparams-test:ready", "1")  # a write that replicates
            client.delete("hotparams-test:ready")
            return int(client.wait(replicas, 100)) >= replicas
    except (redis.RedisError, OSError):
        return False


def wait_replicated(master: LocalRedis, replicas: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not replicated(master, replicas):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{replicas} replicas did not catch up with the master")
        time.sleep(0.02)


class SentinelGroup:
    """Start, kill and inspect a master, its replicas and their sentinels."""

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 2000,
        tls: ServerTls | None = None,
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="hotparams-sentinel-"))
        self.tls = tls
        #: over TLS, replication (and Sentinel's links to the nodes) too
        self.node_args = [*NODE_ARGS, *(["--tls-replication", "yes"] if tls else [])]
        self.master = LocalRedis(extra=list(self.node_args), tls=tls)
        self.replicas: list[LocalRedis] = []
        self.replica_count = replicas
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_ids = [secrets.token_hex(20) for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    # ------------------------------------------------------------ start, stop

    def start(self, timeout: float = 10.0) -> SentinelGroup:
        self.master.start()
        for _ in range(self.replica_count):
            follow = ["--replicaof", "127.0.0.1", str(self.master.port)]
            replica = LocalRedis(extra=[*self.node_args, *follow], tls=self.tls)
            self.replicas.append(replica.start())
        for index, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(self._conf(index, port))
            log = self.dir / f"sentinel-{port}.log"
            self.sentinels.append(
                subprocess.Popen(
                    [self.binary, str(conf), "--sentinel", "--logfile", str(log)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinel group did not get ready; logs in {self.dir}")
            time.sleep(0.02)
        return self

    def _conf(self, index: int, port: int) -> str:
        listen = [f"port {port}"]
        if self.tls is not None:
            listen = [
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {self.tls.cert_file}",
                f"tls-key-file {self.tls.key_file}",
                f"tls-ca-cert-file {self.tls.ca_file}",
                "tls-auth-clients no",
                "tls-replication yes",
            ]
        lines = [
            *listen,
            "bind 127.0.0.1",
            "protected-mode no",
            f"dir {self.dir}",
            f"sentinel myid {self.sentinel_ids[index]}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} {self.quorum}",
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
            f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        lines += [f"sentinel known-replica {SERVICE} 127.0.0.1 {r.port}" for r in self.replicas]
        lines += [
            f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other} {self.sentinel_ids[i]}"
            for i, other in enumerate(self.sentinel_ports)
            if i != index
        ]
        return "\n".join(lines) + "\n"

    def _ready(self) -> bool:
        """Every sentinel knows the master, the replicas and the other
        sentinels, and the master streams its writes to every replica."""
        try:
            for port in self.sentinel_ports:
                with self.sentinel_client(port) as client:
                    info = client.sentinel_master(SERVICE)
                    if int(info["num-slaves"]) < len(self.replicas):
                        return False
                    if int(info["num-other-sentinels"]) < len(self.sentinel_ports) - 1:
                        return False
        except (redis.RedisError, OSError, KeyError):
            return False
        return replicated(self.master, len(self.replicas))

    def close(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        self.master.close()
        for replica in self.replicas:
            replica.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ addresses

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        if self.tls is not None:
            return f"rediss+sentinel://{hosts}/{SERVICE}/{db}?{self.tls.query()}"
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def sentinel_client(self, port: int) -> redis.Redis:
        tls: dict[str, object] = {}
        if self.tls is not None:
            tls = {"ssl": True, "ssl_ca_certs": self.tls.ca_file}
        return redis.Redis(  # polled: no retries with backoff of redis-py's own
            host="127.0.0.1",
            port=port,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
            **tls,
        )

    def master_port(self) -> int | None:
        """The master's port as a majority of the sentinels name it (None: no majority)."""
        votes: dict[int, int] = {}
        for port in self.sentinel_ports:
            try:
                with self.sentinel_client(port) as client:
                    addr = client.sentinel_get_master_addr_by_name(SERVICE)
            except (redis.RedisError, OSError):
                continue
            if addr:
                named = int(addr[1])
                votes[named] = votes.get(named, 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= self.quorum else None

    def server(self, port: int) -> LocalRedis:
        for node in (self.master, *self.replicas):
            if node.port == port:
                return node
        raise KeyError(port)

    def kill_master(self) -> LocalRedis:
        """SIGKILL the current master (no shutdown, no last sync); returns it."""
        port = self.master_port()
        assert port is not None, "no master to kill"
        node = self.server(port)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
        return node

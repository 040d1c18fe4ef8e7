"""A Redis Cluster of real processes for tests: three primaries (and
``replicas`` replicas of each) on free ports of 127.0.0.1, in temp dirs.

Each node's cluster bus listens on a port of its own (``--cluster-port``,
not port + 10000, which may be taken or above 65535).  ``redis-cli
--cluster create`` assigns the slots; the cluster is ready when every node
says ``cluster_state:ok`` and knows every other.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from hotparams.server import LocalRedis, free_port

__all__ = ["Cluster", "namespaces_on_each_primary"]


def _cli() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        raise FileNotFoundError("redis-cli is not on PATH")
    return binary


class Cluster:
    """Start, inspect and stop a cluster of ``primaries`` nodes."""

    def __init__(self, primaries: int = 3, replicas: int = 0) -> None:
        self.primary_count = primaries
        self.replicas = replicas
        self.nodes = [
            LocalRedis(
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "2000",
                    "--repl-diskless-sync-delay",  # a replica's first sync at once, not after 5 s
                    "0",
                ]
            )
            for _ in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}"

    def start(self, timeout: float = 20.0) -> Cluster:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                _cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_ok(timeout)
        return self

    def live_nodes(self) -> list[LocalRedis]:
        return [node for node in self.nodes if node.proc is not None]

    def ready(self) -> bool:
        for node in self.live_nodes():
            try:
                with node.client(socket_timeout=0.5) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
                    if f"cluster_known_nodes:{len(self.nodes)}" not in text:
                        return False
            except (redis.RedisError, OSError):
                return False
        return True

    def wait_ok(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def cli(self, node: LocalRedis, *args: str) -> str:
        """``redis-cli -c -p PORT ARGS...`` (follows redirections): its output."""
        done = subprocess.run(
            [_cli(), "-c", "-p", str(node.port), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout.strip()

    def node_id(self, node: LocalRedis) -> str:
        with node.client() as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def keyslot(self, key: str) -> int:
        with self.live_nodes()[0].client() as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))

    def owner(self, key: str) -> LocalRedis:
        """The node serving ``key``'s slot (as the first live node sees it)."""
        slot = self.keyslot(key)
        with self.live_nodes()[0].client() as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def migrate_slot(self, slot: int, source: LocalRedis, target: LocalRedis) -> None:
        """Move one slot and its keys from ``source`` to ``target`` (the
        steps of ``redis-cli --cluster reshard``), then tell every node."""
        source_id, target_id = self.node_id(source), self.node_id(target)
        with source.client() as src, target.client() as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            for node in (target, source, *(n for n in self.nodes if n not in (source, target))):
                with node.client() as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def namespaces_on_each_primary(cluster: Cluster, prefix: str = "ns") -> list[str]:
    """One namespace name per primary: the slot of each falls on another node."""
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"{prefix}{i}"
        port = cluster.owner(name).port
        found.setdefault(port, name)
        if len(found) == cluster.primary_count:
            return sorted(found.values(), key=lambda n: int(n.removeprefix(prefix)))
    raise LookupError("no namespace names cover every primary")

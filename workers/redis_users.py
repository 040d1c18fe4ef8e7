"""Write the ACL file of the example fleet's Redis: one least-privilege user
per role, made by ``hotparams acl`` (:mod:`hotparams.acl`), the passwords
from the environment (docker-compose.yml gives them from deploy/redis.env),
and the ``default`` user switched off.

    python -m workers.redis_users /acl/users.acl

Beside it, for the Sentinel profile of docker-compose.yml (when
deploy/redis.env has their passwords): ``node.conf``, which every Redis
node includes (how a replica authenticates to its master: a demoted master
becomes one), and ``sentinel.conf``, the sentinels' starting configuration
(what they monitor, how they authenticate to the nodes).  Two more ACL
users go with them: ``hotparams-replica`` (replication alone) and
``hotparams-sentinel`` (what Sentinel runs on the nodes).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hotparams.acl import acl_user

#: (role, Redis user, the variable holding its password) of the fleet
USERS = (
    ("admin", "hotparams-admin", "HOTPARAMS_ADMIN_PASSWORD"),
    ("editor", "chat-web", "HOTPARAMS_WEB_PASSWORD"),
    ("worker", "chat-worker", "HOTPARAMS_WORKER_PASSWORD"),
    ("viewer", "ops-viewer", "HOTPARAMS_VIEWER_PASSWORD"),
)


#: the replication user: PSYNC gives a full copy of the data, so it has a password
REPLICA = ("hotparams-replica", "HOTPARAMS_REPLICA_PASSWORD", "+psync +replconf +ping")
#: what Sentinel runs on the nodes it monitors (the Sentinel documentation's list)
SENTINEL = (
    "hotparams-sentinel",
    "HOTPARAMS_SENTINEL_PASSWORD",
    "allchannels +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish "
    "+info +client|setname +client|kill +script|kill",
)
#: the master's name in Sentinel (the service name of redis+sentinel:// URLs)
SERVICE = "hotparams"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.redis_users", description=__doc__)
    parser.add_argument("out", type=Path, help="the ACL file to write (redis --aclfile)")
    parser.add_argument("--namespace", action="append", default=None, help="default: chat")
    return parser.parse_args(argv)


def acl_file(namespaces: Sequence[str], environ: dict[str, str]) -> str:
    """The file's text: ``user default off``, then one line per user."""
    lines = ["user default off resetpass resetkeys resetchannels -@all"]
    missing = [var for _, _, var in USERS if not environ.get(var)]
    if missing:
        raise SystemExit(f"redis_users: set {', '.join(missing)} (see scripts/compose-env)")
    for role, user, var in USERS:
        lines.append(acl_user(role, namespaces, user, environ[var]).file_line())
    for user, var, rules in (REPLICA, SENTINEL):
        if environ.get(var):
            lines.append(f"user {user} on #{_sha256(environ[var])} resetchannels -@all {rules}")
    return "\n".join(lines) + "\n"


def _sha256(password: str) -> str:
    import hashlib

    return hashlib.sha256(password.encode()).hexdigest()


def node_conf(environ: dict[str, str]) -> str:
    """What every node includes: how it authenticates to a master when it
    is (or becomes) a replica."""
    if not environ.get(REPLICA[1]):
        return "# no HOTPARAMS_REPLICA_PASSWORD: standalone only\n"
    return f"masteruser {REPLICA[0]}\nmasterauth {environ[REPLICA[1]]}\n"


def sentinel_conf(
    environ: dict[str, str],
    master: str = "redis",
    port: int = 6379,
    quorum: int = 2,
    down_after_ms: int = 5000,
    failover_timeout_ms: int = 60000,
) -> str:
    """The sentinels' starting configuration (each copies it: Sentinel
    rewrites its file); detection in ``down_after_ms``, see docs/deployment.md."""
    if not environ.get(SENTINEL[1]):
        return "# no HOTPARAMS_SENTINEL_PASSWORD: run scripts/compose-env --force\n"
    return (
        "\n".join(
            [
                "sentinel resolve-hostnames yes",
                "sentinel announce-hostnames yes",
                f"sentinel monitor {SERVICE} {master} {port} {quorum}",
                f"sentinel auth-user {SERVICE} {SENTINEL[0]}",
                f"sentinel auth-pass {SERVICE} {environ[SENTINEL[1]]}",
                f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
                f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}",
                f"sentinel parallel-syncs {SERVICE} 1",
            ]
        )
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    environ = dict(os.environ)
    text = acl_file(args.namespace or ["chat"], environ)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # redis runs as another user in its image: the ACL file holds hashes only,
    # the two configurations the replication and sentinel passwords
    _write(args.out, text, 0o644)
    _write(args.out.parent / "node.conf", node_conf(environ), 0o644)
    _write(args.out.parent / "sentinel.conf", sentinel_conf(environ), 0o644)
    users = text.count("\nuser ")
    print(f"redis_users: {users} users written to {args.out}", file=sys.stderr)
    return 0


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Write the ACL file of the example fleet's Redis: one least-privilege user
per role, made by ``hotparams acl`` (:mod:`hotparams.acl`), the passwords
from the environment (docker-compose.yml gives them from deploy/redis.env),
and the ``default`` user switched off.

    python -m workers.redis_users /acl/users.acl
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
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    text = acl_file(args.namespace or ["chat"], dict(os.environ))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # redis runs as another user in its image; the file holds hashes only
    tmp.replace(args.out)
    print(f"redis_users: {len(USERS)} users written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

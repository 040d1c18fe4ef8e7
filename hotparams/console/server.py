"""Serving the console on its own: ``hotparams console`` and ``hotparams demo --console``."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import BaseWSGIServer, make_server

from ..bus import Bus
from ..config import ConfigError
from .auth import User
from .blueprint import Console, create_app

__all__ = ["ConsoleServer", "login_user", "read_users"]


def read_users(path: Path) -> tuple[User, ...]:
    """Users from a JSON file: ``{"ana": {"role": "editor", "token": "..."}, ...}``."""
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--users {path}: {exc}") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(
            f'--users {path}: a JSON object {{"name": {{"role": ..., "token": ...}}}}'
        )
    users = []
    for name, spec in doc.items():
        if not isinstance(spec, dict) or set(spec) - {"role", "token"}:
            raise ConfigError(f"--users {path}: {name!r} needs exactly a role and a token")
        users.append(User(str(name), spec.get("role", ""), str(spec.get("token", ""))))
    return tuple(users)


def login_user(name: str | None = None) -> User:
    """One admin with a fresh random token (printed once, valid while the server runs)."""
    return User(name or getpass.getuser() or "operator", "admin", secrets.token_urlsafe(32))


class ConsoleServer:
    """The console app on a threaded WSGI server at ``host:port`` (0: any free port)."""

    def __init__(
        self,
        bus: Bus,
        users: Sequence[User],
        *,
        host: str = "127.0.0.1",
        port: int = 8600,
        namespaces: Sequence[str] = (),
        wait: float = 3.0,
        behind_proxy: bool = False,
        models: Sequence[tuple[str, type[BaseModel]]] = (),
    ) -> None:
        secret = os.environ.get("HOTPARAMS_CONSOLE_SECRET") or secrets.token_urlsafe(32)
        console = Console(
            url_prefix="/",
            users=tuple(users),
            secret_key=secret,
            namespaces=tuple(namespaces),
            wait=wait,
            models=tuple(models),
        )
        self.app = create_app(bus, console)
        if behind_proxy:  # TLS ends at a proxy: trust its X-Forwarded-* (Secure cookies)
            self.app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
                self.app.wsgi_app, x_for=1, x_proto=1, x_host=1
            )
        self.server: BaseWSGIServer = make_server(host, port, self.app, threaded=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def start(self) -> ConsoleServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="hotparams-console", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server.server_close()

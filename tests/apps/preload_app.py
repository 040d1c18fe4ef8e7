"""A WSGI app whose Live handle is made at import time, for ``gunicorn --preload``.

The master imports this module (making the handle and its listener) and
then forks the workers: each worker must run its own listener.  Every
response tells which process answered and which version it served.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import hotparams
from tests.models import ChatParams

bus = hotparams.connect(os.environ["HOTPARAMS_URL"], reconcile_interval=0.5)
live = bus.watch("chat", ChatParams)
MASTER = os.getpid()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    snap = live.current  # one version for the whole request
    time.sleep(0.01)  # keep a worker busy a moment, so requests spread over the workers
    body = json.dumps(
        {
            "pid": os.getpid(),
            "master": MASTER,
            "version": snap.version,
            "temperature": snap.params.temperature,
            "connected": live.connected,
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

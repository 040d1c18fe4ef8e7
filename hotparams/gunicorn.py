"""gunicorn done right: hooks for a gunicorn config file.

::

    # gunicorn.conf.py
    from hotparams.gunicorn import child_exit, on_exit, prepare_master, when_ready, worker_exit

    prepare_master()   # before the app is loaded (--preload loads it next)
    preload_app = True

- :func:`prepare_master` runs in the master, when gunicorn reads the config
  file (before ``--preload`` makes the app).  It declares the master a fork
  server (:func:`hotparams.live.serve_forks`): the live handle the app
  makes there reads its first snapshot but never reports as a worker; each
  forked worker follows changes and reports under its own id.  And it sets
  up Prometheus' multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
  temporary directory unless set; emptied of old files if set), so that
  every worker's ``/metrics`` aggregates the metrics of all live workers.
- :func:`when_ready` (master, after the app is loaded): the master's own
  metric values (its first read) are dropped from the aggregate.
- :func:`worker_exit` (a worker, on a graceful exit: SIGTERM, SIGHUP, max
  requests): its live handles close and leave the fleet at once, so
  ``hotparams set --wait`` right after a restart waits for no dead worker.
- :func:`child_exit` (master, after a worker exited, gracefully or not):
  ``mark_process_dead`` for the worker's metric files.
- :func:`on_exit` (master, at shutdown): removes the directory
  :func:`prepare_master` made.

Nothing here imports gunicorn; ``prometheus_client`` is imported only by
the hooks that need it, after ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "child_exit",
    "in_gunicorn_master",
    "on_exit",
    "prepare_master",
    "when_ready",
    "worker_exit",
]

log = logging.getLogger("hotparams.gunicorn")

ENV = "PROMETHEUS_MULTIPROC_DIR"
#: the directory :func:`prepare_master` made (removed by :func:`on_exit`)
_made: str | None = None


def in_gunicorn_master() -> bool:
    """Whether this process is gunicorn reading its config (its master): a
    tool that merely runs the config file (a test, a linter) is not."""
    return "gunicorn.app.base" in sys.modules and "gunicorn" in Path(sys.argv[0]).parts[-2:]


def prepare_master(*, metrics: bool = True) -> None:
    """Call at the top of the config file (the master reads it before the
    app); anywhere but in gunicorn's master it does nothing."""
    global _made
    from .live import serve_forks

    if not in_gunicorn_master():
        return
    serve_forks()
    if not metrics:
        return
    if "prometheus_client" in sys.modules and ENV not in os.environ:
        log.warning(
            "prometheus_client was imported before %s was set: metrics stay per process", ENV
        )
    directory = os.environ.get(ENV)
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):  # a previous run's processes are gone
            old.unlink()
    else:
        _made = tempfile.mkdtemp(prefix="hotparams-prometheus-")
        os.environ[ENV] = _made


def when_ready(server: Any) -> None:
    """gunicorn hook (master): the master serves no request; drop its metric values."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (worker, graceful exit): close the live handles, leaving the fleet."""
    from .live import close_all

    close_all(timeout=2.0)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (master): a worker exited; its live gauges leave the aggregate."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """gunicorn hook (master, shutdown): remove the metrics directory made for this run."""
    if _made is not None:
        shutil.rmtree(_made, ignore_errors=True)

"""gunicorn settings of the web app: ``gunicorn -c workers/gunicorn.conf.py``.

``preload_app``: the master builds the app (and its hotparams Live handle)
once, then forks the workers; each worker's handle starts its own listener
after the fork.  The hooks of :mod:`hotparams.gunicorn`: the master is no
worker of the fleet, a worker that exits gracefully leaves the fleet at
once, and ``/metrics`` of any worker aggregates every live worker
(Prometheus multiprocess mode, in ``PROMETHEUS_MULTIPROC_DIR``: a fresh
temporary directory unless set).  Environment: ``PORT`` (8000),
``WEB_CONCURRENCY`` (3 workers).
"""

import os

from hotparams.gunicorn import child_exit, on_exit, prepare_master, when_ready, worker_exit

prepare_master()  # before --preload makes the app (and imports prometheus_client)

__all__ = ["child_exit", "on_exit", "when_ready", "worker_exit"]  # gunicorn's hooks

wsgi_app = "workers.web:create_app()"
bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
preload_app = True
graceful_timeout = 10
timeout = 30
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")

"""gunicorn settings of the web app: ``gunicorn -c workers/gunicorn.conf.py``.

``preload_app``: the master builds the app (and its hotparams Live handle)
once, then forks the workers; each worker's handle starts its own listener
after the fork.  Environment: ``PORT`` (8000), ``WEB_CONCURRENCY`` (3 workers).
"""

import os

wsgi_app = "workers.web:create_app()"
bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
preload_app = True
graceful_timeout = 10
timeout = 30
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")

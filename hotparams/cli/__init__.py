"""The ``hotparams`` command line: ``hotparams [--url URL] VERB ...``.

Modules: :mod:`.app` (the typer app: errors become exit codes and one-line
messages), :mod:`.context` (connection, options; the exit codes come from
the one error table, :mod:`hotparams.outcomes`), :mod:`.values`
(``key=value`` parsing by the stored schema), :mod:`.render` (tables and
JSON), :mod:`.commands` (the verbs), :mod:`.watch` (the live tail),
:mod:`.fleet` (``status`` and ``--wait``), :mod:`.variant` (A/B variants),
:mod:`.console` (the web console, served by :mod:`hotparams.console`).
"""

from .app import app, main, run

__all__ = ["app", "main", "run"]

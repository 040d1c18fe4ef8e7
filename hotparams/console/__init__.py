"""The operators' console: a web UI over the admin operations of
:mod:`hotparams.flask` (extra ``console``: ``pip install 'hotparams[console]'``).

Pages: the namespaces, one namespace (values, schema, variants), an edit
form generated from the schema with a review step and compare-and-set
publishing, the history with per-version diffs and roll back, the A/B
variants, and the fleet (live while a change rolls out).  Server-rendered
HTML that works without JavaScript; a small script served from the package
refreshes the fleet and filters lists.

Run it on its own with ``hotparams console [--url URL] [--host H] [--port P]``,
or mount it in an app with the Flask extension::

    hp = HotParams(namespace="chat", model=ChatParams,
                   console=Console(users=[User("ana", "editor", token=TOKEN)]))

See :class:`Console` for the settings and :mod:`.auth` for identities,
roles, the session cookie and CSRF.
"""

from __future__ import annotations

from .auth import ROLES, Identity, Role, User
from .blueprint import Console, console_blueprint, create_app

__all__ = ["ROLES", "Console", "Identity", "Role", "User", "console_blueprint", "create_app"]

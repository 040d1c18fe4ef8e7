"""Who uses the console, and what they may do: identities and roles, the
signed session cookie, CSRF tokens and flash messages.

A person is known either by a token they typed on the login page (one of
the console's :class:`User` s) or by the host app's ``authorize()``
callable, which returns an :class:`Identity` (or None: not allowed).  The
session lives in one cookie of its own, signed with the console's secret
key (``itsdangerous``, as Flask signs its own session), so the console
never mixes with the host app's session: ``HttpOnly``, ``SameSite=Lax``,
and ``Secure`` whenever the request came over TLS.  Every session (a
signed-out one too) carries a random CSRF token that every form posts
back; a POST without it is refused before anything else runs.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..config import ConfigError
from ..flask.guard import MIN_TOKEN_LENGTH  # the admin API's floor: one rule for both

__all__ = [
    "COOKIE",
    "MIN_TOKEN_LENGTH",
    "ROLES",
    "Identity",
    "Role",
    "Session",
    "Sessions",
    "User",
    "find_user",
]

Role = Literal["viewer", "editor", "admin"]
#: from the least to the most: each role may do what the ones before it may
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
#: the session cookie's name, and how long a session lasts (seconds)
COOKIE = "hotparams_console"
MAX_AGE = 12 * 3600


@dataclass(frozen=True, slots=True)
class Identity:
    """A person and their role: ``viewer`` reads, ``editor`` also changes
    values, rolls back and runs A/B variants, ``admin`` also sets secret
    fields and removes variants."""

    name: str
    role: Role

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"console: role {self.role!r} is not one of {', '.join(ROLES)}")
        if not self.name.strip():
            raise ConfigError("console: an identity needs a name (it is the audit's author)")

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True, slots=True)
class User:
    """A person who logs in with a token (at least 32 characters)."""

    name: str
    role: Role
    token: str = field(repr=False)

    def __post_init__(self) -> None:
        Identity(self.name, self.role)  # the same checks
        if len(self.token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"console: the token of {self.name!r} is shorter than {MIN_TOKEN_LENGTH} "
                "characters (make one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )

    @property
    def identity(self) -> Identity:
        return Identity(self.name, self.role)


def find_user(users: Iterable[User], token: str) -> User | None:
    """The user whose token this is (compared in constant time, all of them)."""
    found = None
    given = token.encode()
    for user in users:
        if hmac.compare_digest(given, user.token.encode()):
            found = user
    return found


@dataclass(frozen=True, slots=True)
class Session:
    """What the cookie holds: who (by login), the CSRF token, pending flashes."""

    csrf: str
    user: str | None = None
    flashes: tuple[tuple[str, str], ...] = ()  # (category, message)

    @classmethod
    def new(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(32))

    def signed_in(self, user: str) -> Session:
        return Session(csrf=secrets.token_urlsafe(32), user=user)  # a new CSRF token too

    def flashed(self, category: str, message: str) -> Session:
        return replace(self, flashes=(*self.flashes, (category, message)))

    def popped(self) -> tuple[Session, tuple[tuple[str, str], ...]]:
        return replace(self, flashes=()), self.flashes

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf.encode())


class Sessions:
    """Reads and writes the signed session cookie."""

    def __init__(self, secret_key: str | bytes) -> None:
        self._signer = URLSafeTimedSerializer(secret_key, salt="hotparams-console")

    def load(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            doc: Any = self._signer.loads(cookie, max_age=MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("c"), str):
            return None
        user = doc.get("u")
        flashes = tuple((str(c), str(m)) for c, m in doc.get("f") or () if isinstance(m, str | int))
        return Session(csrf=doc["c"], user=user if isinstance(user, str) else None, flashes=flashes)

    def dump(self, session: Session) -> str:
        doc: dict[str, Any] = {"c": session.csrf}
        if session.user is not None:
            doc["u"] = session.user
        if session.flashes:
            doc["f"] = [list(f) for f in session.flashes]
        return self._signer.dumps(doc)

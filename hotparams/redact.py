"""Keeping secrets out of text (I/O-free): secret values in what is shown
(:func:`masked`), Redis passwords in URLs, secret values quoted in
messages, and control characters in what reaches a terminal.

A password in a URL hides in two places, the user-info
(``redis://user:password@host``) and query options (``?password=...``,
``&sentinel_password=...``), and may hold any character, percent-encoded
or not: an unencoded ``/ # ? @ :`` in it defeats ``urllib.parse``, so the
user-info is taken as everything up to the LAST ``@`` and a password
option as everything to the end of the URL.  Over-redacting a URL that
holds ``@`` elsewhere is the price of never showing part of a password.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from .codec import MASK

__all__ = [
    "MASKED_PASSWORD",
    "describe",
    "masked",
    "redact_text",
    "redact_url",
    "terminal_safe",
    "url_secrets",
]

MASKED_PASSWORD = "***"


def masked(values: Mapping[str, Any], secrets: Collection[str]) -> dict[str, Any]:
    """``values`` sorted by name, each of the fields ``secrets`` as
    :data:`~hotparams.codec.MASK`: what the CLI, the admin API and the
    console show of values and of a variant's overrides."""
    return {k: (MASK if k in secrets else v) for k, v in sorted(values.items())}


#: a query option naming a password (``password=``, ``sentinel_password=``, ...)
_PASSWORD_OPTION = re.compile(r"([?&;][^=&;#?]*password[^=&;#?]*=)", re.IGNORECASE)


def _split(url: str) -> tuple[str, str, str | None, str]:
    """``(scheme://, user-info or "", password part or None, rest)``, the
    query's password options already cut off ``rest``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    option = _PASSWORD_OPTION.search(rest)
    tail_secret = None
    if option:
        tail_secret = rest[option.end() :]
        rest = rest[: option.end()] + MASKED_PASSWORD
    at = rest.rfind("@")
    if at < 0:
        return scheme, "", tail_secret, rest
    userinfo, rest = rest[:at], rest[at + 1 :]
    return scheme, userinfo, tail_secret, rest


def redact_url(url: str) -> str:
    """The URL with every password replaced by ``***`` (the user name kept)."""
    scheme, userinfo, _, rest = _split(url)
    if not userinfo:
        return scheme + rest
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return f"{scheme}{user}@{rest}"
    return f"{scheme}{user}:{MASKED_PASSWORD}@{rest}"


def url_secrets(url: str) -> list[str]:
    """The password parts of ``url``, raw and percent-decoded, to scrub from
    text a library wrote about it (an exception message)."""
    _, userinfo, tail, _ = _split(url)
    found: list[str] = []
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    if tail:
        found.append(tail)
    out: list[str] = []
    for item in found:
        for form in (item, unquote(item)):
            if form and form not in out:
                out.append(form)
    return out


def redact_text(text: str, secrets: Iterable[str], mask: str = MASKED_PASSWORD) -> str:
    """``text`` with every occurrence of each secret replaced (longest first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, mask)
    return text


#: C0 controls, DEL and C1 controls (``\\x9b`` is a CSI to some terminals),
#: and the bidirectional overrides that reorder what a reader sees
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``),
    so data from Redis cannot move a terminal's cursor, recolour it or hide
    what follows."""
    return _UNSAFE.sub(_escape, text)


def describe(exc: BaseException, url: str = "") -> str:
    """``Type: message`` of an exception, for one-line errors and logs; any
    password of ``url`` that the message quotes is masked."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact_text(text, url_secrets(url)) if url else text

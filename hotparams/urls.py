"""Connection URLs of Redis Sentinel and Redis Cluster, parsed (I/O-free).

::

    redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/<db>][?options]
    rediss+sentinel://...                     (TLS to the sentinels and the master)
    redis+cluster://[user:password@]host:port[,host:port...][?options]
    rediss+cluster://...

The hosts of a sentinel URL are the sentinels (port 26379 when left out),
the user-info the credentials of the master (and its replicas), and the
sentinels' own credentials query options: ``sentinel_username`` and
``sentinel_password``.  The hosts of a cluster URL are seed nodes (port
6379 when left out).  TLS options as for ``rediss://``: ``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``.

``redis://``, ``rediss://`` and ``unix://`` are redis-py's own forms and
are left to it (:mod:`hotparams.clients`).  A malformed URL is a
ConfigError naming the problem; when the URL holds a password the message
quotes none of its parts (a mis-parse may have cut the password anywhere),
only the URL with the password masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from .config import ConfigError
from .redact import redact_url, url_secrets

__all__ = ["SENTINEL_PORT", "Topology", "check_follow_replicas", "parse_topology", "topology_kind"]

SENTINEL_PORT = 26379
CLUSTER_PORT = 6379

_SCHEMES: dict[str, tuple[Literal["sentinel", "cluster"], bool]] = {
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
#: query options of the TLS forms, as redis-py reads them for ``rediss://``
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_CERT_REQS = ("none", "optional", "required")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True, slots=True)
class Topology:
    """What a sentinel or cluster URL names (passwords left out of repr)."""

    kind: Literal["sentinel", "cluster"]
    tls: bool
    #: the sentinels (sentinel) or the seed nodes (cluster)
    nodes: tuple[tuple[str, int], ...]
    #: the master's service name (sentinel only)
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    #: ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs (text), ssl_check_hostname (bool)
    tls_options: dict[str, str | bool] = field(default_factory=dict)


def check_follow_replicas(url: str) -> None:
    """``follow_replicas`` finds the replicas through the sentinels: any other
    URL is a ConfigError naming it."""
    if topology_kind(url) != "sentinel":
        raise ConfigError(
            "follow_replicas needs a redis+sentinel:// or rediss+sentinel:// URL (the "
            f"replicas are found through the sentinels), not {redact_url(url)!r}"
        )


def topology_kind(url: str) -> Literal["sentinel", "cluster"] | None:
    """``"sentinel"`` or ``"cluster"`` for those schemes, else None (redis-py's forms)."""
    scheme = url.partition("://")[0].lower()
    entry = _SCHEMES.get(scheme)
    return entry[0] if entry else None


class _Bad(Exception):
    """Internal: a problem; ``detail`` quotes part of the URL (left out
    of the message when the URL holds a password)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def parse_topology(url: str) -> Topology:
    """The topology a sentinel or cluster URL names; ConfigError if malformed."""
    try:
        return _parse(url)
    except _Bad as bad:
        secret = bool(url_secrets(url))
        reason = bad.reason if secret or not bad.detail else f"{bad.reason}: {bad.detail}"
        hint = " (percent-encode any / # ? @ : , in its user name and password)" if secret else ""
        raise ConfigError(f"invalid Redis URL {redact_url(url)!r}: {reason}{hint}") from None


def _parse(url: str) -> Topology:
    scheme, sep, rest = url.partition("://")
    entry = _SCHEMES.get(scheme.lower()) if sep else None
    if entry is None:
        raise _Bad(
            "not a redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster:// URL"
        )
    kind, tls = entry
    try:
        parts = urlsplit("x://" + rest)
    except ValueError:  # urllib's "Invalid IPv6 URL"
        raise _Bad("a malformed [IPv6] host (an unclosed '[')") from None
    if parts.fragment or rest.endswith("#"):
        raise _Bad("a URL fragment ('#...') means nothing here")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = SENTINEL_PORT if kind == "sentinel" else CLUSTER_PORT
    nodes = tuple(_node(item, default_port) for item in hosts.split(","))
    service, db = _path(kind, parts.path)
    options = _options(kind, tls, parts.query)
    return Topology(
        kind=kind,
        tls=tls,
        nodes=nodes,
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_username=_text(options.pop("sentinel_username", None)),
        sentinel_password=_text(options.pop("sentinel_password", None)),
        tls_options=options,
    )


def _text(value: str | bool | None) -> str | None:
    return None if value is None or value == "" else str(value)


def _node(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise _Bad("an empty host in the host list (host:port[,host:port...])")
    if item.startswith("["):  # [IPv6]:port
        host, bracket, tail = item[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise _Bad("a malformed [IPv6] host", item)
        port_text = tail[1:] if tail else ""
    else:
        host, colon, port_text = item.rpartition(":")
        if not colon:
            host, port_text = item, ""
        elif ":" in host:
            raise _Bad("an IPv6 host needs brackets ([::1]:26379)", item)
    if not host:
        raise _Bad("a host:port without its host", item)
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _Bad("a port is not a number from 1 to 65535", item)
    return host, int(port_text)


def _path(kind: str, path: str) -> tuple[str, int]:
    segments = [unquote(s) for s in path.split("/")[1:]] if path else []
    if len(segments) > 1 and segments[-1] == "":  # a trailing slash
        segments.pop()
    if kind == "cluster":
        if segments and segments != [""] and segments != ["0"]:
            raise _Bad("a Redis Cluster has database 0 alone: no path after the hosts", path)
        return "", 0
    if not segments or not segments[0]:
        raise _Bad(
            "the master's service name is missing "
            "(redis+sentinel://host:26379[,host:port...]/<service_name>[/<db>])"
        )
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise _Bad("after the service name comes a database number alone", path)
    return segments[0], int(segments[1]) if len(segments) == 2 else 0


def _options(kind: str, tls: bool, query: str) -> dict[str, str | bool]:
    allowed = (SENTINEL_OPTIONS if kind == "sentinel" else ()) + (TLS_OPTIONS if tls else ())
    out: dict[str, str | bool] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _Bad("a malformed query (name=value&name=value)") from None
    for name, value in pairs:
        if name not in allowed:
            what = f"{'rediss' if tls else 'redis'}+{kind}://"
            known = ", ".join(allowed) if allowed else "none"
            raise _Bad(f"unknown option {name!r} for {what} (known: {known})")
        if name in out:
            raise _Bad(f"option {name!r} given twice")
        out[name] = _option(name, value)
    return out


def _option(name: str, value: str) -> str | bool:
    if name == "ssl_check_hostname":
        if value.lower() not in _BOOLEANS:
            raise _Bad("ssl_check_hostname is true or false", value)
        return _BOOLEANS[value.lower()]
    if name == "ssl_cert_reqs" and value.lower() not in _CERT_REQS:
        raise _Bad("ssl_cert_reqs is none, optional or required", value)
    return value.lower() if name == "ssl_cert_reqs" else value

"""TLS connections to Redis (``rediss://``) that fail fast and say why.

redis-py does the TLS handshake under the socket timeout, so a TLS client
pointed at a plain Redis port (which answers nothing to a ClientHello)
waits ``socket_timeout`` per try and reports a bare ``TimeoutError``.
Here the handshake runs under the *connect* timeout, and the two common
mistakes get a message of their own: a port that does not speak TLS, and
a certificate the client's CA does not vouch for.

Certificates come from the URL's options, as redis-py reads them:
``rediss://host:6380/0?ssl_ca_certs=/etc/redis/ca.pem`` (the CA), and for
mutual TLS ``&ssl_certfile=client.pem&ssl_keyfile=client.key``.
"""

from __future__ import annotations

import ssl
from typing import Any

from redis.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["TlsConnection"]


class TlsConnection(SSLConnection):
    """redis-py's SSLConnection with the handshake bounded by the connect timeout."""

    def _connect(self) -> Any:
        sock = Connection._connect(self)  # type: ignore[no-untyped-call]
        sock.settimeout(self.socket_connect_timeout)
        where = f"{self.host}:{self.port}"
        try:
            wrapped = self._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise RedisConnectionError(
                f"TLS certificate verification failed for {where}: "
                f"{exc.verify_message or exc.reason} (is ssl_ca_certs the CA of this server?)"
            ) from None
        except TimeoutError:
            sock.close()
            raise RedisConnectionError(
                f"no TLS handshake from {where} within {self.socket_connect_timeout:g} s: "
                "is this a TLS port? (a plain Redis port answers nothing to a TLS client; "
                "use redis:// for it)"
            ) from None
        except ssl.SSLError as exc:
            sock.close()
            raise RedisConnectionError(f"TLS handshake with {where} failed: {exc}") from None
        except OSError:
            sock.close()
            raise
        wrapped.settimeout(self.socket_timeout)
        return wrapped

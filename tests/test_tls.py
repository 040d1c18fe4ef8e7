"""TLS end to end, with certificates made by the test (trustme): ``rediss://``
with a CA, mutual TLS, a wrong CA refused (exit 5, "certificate
verification failed"), and a TLS client on a plain port failing within the
connect timeout with a hint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import trustme

import hotparams
from hotparams.server import LocalRedis, ServerTls
from tests.models import ChatParams

from .test_cli import run_cli


@dataclass
class Pki:
    ca: Path
    other_ca: Path  # a CA the server's certificate does not come from
    server: ServerTls
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("hotparams-worker")
    paths = {
        "ca": folder / "ca.pem",
        "other": folder / "other-ca.pem",
        "cert": folder / "server.pem",
        "key": folder / "server.key",
        "client": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    ca.cert_pem.write_to_path(paths["ca"])
    other.cert_pem.write_to_path(paths["other"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    client.cert_chain_pems[0].write_to_path(paths["client"])
    client.private_key_pem.write_to_path(paths["client_key"])
    tls = ServerTls(str(paths["cert"]), str(paths["key"]), str(paths["ca"]))
    return Pki(paths["ca"], paths["other"], tls, paths["client"], paths["client_key"])


def _url(port: int, ca: Path, *extra: str) -> str:
    return f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={quote(str(ca))}" + "".join(
        f"&{e}" for e in extra
    )


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[LocalRedis]:
    with LocalRedis(tls=pki.server) as server:
        yield server


def test_rediss_with_a_ca_carries_writes_reads_and_live_changes(
    tls_server: LocalRedis, pki: Pki
) -> None:
    url = _url(tls_server.port, pki.ca)
    with hotparams.connect(url) as bus:
        bus.register("chat", ChatParams)
        live = bus.watch("chat", ChatParams)
        try:
            v = bus.set("chat", {"temperature": 0.2}, author="ana")
            assert live.wait_for(v, timeout=10)
            assert live.current.params.temperature == 0.2
        finally:
            live.close()
    result = run_cli(url, "get", "chat")
    assert result.code == 0 and "0.2" in result.out


def test_mutual_tls_needs_the_client_certificate(pki: Pki) -> None:
    mtls = ServerTls(
        pki.server.cert_file,
        pki.server.key_file,
        pki.server.ca_file,
        auth_clients=True,
        client_cert=str(pki.client_cert),
        client_key=str(pki.client_key),
    )
    with LocalRedis(tls=mtls) as server:
        without = _url(server.port, pki.ca)
        with pytest.raises(hotparams.ConnectionFailed):
            hotparams.connect(without, retry_attempts=1).head("chat")
        assert run_cli(without, "get", "chat").code == 5
        with_cert = _url(
            server.port,
            pki.ca,
            f"ssl_certfile={quote(str(pki.client_cert))}",
            f"ssl_keyfile={quote(str(pki.client_key))}",
        )
        with hotparams.connect(with_cert) as bus:
            assert bus.register("chat", ChatParams).created
        assert run_cli(with_cert, "get", "chat").code == 0


def test_a_wrong_ca_is_refused_with_exit_5_and_says_certificate_verification_failed(
    tls_server: LocalRedis, pki: Pki
) -> None:
    url = _url(tls_server.port, pki.other_ca)
    with pytest.raises(hotparams.ConnectionFailed) as caught:
        hotparams.connect(url, retry_attempts=1).head("chat")
    assert "certificate verification failed" in str(caught.value)
    result = run_cli(url, "get", "chat")
    assert result.code == 5
    assert result.err.count("\n") == 1 and "certificate verification failed" in result.err


def test_a_tls_client_on_a_plain_port_fails_within_the_connect_timeout_with_a_hint(
    redis_url: str,
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    url = f"rediss://127.0.0.1:{port}/0"
    started = time.monotonic()
    with pytest.raises(hotparams.ConnectionFailed) as caught:
        hotparams.connect(url, retry_attempts=1, connect_timeout=0.5).head("chat")
    assert time.monotonic() - started < 2.0  # was socket_timeout (5 s) per try
    assert "is this a TLS port" in str(caught.value)
    started = time.monotonic()
    result = run_cli(url, "get", "chat")
    elapsed = time.monotonic() - started
    assert result.code == 5 and "is this a TLS port" in result.err
    assert elapsed < 8.0, elapsed  # 2 tries of the CLI's 2 s connect timeout, and the start

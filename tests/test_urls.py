"""Connection URLs: every form of redis+sentinel:// and redis+cluster://
parsed, every malformed one refused with a ConfigError that names the
problem and never shows the password, and the clients built for each
(without a server: redis-py connects lazily)."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.asyncio.sentinel import SentinelManagedSSLConnection as AsyncSentinelSsl
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

import hotparams
from hotparams import aio
from hotparams.clients import TlsSentinelConnection, async_client, sync_client
from hotparams.config import ConfigError, Settings, redact_url
from hotparams.errors import ConnectionFailed
from hotparams.urls import Topology, parse_topology, topology_kind

#: a test password with the characters that defeat parsers
SECRET = "s3cr/et@pw"


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    t = parse_topology("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,sentinel-c/mymaster/3")
    assert t == Topology(
        kind="sentinel",
        tls=False,
        nodes=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-c", 26379)),
        service="mymaster",
        db=3,
    )


def test_a_sentinel_url_carries_the_masters_and_the_sentinels_credentials() -> None:
    t = parse_topology(
        "redis+sentinel://app:pa%3Ass@s1:26379/mymaster"
        "?sentinel_username=watch&sentinel_password=w%26tch"
    )
    assert (t.username, t.password) == ("app", "pa:ss")
    assert (t.sentinel_username, t.sentinel_password) == ("watch", "w&tch")
    assert t.db == 0
    assert "pa:ss" not in repr(t) and "w&tch" not in repr(t)


def test_a_password_alone_and_an_ipv6_sentinel_are_understood() -> None:
    t = parse_topology("redis+sentinel://:only@[::1]:26379,[fe80::2]/svc/")
    assert (t.username, t.password) == (None, "only")
    assert t.nodes == (("::1", 26379), ("fe80::2", 26379))
    assert (t.service, t.db) == ("svc", 0)


def test_a_tls_sentinel_url_takes_the_tls_options() -> None:
    t = parse_topology(
        "rediss+sentinel://s1:26379/svc?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=Required"
        "&ssl_check_hostname=false&ssl_certfile=/c.pem&ssl_keyfile=/c.key"
    )
    assert t.tls
    assert t.tls_options == {
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": False,
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/c.key",
    }


def test_a_cluster_url_names_seed_nodes() -> None:
    t = parse_topology("rediss+cluster://u:p@n1:7000,n2:7001,n3?ssl_ca_certs=/ca.pem")
    assert (t.kind, t.tls) == ("cluster", True)
    assert t.nodes == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert (t.username, t.password, t.service, t.db) == ("u", "p", "", 0)
    assert parse_topology("redis+cluster://n1:7000/0").nodes == (("n1", 7000),)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis+sentinel://h/s", "sentinel"),
        ("REDISS+SENTINEL://h/s", "sentinel"),
        ("redis+cluster://h", "cluster"),
        ("rediss+cluster://h", "cluster"),
        ("redis://h", None),
        ("rediss://h", None),
        ("unix:///tmp/redis.sock", None),
    ],
)
def test_the_scheme_tells_the_topology(url: str, kind: str | None) -> None:
    assert topology_kind(url) == kind


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://s1:26379", "service name is missing"),
        ("redis+sentinel://s1:26379/", "service name is missing"),
        ("redis+sentinel://s1:26379/svc/x", "a database number alone"),
        ("redis+sentinel://s1:26379/svc/1/2", "a database number alone"),
        ("redis+sentinel://s1:26379,,s2/svc", "an empty host"),
        ("redis+sentinel:///svc", "an empty host"),
        ("redis+sentinel://s1:port/svc", "not a number from 1 to 65535: s1:port"),
        ("redis+sentinel://s1:70000/svc", "not a number from 1 to 65535"),
        ("redis+sentinel://s1:0/svc", "not a number from 1 to 65535"),
        ("redis+sentinel://:26379/svc", "without its host"),
        ("redis+sentinel://::1:26379/svc", "needs brackets"),
        ("redis+sentinel://[::1/svc", "malformed [IPv6]"),
        ("redis+sentinel://s1/svc?db=2", "unknown option 'db' for redis+sentinel://"),
        ("redis+sentinel://s1/svc?ssl_ca_certs=/ca", "unknown option 'ssl_ca_certs'"),
        ("redis+sentinel://s1/svc?sentinel_username=a&sentinel_username=b", "given twice"),
        ("redis+sentinel://s1/svc?novalue", "malformed query"),
        ("redis+sentinel://s1/svc#frag", "fragment"),
        ("rediss+sentinel://s1/svc?ssl_cert_reqs=maybe", "none, optional or required"),
        ("rediss+sentinel://s1/svc?ssl_check_hostname=perhaps", "true or false"),
        ("redis+cluster://n1:7000/1", "database 0 alone"),
        ("redis+cluster://n1:7000?sentinel_username=x", "unknown option 'sentinel_username'"),
    ],
)
def test_a_malformed_url_is_a_config_error_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="invalid Redis URL") as caught:
        parse_topology(url)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://app:{SECRET}@s1:26379/svc/x",
        f"redis+sentinel://app:{SECRET}@s1:notaport/svc",
        f"rediss+sentinel://app:{SECRET}@s1/svc?ssl_cert_reqs=maybe",
        f"redis+sentinel://s1/svc/x?sentinel_password={SECRET}",
        f"redis+cluster://app:{SECRET}@n1:7000/5",
        f"redis+cluster://:{SECRET}@",
    ],
)
def test_no_error_about_a_url_shows_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_topology(url)
    message = str(caught.value)
    for part in (SECRET, "s3cr", "et@pw", "et"):
        assert part not in message.replace("sentinel", "").replace("Redis", ""), message
    assert "***" in message
    assert "percent-encode" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"redis+sentinel://app:{SECRET}@s1:26379,s2:26379/svc/0",
            "redis+sentinel://app:***@s1:26379,s2:26379/svc/0",
        ),
        (
            f"rediss+sentinel://s1/svc?sentinel_username=w&sentinel_password={SECRET}",
            "rediss+sentinel://s1/svc?sentinel_username=w&sentinel_password=***",
        ),
        (f"redis+cluster://:{SECRET}@n1:7000,n2:7001", "redis+cluster://:***@n1:7000,n2:7001"),
        (f"rediss+cluster://u:{SECRET}@n1", "rediss+cluster://u:***@n1"),
    ],
)
def test_redact_url_masks_the_passwords_of_the_new_forms(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# ---------------------------------------------------------------- the clients


def test_a_sentinel_url_gives_a_client_of_the_master_the_sentinels_name() -> None:
    client = sync_client(
        "redis+sentinel://app:pw@127.0.0.1:1,127.0.0.1:2/svc/4?sentinel_password=spw",
        Settings(connect_timeout=0.3, socket_timeout=0.7),
    )
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "svc" and pool.is_master
        assert pool.connection_class is SentinelManagedConnection
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (4, "app", "pw")
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.7, 0.3)
        sentinels = pool.sentinel_manager.sentinels
        assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
        first = sentinels[0].connection_pool.connection_kwargs
        assert first["password"] == "spw" and first["socket_timeout"] == 0.3
    finally:
        client.close()


def test_a_tls_sentinel_url_speaks_tls_to_the_master_and_the_sentinels() -> None:
    client = sync_client("rediss+sentinel://127.0.0.1:1/svc?ssl_ca_certs=/ca.pem", Settings())
    try:
        pool = client.connection_pool
        assert pool.connection_class is TlsSentinelConnection
        assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
        sentinel = pool.sentinel_manager.sentinels[0].connection_pool
        assert sentinel.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
        assert "SSL" in sentinel.connection_class.__name__
    finally:
        client.close()


def test_the_asyncio_client_of_a_sentinel_url_has_the_same_options() -> None:
    client = async_client("rediss+sentinel://u:pw@127.0.0.1:1/svc/2", Settings())
    pool = client.connection_pool
    assert isinstance(pool, AsyncSentinelPool)
    assert pool.connection_class is AsyncSentinelSsl
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (2, "pw")


def test_a_cluster_url_gives_cluster_clients_of_its_seed_nodes() -> None:
    """The asyncio client asks the seed nodes at its first call; the sync
    one at once, so no seed answering is a ConnectionFailed naming the URL
    without its password."""
    url = "rediss+cluster://u:pw@127.0.0.1:1,127.0.0.1:2?ssl_ca_certs=/ca"
    client = async_client(url, Settings())
    assert isinstance(client, AsyncRedisCluster)
    seeds = [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()]
    assert sorted(seeds) == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert client.connection_kwargs["password"] == "pw"
    assert client.connection_kwargs["ssl_ca_certs"] == "/ca"
    with pytest.raises(ConnectionFailed, match=r"redis\+cluster://u:\*\*\*@127.0.0.1:1") as caught:
        sync_client("redis+cluster://u:pw@127.0.0.1:1", Settings(connect_timeout=0.2))
    assert "pw" not in str(caught.value)


def test_waiting_for_replicas_is_refused_on_a_cluster() -> None:
    """redis-py sends WAIT to every primary, not after the write on its
    connection: it would count nothing, so the setting is a ConfigError."""
    for build in (sync_client, async_client):
        with pytest.raises(
            ConfigError, match="min_replica_acks is not supported on a Redis Cluster"
        ):
            build("redis+cluster://127.0.0.1:1", Settings(min_replica_acks=1))


def test_connect_and_the_asyncio_connect_take_sentinel_urls() -> None:
    bus = hotparams.connect("redis+sentinel://127.0.0.1:1/svc")
    assert isinstance(bus.client.connection_pool, SentinelConnectionPool)
    bus.close()
    abus = aio.connect("redis+sentinel://127.0.0.1:1/svc")
    assert isinstance(abus.client.connection_pool, AsyncSentinelPool)
    with pytest.raises(ConfigError, match="service name is missing"):
        hotparams.connect("redis+sentinel://127.0.0.1:1")


def test_a_sentinel_nobody_answers_is_a_connection_failure_naming_the_url() -> None:
    bus = hotparams.connect(
        "redis+sentinel://u:pw@127.0.0.1:1/svc",
        connect_timeout=0.2,
        retry_attempts=2,
        retry_deadline=0.5,
    )
    try:
        with pytest.raises(hotparams.ConnectionFailed) as caught:
            bus.head("ns")
        message = str(caught.value)
        assert "redis+sentinel://u:***@127.0.0.1:1/svc" in message
        assert "pw" not in message.replace("u:***", "")
    finally:
        bus.close()

"""Secret fields encrypted at rest: with keys, a secret value never reaches
Redis in clear (no key, no FCALL argument in SLOWLOG, no AOF or RDB byte,
not on a replica, not in the schema's defaults); a namespace registered
with encryption refuses a plaintext secret from any writer; a worker
without the keys keeps its last good snapshot and says why; ``hotparams
secrets rotate`` re-encrypts with a new first key."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from pydantic import BaseModel, Field, SecretStr

import hotparams
from hotparams.server import LocalRedis

from .helpers import dump_namespace, run_in_process, wait_until

ROOT = Path(__file__).resolve().parent.parent
K1 = Fernet.generate_key().decode()
K2 = Fernet.generate_key().decode()
PLAIN = [
    "sk-DEFAULT-never-in-clear",
    "sk-INITIAL-never-in-clear",
    "sk-SET-never-in-clear",
    "sk-VARIANT-never-in-clear",
    "sk-CLI-never-in-clear",
    "tok-RESTORE-never-in-clear",
]


class Vault(BaseModel):
    api_key: SecretStr = SecretStr(PLAIN[0])
    token: str = Field("tok-default-x", json_schema_extra={"secret": True}, min_length=4)
    region: str = "eu"


def cli(url: str, *args: str, keys: str | None = None) -> subprocess.CompletedProcess[str]:
    """``hotparams ARGS`` (in this process), its keys in HOTPARAMS_SECRET_KEYS or none."""
    env = {"HOTPARAMS_URL": url, "HOTPARAMS_SECRET_KEYS": keys}
    code, out, err = run_in_process(list(args), env=env, cwd=ROOT)
    return subprocess.CompletedProcess(["hotparams", *args], code, out, err)


@pytest.fixture
def persistent() -> Iterator[LocalRedis]:
    """A redis-server that writes an AOF and an RDB, logs every command to
    SLOWLOG, and feeds a replica."""
    extra = ["--appendonly", "yes", "--appendfsync", "always", "--slowlog-log-slower-than", "0"]
    extra += ["--slowlog-max-len", "100000"]
    with LocalRedis(extra=extra) as server:
        yield server


def _files_text(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_secret_values_never_reach_redis_in_clear(persistent: LocalRedis, tmp_path: Path) -> None:
    replica = LocalRedis(extra=["--replicaof", "127.0.0.1", str(persistent.port)]).start()
    try:
        bus = hotparams.connect(persistent.url, secret_keys=[K1])
        bus.register("vault", Vault, initial={"api_key": PLAIN[1]})
        bus.set("vault", {"api_key": PLAIN[2], "region": "us"})
        vv = bus.set_variant("vault", "vip", {"api_key": PLAIN[3]}, users=["alice"])
        bus.unset("vault", ["api_key"])  # back to the default: sealed too
        assert cli(persistent.url, "set", "vault", f"token={PLAIN[4]}", keys=K1).returncode == 0
        v = bus.restore("vault", {"token": PLAIN[5], "api_key": PLAIN[2]}, model=Vault)
        bus.rollback("vault", v - 1)
        # the readers with the key see the values
        with hotparams.connect(persistent.url, secret_keys=[K1]) as reader:
            snap = reader.get("vault", Vault, version=v)
            assert snap.params.api_key.get_secret_value() == PLAIN[2]
            assert snap.params.token == PLAIN[5]
            vip = reader.get("vault", Vault, version=vv).variants.variants["vip"]
            assert vip.overrides["api_key"] == PLAIN[3]
            assert reader.get("vault", Vault, version=vv + 1).params.api_key == Vault().api_key
        live = bus.watch("vault", Vault)
        assert live.for_user("alice").params.api_key.get_secret_value() == PLAIN[3]
        live.close()
        client = persistent.client()
        client.save()
        assert wait_until(lambda: replica.client().dbsize() == client.dbsize() > 0)
        places = {
            "keys": repr(dump_namespace(client, "vault", include_fleet=True)).encode(),
            "replica": repr(dump_namespace(replica.client(), "vault")).encode(),
            "slowlog": repr(client.slowlog_get(100000)).encode(),
            "aof and rdb": _files_text(persistent.dir),
        }
        assert b"FCALL" in places["slowlog"].upper() and b"hpenc:1:" in places["keys"]
        for place, data in places.items():
            for plain in PLAIN:
                assert plain.encode() not in data, f"{plain} in clear in the {place}"
        bus.close()
    finally:
        replica.close()


def test_a_plaintext_secret_is_refused_from_any_writer(redis_url: str) -> None:
    with hotparams.connect(redis_url, secret_keys=[K1]) as owner:
        owner.register("vault", Vault)
        owner.set_variant("vault", "vip", {"region": "ap"}, percent=10)
    client = redis.Redis.from_url(redis_url)
    before = dump_namespace(client, "vault")
    keyless = hotparams.connect(redis_url)
    attempts = {
        "Python, no model": lambda: keyless.set("vault", {"api_key": "sk-plain-1"}),
        "variant override": lambda: keyless.set_variant("vault", "vip", {"api_key": "sk-plain-2"}),
        "redis-cli hp_set": lambda: client.fcall("hp_set", 1, "vault", "api_key", "sk-plain-3"),
        "hp_commit JSON": lambda: client.fcall("hp_commit", 1, "vault", "token", '"tok-plain"'),
        "a fake token": lambda: client.fcall("hp_set", 1, "vault", "api_key", "hpenc:1:a b"),
    }
    for what, attempt in attempts.items():
        with pytest.raises((hotparams.InvalidParams, redis.ResponseError)) as caught:
            attempt()
        assert "must be encrypted" in str(caught.value), what
    refused = cli(redis_url, "set", "vault", "api_key=sk-plain-4")
    assert refused.returncode == 3 and "must be encrypted" in refused.stderr
    # a keyless client re-registering cannot turn the encryption off
    keyless.register("vault", Vault)
    with pytest.raises(hotparams.InvalidParams):
        keyless.set("vault", {"api_key": "sk-plain-5"})
    assert dump_namespace(client, "vault") == before
    # without a bound model a keyless writer still changes the other fields
    plain = hotparams.connect(redis_url)
    assert plain.set("vault", {"region": "us"}) > 0
    plain.close()
    keyless.close()


def test_a_worker_without_the_key_keeps_its_last_good_snapshot_and_says_why(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    writer = hotparams.connect(redis_url, secret_keys=[K2, K1])  # K2 encrypts
    old_writer = hotparams.connect(redis_url, secret_keys=[K1])
    old_writer.register("vault", Vault, initial={"api_key": PLAIN[1]})
    old_key_worker = hotparams.connect(redis_url, secret_keys=[K1]).watch("vault", Vault)
    assert old_key_worker.current.params.api_key.get_secret_value() == PLAIN[1]
    v = old_writer.set("vault", {"region": "us"})
    assert old_key_worker.wait_for(v)
    rotated = writer.set("vault", {"api_key": PLAIN[2]})  # sealed with K2 only
    assert wait_until(lambda: old_key_worker.status().rejected is not None)
    status = old_key_worker.status()
    assert status.stale and status.version == v and status.rejected is not None
    assert status.rejected.version == rotated
    assert "no key of this client opens it" in status.rejected.errors["api_key"]
    assert old_key_worker.current.params.api_key.get_secret_value() == PLAIN[1]
    assert any(r.levelno == logging.ERROR and "no key" in r.getMessage() for r in caplog.records)
    assert PLAIN[2] not in caplog.text
    old_key_worker.close()
    # a worker with no keys at all starts on the defaults only if asked, and says why
    with pytest.raises(hotparams.InvalidParams, match="no key of this client opens it"):
        hotparams.connect(redis_url).watch("vault", Vault)
    writer.close()
    old_writer.close()


def test_rotate_reencrypts_every_secret_with_the_first_key_as_a_new_audited_version(
    redis_url: str,
) -> None:
    with hotparams.connect(redis_url, secret_keys=[K1]) as bus:
        bus.register("vault", Vault, initial={"api_key": PLAIN[1], "token": "tok-initial"})
        bus.set_variant("vault", "vip", {"api_key": PLAIN[3]}, users=["alice"])
        head = bus.head("vault")
    result = cli(redis_url, "secrets", "rotate", "vault", keys=f"{K2},{K1}")
    assert result.returncode == 0, result.stderr
    assert f"version {head.version} -> {head.version + 1}" in result.stdout
    assert PLAIN[1] not in result.stdout + result.stderr
    only_new = hotparams.connect(redis_url, secret_keys=[K2])  # the old key can go now
    snap = only_new.get("vault", Vault)
    assert snap.version == head.version + 1
    assert snap.params.api_key.get_secret_value() == PLAIN[1] and snap.params.token == "tok-initial"
    assert snap.variants.variants["vip"].overrides["api_key"] == PLAIN[3]
    (last,) = only_new.history("vault", limit=1)
    assert last.op == "rotate" and last.changes["api_key"].new == hotparams.MASK
    assert PLAIN[3] not in repr(last)
    only_new.close()
    with pytest.raises(hotparams.InvalidParams):
        hotparams.connect(redis_url, secret_keys=[K1]).get("vault", Vault)
    no_keys = cli(redis_url, "secrets", "rotate", "vault")
    assert no_keys.returncode == 2 and "needs the keys" in no_keys.stderr


def test_keys_never_show_and_a_bad_key_is_a_config_error() -> None:
    settings = hotparams.Settings(secret_keys=[K1])  # type: ignore[list-item]
    bus = hotparams.connect("redis://127.0.0.1:1/0", secret_keys=[K1, K2])
    for text in (repr(settings), str(settings), repr(bus), repr(bus.sealer)):
        assert K1 not in text and K2 not in text
    with pytest.raises(hotparams.ConfigError, match="not a Fernet key") as caught:
        hotparams.connect("redis://127.0.0.1:1/0", secret_keys=["not-a-key-SECRET"])
    assert "not-a-key-SECRET" not in str(caught.value)

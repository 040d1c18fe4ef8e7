"""Settings of a Bus, in one typed object; unknown settings are an error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from .errors import HotParamsError
from .redact import redact_url, url_secrets

__all__ = ["SETTING_CAPS", "ConfigError", "Settings", "invalid_url", "redact_url", "settings_from"]

#: hard caps of a namespace's settings, (lowest, highest); the Lua library
#: enforces the same numbers for every writer (lifecycle.lua SETTING_CAPS)
SETTING_CAPS: dict[str, tuple[int, int]] = {
    "retention": (1, 10_000),
    "audit_maxlen": (100, 1_000_000),
    "max_value_bytes": (1, 16 * 1024 * 1024),
}


class ConfigError(HotParamsError, ValueError):
    """An unknown or out-of-range setting."""


class Settings(BaseModel):
    """Connection, retry and namespace defaults of a :class:`~hotparams.Bus`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: versions kept per new namespace (older ones are deleted on write)
    retention: int = Field(100, ge=1, le=10_000)
    #: audit entries kept per new namespace (approximate trim)
    audit_maxlen: int = Field(10_000, ge=100, le=1_000_000)
    #: largest JSON text of one value in a new namespace, in bytes
    max_value_bytes: int = Field(65_536, ge=1, le=16 * 1024 * 1024)
    #: seconds to open a connection
    connect_timeout: float = Field(2.0, gt=0)
    #: seconds to wait for a reply
    socket_timeout: float = Field(5.0, gt=0)
    #: attempts of one call when Redis is unreachable (then ConnectionFailed)
    retry_attempts: int = Field(5, ge=1)
    #: upper bound of one jittered backoff wait, seconds
    retry_max_wait: float = Field(1.0, ge=0)
    #: give up retrying one call after this many seconds
    retry_deadline: float = Field(10.0, gt=0)
    #: seconds between a Live handle's reconcile probes
    reconcile_interval: float = Field(5.0, gt=0)
    #: a Live handle's first wait before reconnecting (random in [0, this]), seconds
    reconnect_base_wait: float = Field(0.2, gt=0)
    #: upper bound of a Live handle's jittered, exponential reconnect backoff, seconds
    reconnect_max_wait: float = Field(5.0, gt=0)
    #: seconds between a Live handle's heartbeat reports (a report expires
    #: after three intervals unless renewed, and lives at most an hour;
    #: applied versions report at once)
    report_interval: float = Field(5.0, gt=0, le=1200)
    #: seconds between a Live handle's flushes of A/B exposure counts
    exposure_interval: float = Field(5.0, gt=0)
    #: Fernet keys that encrypt secret fields at rest (the first encrypts,
    #: all decrypt); empty: those of HOTPARAMS_SECRET_KEYS, if any
    secret_keys: tuple[SecretStr, ...] = ()
    #: load the Lua library when Redis has none or an older release (needs
    #: the ACL permission ``function|load``); False: never FUNCTION LOAD, and
    #: a missing or older library is an error saying to run ``hotparams install``
    auto_install: bool = True
    #: replicas that must acknowledge each write before it returns (``WAIT``;
    #: fewer raise ReplicationLagging, the write committed); 0: do not wait
    #: (Redis replicates asynchronously: a failover may lose the last writes)
    min_replica_acks: int = Field(0, ge=0, le=64)
    #: seconds a write waits for those acknowledgements (shorter than socket_timeout)
    replica_ack_timeout: float = Field(1.0, gt=0)
    #: live handles subscribe and read on a replica (found through the
    #: sentinels of a redis+sentinel:// URL; the master when none is up), so
    #: that one master takes the writes while replicas serve the subscribers;
    #: writes and fleet reports stay on the master.  A replica lags the
    #: master by its replication delay (milliseconds on a LAN): a handle may
    #: apply a change that much later
    follow_replicas: bool = False

    @model_validator(mode="after")
    def _ack_within_reply(self) -> Settings:
        if self.min_replica_acks and self.replica_ack_timeout >= self.socket_timeout:
            raise ValueError(
                "replica_ack_timeout must be shorter than socket_timeout "
                "(a write's WAIT runs within the wait for its reply)"
            )
        return self


def settings_from(values: dict[str, Any]) -> Settings:
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def invalid_url(url: str, exc: Exception) -> ConfigError:
    """The error of a URL redis-py refuses; its reason only when the URL
    holds no password (a mis-parsed URL may quote part of it)."""
    if url_secrets(url):
        return ConfigError(
            f"invalid Redis URL {redact_url(url)!r} "
            "(percent-encode any / # ? @ : in its user name and password)"
        )
    return ConfigError(f"invalid Redis URL {redact_url(url)!r}: {exc}")

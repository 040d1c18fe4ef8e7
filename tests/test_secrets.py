"""Secret values never reach the audit, history, diffs, errors, events or logs."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, Field, SecretStr

import hotparams

from .helpers import dump_namespace

SECRET = "sk-live-9f8e7d6c"
OTHER = "tok-abcdef-123"


class Creds(BaseModel):
    api_key: SecretStr = Field(SecretStr("sk-default-000"), min_length=8)
    token: str = Field("tok-default-0", json_schema_extra={"secret": True}, max_length=20)
    region: str = "eu"


def _everything_but_values(bus: hotparams.Bus) -> str:
    """The namespace's keys except the version hashes (which must hold the value)."""
    dump = dump_namespace(bus.client, "creds")
    return repr({k: v for k, v in dump.items() if ":v:" not in k})


def test_secret_values_are_masked_everywhere_but_the_values(
    bus: hotparams.Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bus.register("creds", Creds)
    pubsub = bus.client.pubsub()
    pubsub.ssubscribe("hp:{creds}:events")
    bus.set("creds", {"api_key": SECRET, "token": OTHER, "region": "us"})
    bus.set("creds", {"region": "ap"})
    bus.rollback("creds", 2)
    hotparams.Bus(bus.client).set("creds", {"token": OTHER + "x"})
    bus.client.fcall("hp_set", 1, "creds", "api_key", SECRET + "2")

    messages = []
    while (m := pubsub.get_message(timeout=0.5)) is not None:
        messages.append(m)
    pubsub.close()
    leaks = [SECRET, OTHER]
    places = {
        "audit and schema": _everything_but_values(bus),
        "history": repr(bus.history("creds", limit=100)),
        "diff": repr(bus.diff("creds", 1, 2)),
        "events": repr(messages),
        "snapshot repr": repr(bus.get("creds")),
        "snapshot without model": repr(hotparams.Bus(bus.client).get("creds")),
        "hp_show": repr(bus.client.fcall_ro("hp_show", 1, "creds")),
        "logs": caplog.text,
    }
    for place, text in places.items():
        for leak in leaks:
            assert leak not in text, f"secret leaked into {place}"
    assert len(messages) > 3
    # readers of the values still get them
    snap = bus.get("creds")
    assert snap.params.api_key.get_secret_value() == SECRET + "2"
    assert snap.params.token == OTHER + "x"
    assert bus.history("creds", limit=1)[0].changes["api_key"].new == hotparams.MASK


def test_errors_about_a_secret_do_not_echo_it(bus: hotparams.Bus) -> None:
    bus.register("creds", Creds)
    with pytest.raises(hotparams.InvalidParams) as info:
        bus.set("creds", {"api_key": "short"})
    assert "short" not in str(info.value)
    with pytest.raises(hotparams.InvalidParams) as info2:
        bus.set("creds", {"token": "t" * 30 + "LEAK"})
    assert "LEAK" not in str(info2.value)
    # no chained ValidationError carries the input along
    assert info2.value.__cause__ is None
    assert info2.value.__context__ is None

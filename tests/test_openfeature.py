"""hotparams.openfeature with the OpenFeature SDK's own client and event
handlers: typed flags, A/B variants by targeting key, metadata, the SDK's
error codes, configuration-changed, stale and ready events; sync and async."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

import hotparams
from hotparams.aio import connect as aconnect
from hotparams.openfeature import HotParamsProvider
from hotparams.server import LocalRedis
from tests.helpers import wait_until
from tests.models import ChatParams


class Events:
    """What the SDK's event handlers of one client received."""

    def __init__(self, client: OpenFeatureClient) -> None:
        self.got: list[tuple[ProviderEvent, EventDetails]] = []
        self.lock = threading.Lock()
        for event in ProviderEvent:
            client.add_handler(event, lambda details, event=event: self._add(event, details))

    def _add(self, event: ProviderEvent, details: EventDetails) -> None:
        with self.lock:
            self.got.append((event, details))

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        with self.lock:
            return [d for e, d in self.got if e == event]


@pytest.fixture
def flags(redis_url: str) -> Iterator[tuple[hotparams.Bus, OpenFeatureClient, Events]]:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    live = bus.watch("chat", ChatParams)
    api.set_provider_and_wait(HotParamsProvider(live), domain="sync")
    client = api.get_client("sync")
    events = Events(client)
    yield bus, client, events
    api.shutdown()
    live.close()
    bus.close()


def test_each_parameter_resolves_as_a_flag_of_its_type(
    flags: tuple[hotparams.Bus, OpenFeatureClient, Events],
) -> None:
    bus, client, _ = flags
    assert client.get_provider_status() == ProviderStatus.READY
    assert client.get_boolean_value("streaming", False) is True
    assert client.get_string_value("model", "x") == "gpt-4o-mini"
    assert client.get_integer_value("max_tokens", 0) == 512
    assert client.get_float_value("temperature", 0.0) == 0.7
    assert client.get_float_value("top_p", 0.0) == 1.0  # an integral float is a float
    assert client.get_object_value("stop", {"x": 1}) == []
    details = client.get_float_details("temperature", 0.0)
    head = bus.head("chat")
    assert details.reason == Reason.STATIC and details.variant is None
    assert details.error_code is None
    assert details.flag_metadata == {
        "namespace": "chat",
        "version": head.version,
        "epoch": head.epoch,
    }


def test_unknown_secret_and_mistyped_flags_get_the_sdks_error_codes(
    flags: tuple[hotparams.Bus, OpenFeatureClient, Events],
) -> None:
    _, client, _ = flags
    unknown = client.get_string_details("colour", "red")
    assert (unknown.value, unknown.error_code) == ("red", ErrorCode.FLAG_NOT_FOUND)
    secret = client.get_string_details("api_key", "none")
    assert (secret.value, secret.error_code) == ("none", ErrorCode.FLAG_NOT_FOUND)
    assert "sk-" not in str(secret.error_message)
    for details in (
        client.get_boolean_details("temperature", False),
        client.get_integer_details("streaming", 3),  # a bool is no integer
        client.get_string_details("max_tokens", "n"),
        client.get_object_details("model", {}),
        client.get_float_details("model", 1.5),
    ):
        assert details.error_code == ErrorCode.TYPE_MISMATCH, details
        assert details.reason == Reason.ERROR
    assert client.get_string_details("max_tokens", "n").value == "n"
    empty = client.get_string_details("fallback_model", "gpt-4o")  # null: the default
    assert (empty.value, empty.reason, empty.error_code) == ("gpt-4o", Reason.DEFAULT, None)


def test_the_targeting_key_selects_the_users_ab_variant(
    flags: tuple[hotparams.Bus, OpenFeatureClient, Events],
) -> None:
    bus, client, events = flags
    version = bus.set_variant("chat", "cool", {"temperature": 0.3}, users=["ana"])
    assert wait_until(
        lambda: any(
            d.metadata.get("version") == version
            for d in events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
        )
    )
    ana = client.get_float_details("temperature", 0.0, EvaluationContext(targeting_key="ana"))
    assert (ana.value, ana.reason, ana.variant) == (0.3, Reason.SPLIT, "cool")
    assert ana.flag_metadata["version"] == version
    bob = client.get_float_details("temperature", 0.0, EvaluationContext(targeting_key="bob"))
    assert (bob.value, bob.reason, bob.variant) == (0.7, Reason.STATIC, None)
    anonymous = client.get_float_details("temperature", 0.0)
    assert (anonymous.value, anonymous.reason) == (0.7, Reason.STATIC)
    api.set_evaluation_context(EvaluationContext(targeting_key="ana"))  # the global context
    try:
        assert client.get_float_value("temperature", 0.0) == 0.3
    finally:
        api.set_evaluation_context(EvaluationContext())


def test_every_applied_change_is_a_configuration_changed_event_naming_its_flags(
    flags: tuple[hotparams.Bus, OpenFeatureClient, Events],
) -> None:
    bus, client, events = flags
    v2 = bus.set("chat", {"temperature": 0.9, "max_tokens": 64})
    assert wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)) == 1)
    (changed,) = events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert changed.flags_changed == ["max_tokens", "temperature"]
    assert changed.metadata["version"] == v2
    assert client.get_integer_value("max_tokens", 0) == 64  # the handler's moment: served
    v3 = bus.set("chat", {"model": "claude-sonnet"})
    assert wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)) == 2)
    last = events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[-1]
    assert (last.flags_changed, last.metadata["version"]) == (["model"], v3)


def states(events: Events) -> list[str]:
    """The READY and STALE events, in order (a new handler hears READY at once)."""
    with events.lock:
        names = [e.name for e, _ in events.got]
    return [n for n in names if n in ("PROVIDER_READY", "PROVIDER_STALE")]


def test_stale_while_redis_is_down_and_ready_again_after(private_redis: LocalRedis) -> None:
    bus = hotparams.connect(private_redis.url)
    bus.register("chat", ChatParams)
    live = bus.watch("chat", ChatParams)
    api.set_provider_and_wait(HotParamsProvider(live), domain="outage")
    client = api.get_client("outage")
    events = Events(client)
    try:
        private_redis.stop()
        assert wait_until(lambda: client.get_provider_status() == ProviderStatus.STALE, 15)
        assert wait_until(lambda: states(events)[-1:] == ["PROVIDER_STALE"])
        assert client.get_float_value("temperature", 0.0) == 0.7  # the last good snapshot
        private_redis.start()  # empty: no persistence; the operator registers again
        writer = hotparams.connect(private_redis.url)
        writer.register("chat", ChatParams)
        assert wait_until(lambda: client.get_provider_status() == ProviderStatus.READY, 30)
        assert wait_until(lambda: states(events)[-2:] == ["PROVIDER_STALE", "PROVIDER_READY"])
        version = writer.set("chat", {"temperature": 1.1})
        assert wait_until(lambda: client.get_float_value("temperature", 0.0) == 1.1, 15)
        writer.close()
        assert live.current.version == version
        assert states(events).count("PROVIDER_STALE") == 1  # one outage, one STALE
    finally:
        api.shutdown()
        live.close()
        bus.close()


def test_an_async_handle_serves_the_async_client(redis_url: str) -> None:
    async def main() -> dict[str, Any]:
        bus = aconnect(redis_url)
        await bus.register("chat", ChatParams)
        live = await bus.watch("chat", ChatParams)
        api.set_provider_and_wait(HotParamsProvider(live), domain="async")
        client = api.get_client("async")
        events = Events(client)
        try:
            before = await client.get_float_details_async("temperature", 0.0)
            version = await bus.set("chat", {"temperature": 1.5})
            for _ in range(500):
                if events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED):
                    break
                await asyncio.sleep(0.01)
            after = await client.get_float_details_async("temperature", 0.0)
            mismatch = await client.get_boolean_details_async("temperature", True)
            return {
                "before": before.value,
                "after": (after.value, after.flag_metadata["version"] == version),
                "changed": [
                    d.flags_changed for d in events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
                ],
                "mismatch": mismatch.error_code,
            }
        finally:
            api.shutdown()
            await live.aclose()
            await bus.aclose()

    got = asyncio.run(main())
    assert got == {
        "before": 0.7,
        "after": (1.5, True),
        "changed": [["temperature"]],
        "mismatch": ErrorCode.TYPE_MISMATCH,
    }

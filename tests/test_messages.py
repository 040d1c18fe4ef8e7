"""One message for one mistake: a model bound to the Bus (pydantic), the Lua
functions in Redis, the CLI and the admin API say it in the same words."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from pydantic import BaseModel, Field

import hotparams
from hotparams.flask import AdminAPI, HotParams
from hotparams.messages import field_reason, number, one_line
from tests.helpers import dump_namespace
from tests.models import ChatParams
from tests.test_cli import run_cli

TOKEN = "messages-test-admin-token-0123456789abcdef"


class Rules(BaseModel):
    """One field per kind of rule the Lua functions check too."""

    ratio: float = Field(0.5, ge=0, le=2)
    open_ratio: float = Field(0.5, gt=0, lt=1)
    step: int = Field(10, multiple_of=5)
    count: int = Field(3, ge=1, le=32_000)
    name: str = Field("abc", min_length=2, max_length=5)
    tags: list[str] = Field(default_factory=list, min_length=0, max_length=2)
    pin: int = Field(1234, ge=1000, le=9999, json_schema_extra={"secret": True})


CASES = [
    ("le", {"ratio": 5}, "ratio: must be <= 2 (got 5)"),
    ("le-float", {"ratio": 2.5}, "ratio: must be <= 2 (got 2.5)"),
    ("ge", {"ratio": -1}, "ratio: must be >= 0 (got -1)"),
    ("gt", {"open_ratio": 0}, "open_ratio: must be > 0 (got 0)"),
    ("lt", {"open_ratio": 1}, "open_ratio: must be < 1 (got 1)"),
    ("multiple", {"step": 7}, "step: must be a multiple of 5 (got 7)"),
    ("big-int", {"count": 40_000}, "count: must be <= 32000 (got 40000)"),
    ("too-short", {"name": "a"}, "name: must be at least 2 characters (got 1)"),
    ("too-long", {"name": "abcdefg"}, "name: must be at most 5 characters (got 7)"),
    ("items", {"tags": ["a", "b", "c"]}, "tags: must have at most 2 items (got 3)"),
    ("secret", {"pin": 12}, "pin: must be >= 1000 (got ******)"),
    ("type", {"count": "many"}, "count: expected integer, got string"),
]


@pytest.fixture
def buses(redis_url: str) -> Iterator[tuple[hotparams.Bus, hotparams.Bus]]:
    """Two Buses on one namespace: one checks with the bound model first, the
    other leaves every check to the Lua functions."""
    plain = hotparams.connect(redis_url)
    plain.register("rules", Rules)
    bound = hotparams.connect(redis_url)
    bound.bind("rules", Rules)
    yield bound, plain
    bound.close()
    plain.close()


def invalid(bus: hotparams.Bus, values: dict[str, Any]) -> str:
    with pytest.raises(hotparams.InvalidParams) as info:
        bus.set("rules", values)
    return str(info.value)


@pytest.mark.parametrize(("values", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bound_model_and_the_lua_functions_say_a_broken_rule_in_the_same_words(
    buses: tuple[hotparams.Bus, hotparams.Bus], values: dict[str, Any], expected: str
) -> None:
    bound, plain = buses
    before = dump_namespace(plain.client, "rules")
    assert (
        invalid(bound, values)
        == invalid(plain, values)
        == (f"invalid parameters for 'rules': {expected}")
    )
    assert dump_namespace(plain.client, "rules") == before


def test_validator_messages_stay_the_models_own(buses: tuple[hotparams.Bus, hotparams.Bus]) -> None:
    bound, _ = buses
    bound.bind("rules", ChatParams)  # the model's own rule, said by the model
    with pytest.raises(hotparams.InvalidParams, match="quiet_from must be <= quiet_to"):
        bound.set("rules", {"quiet_from": 5})


def test_the_admin_api_says_what_the_cli_says_without_a_model(redis_url: str) -> None:
    """The README's promise: the admin API's message is the CLI's, and both
    are the Lua functions' words (the CLI checks without a model)."""
    hp: HotParams[Rules] = HotParams(
        namespace="chat", model=Rules, register=True, admin=AdminAPI(token=TOKEN)
    )
    app = Flask(__name__)
    app.config["HOTPARAMS_URL"] = redis_url
    hp.init_app(app)
    try:
        response = app.test_client().patch(
            "/hotparams/chat",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"values": {"ratio": 5}},
        )
    finally:
        hp.close(app)
    assert response.status_code == 400
    cli = run_cli(redis_url, "set", "chat", "ratio=5")
    assert cli.code == 3
    message = "invalid parameters for 'chat': ratio: must be <= 2 (got 5)"
    assert response.get_json()["message"] == message
    assert cli.err == f"hotparams: error: {message}\n"


def test_numbers_are_written_as_lua_writes_them() -> None:
    assert [number(2), number(2.0), number(0.5), number(1e20), number(-3)] == [
        "2",
        "2",
        "0.5",
        "1e+20",
        "-3",
    ]
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert field_reason({"type": "value_error", "msg": "nope"}) is None

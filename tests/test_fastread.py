"""Field reads of served snapshots are specialised by CPython 3.11 and behave as pydantic's."""

from __future__ import annotations

import dis
import pickle
import sys
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError

from hotparams.fastread import generic_reads, reads_are_generic
from hotparams.schema import AnyParams, ParamSchema

from .models import ChatParams

needs_311 = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="only CPython 3.11 needs the generic hook back"
)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)
    temperature: float = Field(0.7, ge=0, le=2)


class Secret(BaseModel):
    api_key: SecretStr = SecretStr("sk-hidden")
    temperature: float = 0.7


class Private(BaseModel):
    temperature: float = 0.7
    _calls: int = PrivateAttr(3)


class Hooked(BaseModel):
    temperature: float = 0.7

    def __getattr__(self, name: str) -> str:
        return f"hooked {name}"


def _opcodes(obj: object) -> list[str]:
    """How CPython runs ``obj.temperature`` once warm (a fresh code object per call)."""
    scope: dict[str, Any] = {}
    exec(compile("def read(p):\n    return p.temperature\n", "<read>", "exec"), scope)
    read = scope["read"]
    for _ in range(20):  # CPython specialises after a few runs
        read(obj)
    return [i.opname for i in dis.get_instructions(read, adaptive=True) if "ATTR" in i.opname]


@needs_311
@pytest.mark.parametrize("model", [ChatParams, Frozen, Secret])
def test_reads_of_a_served_model_are_specialised(model: type[BaseModel]) -> None:
    params = ParamSchema.of(model).validate("ns", {"temperature": 0.5})
    assert reads_are_generic(type(params))
    assert _opcodes(params) == ["LOAD_ATTR_WITH_HINT"]
    plain = model.model_validate({"temperature": 0.5})  # the user's own class is left alone
    assert not reads_are_generic(model) and _opcodes(plain) == ["LOAD_ATTR_ADAPTIVE"]


@pytest.mark.parametrize("model", [ChatParams, Frozen, Secret])
def test_a_served_model_keeps_the_pydantic_contract(model: type[BaseModel]) -> None:
    schema = ParamSchema.of(model)
    params = schema.validate("ns", {"temperature": 0.5})
    plain = model.model_validate({"temperature": 0.5})
    assert isinstance(params, model) and isinstance(params, BaseModel)
    assert (
        params == plain
        and plain == params
        and hash(params) == hash(schema.validate("ns", {"temperature": 0.5}))
    )
    assert type(params).__name__ == model.__name__
    assert params.model_dump() == plain.model_dump()
    assert params.model_copy(update={"temperature": 0.1}).temperature == 0.1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(params)) == params
    with pytest.raises(AttributeError, match=f"'{model.__name__}' object has no attribute 'nope'"):
        _ = params.nope  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        params.temperature = 1.0  # type: ignore[misc]


def test_a_frozen_model_served_hashes_like_its_own_instances() -> None:
    params = ParamSchema.of(Frozen).validate("ns", {"temperature": 0.5})
    mine = Frozen(temperature=0.5)
    assert params == mine and hash(params) == hash(mine) and len({params, mine}) == 1


def test_models_that_need_getattr_keep_it() -> None:
    private = ParamSchema.of(Private).validate("ns", {})
    assert private._calls == 3 and not reads_are_generic(type(private))
    hooked = ParamSchema.of(Hooked).validate("ns", {})
    assert hooked.anything == "hooked anything" and not reads_are_generic(type(hooked))
    extra = type("Extra", (AnyParams,), {"__module__": __name__})  # extra fields: kept
    assert not generic_reads(extra) and extra.model_validate({"stored": 1}).stored == 1

"""Parameter models shared by the tests."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr

from hotparams import Check


class Tone(StrEnum):
    plain = "plain"
    friendly = "friendly"


class ChatParams(BaseModel):
    #: a declared check, so Redis enforces it for raw writers too
    hotparams_checks: ClassVar[tuple[Check, ...]] = (Check("quiet_from", "<=", "quiet_to"),)

    model: Literal["gpt-4o", "gpt-4o-mini", "claude-sonnet"] = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1, le=32_000)
    system_prompt: str = Field("You are a helpful assistant.", min_length=1, max_length=4000)
    stop: list[str] = Field(default_factory=list, max_length=4)
    tone: Tone = Tone.plain
    streaming: bool = True
    fallback_model: str | None = None
    quiet_from: int = Field(0, ge=0, le=24)
    quiet_to: int = Field(0, ge=0, le=24)
    api_key: SecretStr = SecretStr("sk-test-default")


class PairParams(BaseModel):
    """Two fields a writer always changes together: a torn read shows a != b."""

    a: int = 0
    b: int = 0
    note: str = ""


class ChatParamsV1(BaseModel):
    """An older release of a chat schema (the migration tests of the CLI)."""

    temperature: float = Field(0.7, ge=0, le=2)
    legacy: str = "x"
    tokens: int = 256


class ChatParamsV2(BaseModel):
    """ChatParamsV1 with legacy dropped and tokens renamed to max_tokens."""

    temperature: float = Field(0.7, ge=0, le=1)
    max_tokens: int = Field(512, ge=1, le=8192)

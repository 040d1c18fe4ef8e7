"""The parameters of the ``chat`` namespace: what operators tune live.

The chat workers and the web app import this one model, so both validate a
change the same way (cross-field rules included) and register the same
schema (registering is idempotent).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

__all__ = ["CONNECTION_FIELDS", "NAMESPACE", "ChatParams", "in_quiet_hours"]

#: the namespace the fleet reads, unless HOTPARAMS_NAMESPACE says otherwise
NAMESPACE = "chat"

#: fields an LLM client is built from: a change of one of them rebuilds it;
#: anything else (model, temperature, prompt ...) goes with each request
CONNECTION_FIELDS = frozenset({"api_base", "api_key", "request_timeout", "retries"})

Model = Literal["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3.1-70b"]


class ChatParams(BaseModel):
    """An LLM chat service's runtime parameters; the defaults are version 1."""

    model: Model = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=32_000)
    top_p: float = Field(1.0, gt=0, le=1)
    system_prompt: str = Field("You are a helpful assistant.", min_length=1, max_length=4000)
    #: past turns of the conversation sent with each request
    history_length: int = Field(10, ge=0, le=100)
    #: seconds one LLM call may take, and how often a failed call is retried
    request_timeout: float = Field(30.0, gt=0, le=300)
    retries: int = Field(2, ge=0, le=10)
    #: hours (UTC, 0-23) during which replies are capped at ``quiet_max_tokens``
    #: (cheaper at night); both unset: no quiet hours.  The window may wrap
    #: midnight (22 -> 6).
    quiet_from: int | None = Field(None, ge=0, le=23)
    quiet_to: int | None = Field(None, ge=0, le=23)
    quiet_max_tokens: int = Field(256, ge=1, le=32_000)
    api_base: str = Field("https://llm.internal.example/v1", min_length=1, max_length=200)
    api_key: SecretStr = SecretStr("sk-demo-0000")

    @model_validator(mode="after")
    def quiet_hours_are_a_window(self) -> ChatParams:
        if (self.quiet_from is None) != (self.quiet_to is None):
            raise ValueError("quiet_from and quiet_to are set together (or both left unset)")
        if self.quiet_from is not None and self.quiet_from == self.quiet_to:
            raise ValueError("quiet_from and quiet_to must differ (an empty window)")
        return self


def in_quiet_hours(params: ChatParams, hour: int) -> bool:
    """Whether ``hour`` (0-23, UTC) falls in the quiet window ``[from, to)``."""
    start, end = params.quiet_from, params.quiet_to
    if start is None or end is None:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end  # wraps midnight

"""A five-minute tour of hotparams (the README's first command runs it).

Uses the Redis at HOTPARAMS_URL, or starts a private redis-server.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field, SecretStr

import hotparams
from hotparams.server import LocalRedis


class ChatParams(BaseModel):
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=32_000)
    api_key: SecretStr = SecretStr("sk-demo")


def tour(url: str) -> None:
    bus = hotparams.connect(url)
    bus.register("tour", ChatParams)
    print("registered:", bus.get("tour").params)

    v = bus.set(
        "tour", {"temperature": 0.9, "model": "gpt-4o"}, author="ana", reason="warmer replies"
    )
    print(f"version {v}:", bus.get("tour").params)

    try:
        bus.set("tour", {"temperature": 5})
    except hotparams.InvalidParams as exc:
        print("rejected:", exc)

    try:
        bus.set("tour", {"max_tokens": 1024}, expect_version=v - 1)
    except hotparams.VersionConflict as exc:
        print("conflict:", exc)

    v = bus.rollback("tour", v - 1, author="ana", reason="back to the old model")
    print(f"rolled back as version {v}:", bus.get("tour").params)

    for change in bus.history("tour", limit=3):
        fields = ", ".join(f"{k}: {c.old!r} -> {c.new!r}" for k, c in change.changes.items())
        print(f"  v{change.version} {change.op} by {change.author}: {fields}")
    bus.close()


def main() -> None:
    url = os.environ.get("HOTPARAMS_URL")
    if url:
        tour(url)
        return
    with LocalRedis() as server:
        tour(server.url)


if __name__ == "__main__":
    main()

"""A simulated LLM client: the shape of a real one (connection settings at
construction, sampling settings per request, timeout and retries), no network.

A reply is computed from the request (deterministic for a given prompt,
model and temperature), after a short simulated latency.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .params import ChatParams

__all__ = ["Completion", "Connection", "LLMClient", "Message", "connection_of"]

_ids = itertools.count(1)
_ids_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Connection:
    """What a client is built from (a change of any of these needs a new client)."""

    api_base: str
    api_key: str
    request_timeout: float
    retries: int

    def __repr__(self) -> str:  # the key never shows
        return (
            f"Connection(api_base={self.api_base!r}, api_key='******', "
            f"request_timeout={self.request_timeout}, retries={self.retries})"
        )


def connection_of(params: ChatParams) -> Connection:
    """The connection fields of a parameter set (``CONNECTION_FIELDS``)."""
    return Connection(
        api_base=params.api_base,
        api_key=params.api_key.get_secret_value(),
        request_timeout=params.request_timeout,
        retries=params.retries,
    )


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    attempts: int


class LLMClient:
    """One simulated connection to an LLM API; thread-safe, immutable settings."""

    def __init__(self, connection: Connection, *, latency_s: float = 0.02) -> None:
        self.connection = connection
        self.latency_s = latency_s
        with _ids_lock:
            self.id = next(_ids)
        self.closed = False

    def __repr__(self) -> str:
        return f"<LLMClient #{self.id} {self.connection.api_base}>"

    def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float,
        top_p: float,
        max_tokens: int,
        latency_s: float | None = None,
    ) -> Completion:
        """One chat completion (simulated); raises TimeoutError past the timeout."""
        if self.closed:
            raise RuntimeError("this client was closed")
        started = time.monotonic()
        wait = self.latency_s if latency_s is None else latency_s
        attempts = 1
        if wait > self.connection.request_timeout:
            attempts += self.connection.retries
            raise TimeoutError(
                f"{model}: no reply within {self.connection.request_timeout} s "
                f"({attempts} attempts)"
            )
        time.sleep(wait)
        prompt = "\n".join(m.content for m in messages)
        digest = hashlib.blake2b(
            f"{model}|{temperature}|{top_p}|{prompt}".encode(), digest_size=4
        ).hexdigest()
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = min(max_tokens, 20 + int(digest, 16) % 200)
        text = f"[{model} t={temperature:g}] reply {digest} ({completion_tokens} tokens)"
        return Completion(
            text=text,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=(time.monotonic() - started) * 1000,
            attempts=attempts,
        )

    def close(self) -> None:
        self.closed = True

"""The fleet's simulated LLM client: :mod:`hotparams.demo.llm` (no network)."""

from hotparams.demo.llm import Completion, Connection, LLMClient, Message, connection_of

__all__ = ["Completion", "Connection", "LLMClient", "Message", "connection_of"]

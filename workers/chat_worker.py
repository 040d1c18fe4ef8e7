"""The fleet's LLM chat worker: ``python -m workers.chat_worker --name chat-1``.

It is :mod:`hotparams.demo.worker`, shipped in the package so that
``hotparams demo`` runs it from an installed wheel too; see there.
"""

import sys

from hotparams.demo.worker import ChatRequest, ChatWorker, main, parse_args

__all__ = ["ChatRequest", "ChatWorker", "main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())

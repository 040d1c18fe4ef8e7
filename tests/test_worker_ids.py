"""Two handles on one namespace in one process report as two workers."""

from __future__ import annotations

import hotparams

from .helpers import wait_until
from .models import ChatParams


def test_two_handles_in_one_process_get_distinct_worker_ids(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    first = bus.watch("chat", ChatParams, worker_name="web")
    second = bus.watch("chat", ChatParams, worker_name="web")
    other_ns = None
    try:
        assert first.worker_id != second.worker_id
        assert second.worker_id == f"{first.worker_id}#2"
        assert wait_until(lambda: len(bus.workers("chat")) == 2)
        bus.register("rag", ChatParams)
        other_ns = bus.watch("rag", ChatParams, worker_name="web")
        assert other_ns.worker_id == first.worker_id  # ids are per namespace
    finally:
        second.close()
        first.close()
        if other_ns is not None:
            other_ns.close()
    assert bus.workers("chat") == []
    again = bus.watch("chat", ChatParams, worker_name="web")
    assert again.worker_id == first.worker_id  # a closed handle's id is free again
    again.close()
    bus.close()

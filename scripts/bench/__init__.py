"""hotparams benchmarks, side by side with what users would pick instead.

    .venv/bin/python -m scripts.bench [--quick] [--only read,propagation,scale,write]

Each section starts its own private redis-server (hotparams.server.LocalRedis)
and runs every comparison of that section in the same invocation, rounds
interleaved so that noise hits all cases alike; results are medians and p99
over rounds, plus the ratio to the section's baseline.  The run writes a JSON
file and renders BENCHMARKS.md from it (see scripts/bench/run.py).

Sections (modules of this package):

- ``reads``: ``live.current.params.x`` against a plain attribute read, a
  locked dict, django-constance's Redis backend (a round trip per read) and
  its caching backend (a TTL cache), idle and under 1,000 updates/s.
- ``propagation``: publish-to-applied latency of 1/16/64 worker processes next
  to as many bare redis-py subscribers, and interval pollers (1 s, 100 ms):
  staleness and Redis load.
- ``scale``: 1,000 AsyncLive handles over a few processes; Redis memory per
  namespace and per retained version.
- ``writes``: ``Bus.set`` and ``Bus.set_many`` against a bare FCALL of the
  same function, with Redis's own time per change.
"""

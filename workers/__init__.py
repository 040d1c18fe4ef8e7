"""Runnable members of an example fleet (DESIGN.md's AI chat service).

- :mod:`workers.params`: the ``chat`` namespace's parameters (one model for the fleet)
- :mod:`workers.llm`: a simulated LLM client (no network)
- :mod:`workers.chat_worker`: an LLM chat worker (``python -m workers.chat_worker``)

(those three are :mod:`hotparams.demo`'s, shipped in the package so that
``hotparams demo`` runs from an installed wheel)
- :mod:`workers.web`: a Flask web app on :mod:`hotparams.flask`, served by gunicorn
  with ``--preload`` (``gunicorn -c workers/gunicorn.conf.py``)
- :mod:`workers.healthcheck`: the container healthchecks of docker-compose.yml
"""

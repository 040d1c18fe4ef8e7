# One image for the whole example fleet (docker-compose.yml): the web app
# under gunicorn and the LLM chat workers, both from workers/.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# the package first (a change to workers/ does not reinstall it)
COPY pyproject.toml README.md ./
COPY hotparams ./hotparams
RUN pip install ".[fleet]"

COPY workers ./workers

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin hotparams
USER hotparams

EXPOSE 8000
# the web app; the chat workers override the command (docker-compose.yml)
CMD ["gunicorn", "--config", "workers/gunicorn.conf.py"]

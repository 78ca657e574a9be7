# syntax=docker/dockerfile:1
# One image for every service of the gateway. Pick the service with the command:
#
#   docker run IMAGE python -m services.session_actor    (also: outbound_queue, persistence,
#                                                          health_monitor, wa_sim)
#
# Everything is configured through WA_* environment variables (services/common/config.py).
# Without a command the container prints this usage and exits.
#
# Note: neonize ships its Go library per platform; this builds for linux/amd64 (the wheel the
# project pins). Other platforms need neonize's wheel for that platform.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build: a self-contained venv
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what `pip install .` needs (pyproject.toml names README.md as the readme).
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY services ./services
RUN pip install --upgrade pip \
 && pip install . \
 && python -c "import contracts, services.common.config"

# -------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

# libmagic1: python-magic (imported by neonize) loads it at import time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so Kubernetes `runAsNonRoot` can verify it.
RUN groupadd --system --gid 10001 wa \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/wa --create-home \
        --shell /usr/sbin/nologin wa \
 && mkdir -p /data \
 && chown 10001:10001 /data

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WA_DATA_DIR=/data \
    WA_LOG_FORMAT=json

WORKDIR /home/wa
USER 10001:10001

# health-monitor listens on 8080 (WA_HEALTH_PORT), http-gateway on 8081 (WA_HTTP_PORT); the
# other services open only their metrics port.
EXPOSE 8080 8081

CMD ["python", "-c", "import sys; sys.exit('usage: python -m services.<session_actor|outbound_queue|persistence|health_monitor|http_gateway|wa_sim>\\nconfigure with WA_* environment variables (WA_NATS_URL, WA_MONGO_URL, WA_VAULT_KEYS, ...); see services/common/config.py')"]

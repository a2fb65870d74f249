# syntax=docker/dockerfile:1
# twilio-proxy-poller image. Build: docker build -t twilio-proxy-poller .
# Run (docs/deployment.md): config at /etc/poller/config.yaml, secrets under /run/secrets,
# state in the volume /var/lib/poller. Use `docker run --init` so signals and orphans are
# handled by a real init (the image ships none, see below).

# ---- builder: the project's wheel and every dependency's wheel, nothing installed ----------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY poller ./poller

# First the project alone, then the wheels of its dependencies (resolved from its metadata),
# so the final stage installs from /wheels with no index at all.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/twilio_proxy_poller-*.whl

# ---- final: the runtime only ----------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POLLER_CONFIG=/etc/poller/config.yaml \
    POLLER_LOG_FORMAT=json \
    POLLER_LOG_LEVEL=info

# The wheels are bind-mounted from the builder, never copied: they do not bloat a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/twilio_proxy_poller-*.whl

# A fixed numeric identity, so Kubernetes runAsNonRoot and volume ownership can be checked.
# No tini from apt: PID 1 is `poller`, which handles SIGTERM/SIGINT itself and starts no child
# processes; operators who want an init add `docker run --init` (documented).
RUN groupadd --system --gid 10001 poller \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin poller \
 && mkdir -p /etc/poller /var/lib/poller \
 && chown 10001:10001 /var/lib/poller \
 && chmod 0700 /var/lib/poller

COPY docker/healthcheck.py /usr/local/lib/poller/healthcheck.py

WORKDIR /var/lib/poller
VOLUME /var/lib/poller
EXPOSE 9108
USER 10001:10001

# Liveness from /healthz with Python's urllib (no curl in the image). The config must enable
# `http.listen` on port 9108 (or set POLLER_HEALTHCHECK_URL).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/poller/healthcheck.py"]

ENTRYPOINT ["poller"]
CMD ["run", "-c", "/etc/poller/config.yaml"]

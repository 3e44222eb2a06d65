# ccbridge container image.
#
#   docker build -t ccbridge:0.1.0 .
#   docker run --rm -p 4317:4317 -p 4318:4318 -p 9464:9464 -v ccbridge-data:/var/lib/ccbridge ccbridge:0.1.0
#
# The builder stage installs the project into a virtual environment exactly as the README does (`pip install .`);
# the runtime stage copies only that environment. CI (scripts/check-deploy image) replays the builder stage's
# COPY and RUN instructions on the host, then validates the default config and probes /healthz with the
# HEALTHCHECK command below, so a change here that breaks the install fails CI even without a Docker engine.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY exporters ./exporters
RUN python -m venv /opt/ccbridge \
    && /opt/ccbridge/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ccbridge" \
      org.opencontainers.image.description="Audit pipeline for Claude Code telemetry: OTLP in, audit records out." \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 ccbridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ccbridge --no-create-home \
       --shell /usr/sbin/nologin ccbridge \
    && mkdir -p /var/lib/ccbridge /etc/ccbridge \
    && chown 10001:10001 /var/lib/ccbridge
COPY --from=builder /opt/ccbridge /opt/ccbridge
COPY deploy/ccbridge.container.yaml /etc/ccbridge/config.yaml
ENV PATH=/opt/ccbridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    CCBRIDGE_HEALTHCHECK_URL=http://127.0.0.1:9464/healthz
USER 10001:10001
WORKDIR /var/lib/ccbridge
VOLUME ["/var/lib/ccbridge"]
EXPOSE 4317 4318 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; u = os.environ['CCBRIDGE_HEALTHCHECK_URL']; sys.exit(0 if urllib.request.urlopen(u, timeout=4).status == 200 else 1)"]
ENTRYPOINT ["ccbridge"]
CMD ["run", "--config", "/etc/ccbridge/config.yaml"]

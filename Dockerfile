# One image for every part of mcp-fleet: the controller, the Kubernetes operator,
# the router and the stdio bridge (`mcp-fleet <command>`). It also carries the
# example servers (mcp-server-time and mcp-fleet's own), so examples/k8s runs
# with nothing else to pull.
#
#   docker build -t mcp-fleet:0.1.0 .
#
# Stage 1 builds a virtual environment; stage 2 copies only that environment
# onto the same slim base, so no compiler, pip cache or source tree ships.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/mcp-fleet
WORKDIR /src
# Dependencies first, so a source change does not re-install them.
COPY pyproject.toml README.md ./
RUN mkdir -p controller/mcp_fleet && touch controller/mcp_fleet/__init__.py \
 && /opt/mcp-fleet/bin/pip install . \
 && /opt/mcp-fleet/bin/pip uninstall -y mcp-fleet
COPY controller ./controller
# Precompile everything: the root filesystem is read-only at run time.
RUN /opt/mcp-fleet/bin/pip install --no-deps . \
 && /opt/mcp-fleet/bin/python -m compileall -q /opt/mcp-fleet/lib \
 && /opt/mcp-fleet/bin/mcp-fleet --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mcp-fleet" \
      org.opencontainers.image.description="Reconciling controller, Kubernetes operator, router and stdio bridge for fleets of MCP servers" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed non-root user; pods may run the image as any other non-root uid
# (server pods default to 65534): everything under /opt is world-readable.
RUN groupadd --system --gid 10001 mcp-fleet \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin mcp-fleet
COPY --from=build /opt/mcp-fleet /opt/mcp-fleet
ENV PATH=/opt/mcp-fleet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
# 8080: bridge / HTTP servers, 8081: operator liveness, 8811: router.
EXPOSE 8080 8081 8811
ENTRYPOINT ["mcp-fleet"]
CMD ["--help"]

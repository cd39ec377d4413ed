# dirac-sidecar with HAProxy in one image: the sidecar supervises HAProxy (master-worker) or
# attaches to one started by another container sharing the network namespace and the runtime
# directory. Built with the same install script as the README.
#
#   docker build -t dirac-sidecar .
#   docker run --network host \
#     -v /etc/dirac-sidecar:/etc/dirac-sidecar:ro \
#     -v /etc/grid-security:/etc/grid-security:ro \
#     -v dirac-sidecar-run:/run/dirac-sidecar dirac-sidecar
FROM python:3.11-slim-bookworm

# tini is PID 1: it forwards signals to the daemon and reaps zombies (HAProxy's old workers
# are reparented to PID 1 when the sidecar restarts).
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tini ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dirac-sidecar
COPY . .
ENV SIDECAR_VENV=/opt/dirac-sidecar/.venv SIDECAR_EXTRAS=""
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/* .deps/apt \
    && ln -s /opt/dirac-sidecar/.venv/bin/sidecar /usr/local/bin/sidecar \
    && { [ -x .deps/bin/consul ] && ln -s /opt/dirac-sidecar/.deps/bin/consul /usr/local/bin/consul || true; }

ENV SIDECAR_CONFIG=/etc/dirac-sidecar/sidecar.toml
VOLUME ["/run/dirac-sidecar"]
# `sidecar check` exits 0/1/2/3 (Nagios); Docker reserves 2, so any failure becomes 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD sidecar check || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "sidecar"]
CMD ["run"]

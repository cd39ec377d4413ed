# dirac-sidecar with HAProxy in one image: the sidecar supervises HAProxy (master-worker) or
# attaches to one started by another container sharing the network namespace and the runtime
# directory. The image holds the built wheel installed in a venv, nothing of the source tree
# (no tests/, bench/, .git).
#
#   docker build -t dirac-sidecar .
#   docker run --network host \
#     -v /etc/dirac-sidecar:/etc/dirac-sidecar:ro \
#     -v /etc/grid-security:/etc/grid-security:ro \
#     -v dirac-sidecar-run:/run/dirac-sidecar dirac-sidecar

# -- build: the wheel, from the package sources only -----------------------------------------
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN pip wheel --no-cache-dir --no-deps -w /dist .

# -- runtime: Debian's HAProxy, tini, the wheel in a venv ------------------------------------
FROM python:3.11-slim-bookworm
# tini is PID 1: it forwards signals to the daemon and reaps zombies (HAProxy's old workers
# are reparented to PID 1 when the sidecar restarts).
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        haproxy tini ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /dist/ /tmp/dist/
RUN python -m venv /opt/dirac-sidecar \
    && /opt/dirac-sidecar/bin/pip install --no-cache-dir --disable-pip-version-check /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && ln -s /opt/dirac-sidecar/bin/sidecar /usr/local/bin/sidecar
# A dedicated account: the daemon and HAProxy run unprivileged (DIRAC's ports are above 1024;
# give the container CAP_NET_BIND_SERVICE only if a public port below 1024 is configured).
RUN useradd --system --no-create-home --home-dir /run/dirac-sidecar --shell /usr/sbin/nologin \
        dirac-sidecar \
    && install -d -o dirac-sidecar -g dirac-sidecar -m 0700 /run/dirac-sidecar
USER dirac-sidecar
ENV SIDECAR_CONFIG=/etc/dirac-sidecar/sidecar.toml
VOLUME ["/run/dirac-sidecar"]
# `sidecar check` exits 0/1/2/3 (Nagios); Docker reserves 2, so any failure becomes 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD sidecar check || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "sidecar"]
CMD ["run"]

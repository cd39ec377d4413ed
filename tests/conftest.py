"""Shared pytest fixtures: a throwaway PKI, a real Consul dev agent and sample TLS backends.

Fixtures:
- ``pki`` (session): :class:`devkit.pki.DevPKI` with gateway names ``GATEWAY_NAMES`` and
  host certificates for ``BACKEND_HOSTS`` (SANs: host, every gateway name, localhost,
  127.0.0.1), user ``alice``, proxy with DIRAC group ``dirac_user``.
- ``consul_agent`` (module): a started :class:`devkit.consul_agent.ConsulAgent`; stopped
  by PID (SIGTERM then SIGKILL) at module teardown. Skips when no consul binary is found.
- ``backend_factory`` (function): ``start(host="backend1", name=..., instance=None,
  process=False, cert=None, key=None)`` starts a sample backend on a free 127.0.0.1 port
  (in-process, or a child process with ``process=True`` so a test can kill it); all are
  stopped at teardown.

Tests that use ``consul_agent`` or ``backend_factory``, and everything under
``tests/integration``, are marked ``integration`` automatically (``-m "not integration"``).
``tests/helpers.py`` (``free_port``, ``wait_until``) is importable as ``helpers``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devkit.backend import BackendServer, start_backend
from devkit.backendproc import BackendProcess, backend_args
from devkit.consul_agent import ConsulAgent, find_consul
from devkit.pki import DevPKI, make_dev_pki

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make ``import helpers`` work

GATEWAY_NAMES = ("dirac-gw.test", "localhost")
BACKEND_HOSTS = ("backend1", "backend2", "backend3")
INTEGRATION_FIXTURES = {"consul_agent", "backend_factory"}

Backend = BackendServer | BackendProcess
BackendFactory = Callable[..., Backend]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & INTEGRATION_FIXTURES or "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    directory = tmp_path_factory.mktemp("pki")
    return make_dev_pki(directory, GATEWAY_NAMES, BACKEND_HOSTS, user="alice", group="dirac_user")


@pytest.fixture(scope="module")
def consul_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    try:
        binary = find_consul()
    except FileNotFoundError:
        pytest.skip("no consul binary")
    agent = ConsulAgent(workdir=tmp_path_factory.mktemp("consul"), binary=binary)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop(timeout=10)


@pytest.fixture
def backend_factory(pki: DevPKI, tmp_path: Path) -> Iterator[BackendFactory]:
    started: list[Backend] = []

    def start(
        host: str = "backend1",
        name: str = "Framework/Sample",
        instance: str | None = None,
        process: bool = False,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> Backend:
        cert = cert or pki.host_cert(host)
        key = key or pki.host_key(host)
        backend: Backend
        if process:
            args = backend_args("127.0.0.1:0", cert, key, ca_dir=pki.ca_dir, name=name,
                                instance=instance)  # fmt: skip
            backend = BackendProcess(args, log=tmp_path / f"backend-{len(started)}.log")
            started.append(backend)
            backend.start(timeout=15)
        else:
            backend = start_backend(cert, key, ca_dir=pki.ca_dir, name=name, instance=instance)
            started.append(backend)
        return backend

    yield start
    for backend in reversed(started):
        backend.stop(timeout=5)

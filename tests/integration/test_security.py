"""Security properties on real processes (issue 6).

- the admin and master sockets are owner-only (0600) in an owner-only (0700) directory;
- the metrics and health endpoint listens on loopback by default;
- the Consul ACL token (``token_file`` or ``CONSUL_HTTP_TOKEN``) never appears in the daemon's
  DEBUG log, in ``/proc/<pid>/cmdline`` of the daemon or of HAProxy, in any file of the runtime
  directory, nor in the output of ``sidecar render`` / ``sidecar check``;
- Consul over HTTPS with CA verification and a client certificate, against a real Consul 1.8
  agent with ``verify_incoming``/``verify_outgoing`` and plain HTTP disabled; a wrong CA or a
  missing client certificate fails clearly.

Settings files and templates writable by others are refused: ``tests/unit/test_settings.py``
(``test_files_writable_by_others_are_refused``, ``test_templates_writable_by_others_are_refused``).
"""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from faultlib import FaultAgent, gateway_on
from gatewaylib import Gateway, sidecar_command
from helpers import at_rest, wait_until

from devkit.consul_agent import ConsulAgent
from devkit.pki import DevCA, DevPKI
from sidecar.base.validate import parse_listen
from sidecar.config.ops import StatusSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ALPHA = "Framework/GwAlpha"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sockets_owner_only_and_status_endpoint_on_loopback(
    gateway: Gateway, backend_factory
) -> None:
    gateway.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gateway.wait_routed(gateway.ports[ALPHA], "a1")
    assert mode(gateway.runtime_dir) == 0o700
    for name in ("admin.sock", "master.sock"):
        sock = gateway.runtime_dir / name
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert mode(sock) == 0o600, f"{name}: {mode(sock):o}"
    for path in at_rest(gateway.runtime_dir):  # nothing in there is writable by others
        assert not mode(path) & 0o022, f"{path.name}: {mode(path):o}"
    # The shipped default, and what the running daemon really listens on.
    host, _ = parse_listen(StatusSettings().listen)
    assert ipaddress.ip_address(host).is_loopback
    listening = [
        c.laddr
        for c in psutil.Process(gateway.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "the status endpoint listens"
    assert all(ipaddress.ip_address(addr.ip).is_loopback for addr in listening), listening


def _cmdlines(gw: Gateway) -> list[bytes]:
    pids = [gw.pid] + [p.pid for p in gw.haproxy_processes()]
    return [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]


def assert_token_nowhere(gw: Gateway, token: str) -> None:
    secret = token.encode()
    assert token not in gw.log_text(), "token in the daemon log"
    cmdlines = _cmdlines(gw)
    assert len(cmdlines) >= 3  # daemon, master, worker
    assert not any(secret in line for line in cmdlines), "token in a command line"
    for path in at_rest(gw.runtime_dir):
        if path.is_file():
            assert secret not in path.read_bytes(), f"token in {path.name}"


def test_token_file_never_leaks(gateway_unstarted: Gateway, backend_factory) -> None:
    gw = gateway_unstarted
    token = str(uuid.uuid4())
    token_file = gw.tmp / "consul.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    text = gw.config_text().replace("[consul]\n", f'[consul]\ntoken_file = "{token_file}"\n')
    gw.write_config(text)
    gw.start()
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "a1")
    assert "DEBUG" in gw.log_text()  # the log really is at DEBUG level
    assert_token_nowhere(gw, token)
    code, out = _cli(gw, {}, "render")
    assert code == 0 and token not in out


def _cli(gw: Gateway, env: dict[str, str], *args: str) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    proc = subprocess.run([*sidecar_command(), "--config", str(gw.config_path), *args],
                          capture_output=True, text=True, timeout=30, env={**base, **env},
                          check=False)  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def test_env_token_never_leaks(gateway_unstarted: Gateway, backend_factory) -> None:
    gw = gateway_unstarted
    token = str(uuid.uuid4())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["CONSUL_HTTP_TOKEN"] = token
    with gw.log_path.open("ab") as log:
        gw.proc = subprocess.Popen(
            [*sidecar_command(), "--config", str(gw.config_path), "run"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=gw.tmp,
        )  # fmt: skip
    wait_until(gw.ready, 30, 0.05, "the daemon to start")
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "a1")
    assert_token_nowhere(gw, token)
    for args in (("render",), ("check", "--json")):
        _, out = _cli(gw, {"CONSUL_HTTP_TOKEN": token}, *args)
        assert token not in out, args


# --- Consul over HTTPS --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_consul(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("consul-tls")
    ca = DevCA.load_or_create(folder / "ca")
    server = ca.issue_host("consul-server", ["127.0.0.1", "localhost", "server.dc1.consul"],
                           directory=folder)  # fmt: skip
    client = ca.issue_host("sidecar-client", [], directory=folder)
    extra = {
        "ca_file": str(ca.cert_path), "cert_file": str(server.cert),
        "key_file": str(server.key), "verify_incoming": True, "verify_outgoing": True,
    }  # fmt: skip
    agent = FaultAgent(folder / "agent", dev=True, extra=extra)
    agent.scheme = "https"
    agent.client_cert = (str(client.cert), str(client.key))  # type: ignore[attr-defined]
    agent.start()
    try:
        yield agent, ca, client
    finally:
        agent.stop()


def tls_settings(ca_file: Path, client: Any | None) -> str:
    lines = f'ca_file = "{ca_file}"\n'
    if client is not None:
        lines += f'cert_file = "{client.cert}"\nkey_file = "{client.key}"\n'
    return lines


def register_tls(agent: ConsulAgent, gw: Gateway, port: int, instance: str) -> None:
    sid = f"{gw.prefix}-{instance}"
    body = {"Name": gw.consul_name("alpha"), "ID": sid, "Address": "127.0.0.1", "Port": port,
            "Tags": ["dirac"], "Meta": {"dirac_system": "Framework", "dirac_service": "GwAlpha"},
            "Check": {"CheckID": f"service:{sid}", "TTL": "1h", "Status": "passing"}}  # fmt: skip
    requests.put(f"{agent.http_addr}/v1/agent/service/register", json=body, timeout=5,
                 verify=agent.extra["ca_file"], cert=agent.client_cert).raise_for_status()  # type: ignore[attr-defined]  # fmt: skip


def test_consul_over_https_with_client_certificate(
    tmp_path: Path, pki: DevPKI, tls_consul: Any, backend_factory
) -> None:
    agent, ca, client = tls_consul
    assert agent.http_addr.startswith("https://")
    assert "http" not in agent.ports  # ports.http = -1: no plain HTTP listener at all
    plain = requests.get(f"http://127.0.0.1:{agent.ports['https']}/v1/status/leader", timeout=2)
    assert plain.status_code == 400 and "HTTPS" in plain.text  # Go's answer to plain HTTP
    with pytest.raises(requests.exceptions.SSLError):  # and a client certificate is required
        requests.get(f"{agent.http_addr}/v1/status/leader", verify=str(ca.cert_path), timeout=2)
    backend = backend_factory(instance="t1")
    with gateway_on(tmp_path / "g", agent, pki, "", tls_settings(ca.cert_path, client)) as gw:
        register_tls(agent, gw, backend.port, "t1")
        gw.wait_routed(gw.ports[ALPHA], "t1")  # `sidecar run` reads the catalog over HTTPS
        code, out = _cli(gw, {}, "render")
        assert code == 0 and "bk_Framework_GwAlpha" in out, out[-300:]
        # A wrong CA: verification fails, clearly.
        other = DevCA.load_or_create(tmp_path / "other-ca")
        gw.write_config(gw.config_path.read_text().replace(str(ca.cert_path),
                                                           str(other.cert_path)))  # fmt: skip
        code, out = _cli(gw, {}, "render")
        assert code == 1 and "error:" in out and "CERTIFICATE_VERIFY_FAILED" in out, out[-300:]
        # No client certificate: the agent refuses the handshake.
        text = gw.config_path.read_text()
        text = "\n".join(line for line in text.splitlines()
                         if not line.startswith(("cert_file", "key_file"))) + "\n"  # fmt: skip
        gw.write_config(text.replace(str(other.cert_path), str(ca.cert_path)))
        code, out = _cli(gw, {}, "render")
        assert code == 1 and "error:" in out and "BAD_CERTIFICATE" in out, out[-300:]

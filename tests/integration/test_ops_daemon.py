"""The daemon's operations side on real processes: notify messages on a real datagram socket,
``/metrics`` ``/healthz`` ``/readyz`` served, certificate status recorded for ``check``.

Skipped until the ``[check]``, ``[certs]`` and ``[status]`` sections are part of Settings.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest
from gatewaylib import Gateway
from helpers import free_port, wait_until

from sidecar.config.schema import Settings

ALPHA = "Framework/GwAlpha"
pytestmark = pytest.mark.skipif(
    not hasattr(Settings(), "status"), reason="[status] not wired into Settings yet"
)


def test_notify_metrics_and_cert_status(
    gateway_unstarted: Gateway, backend_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway_unstarted
    port = free_port()
    text = re.sub(r"(?m)^listen = .*$", f'listen = "127.0.0.1:{port}"', gw.config_text())
    if "[status]" not in text:
        text += f'\n[status]\nlisten = "127.0.0.1:{port}"\n'
    if "[certs]" not in text:
        text += f'\n[certs]\nca_dir = "{gw.pki.ca_dir}"\n'
    gw.write_config(text)
    path = str(Path(gw.tmp) / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        gw.start()
        backend = backend_factory(host="backend1", name=ALPHA, instance="a1")
        gw.register_backend("alpha", backend, "a1")
        gw.wait_routed(gw.ports[ALPHA], "a1")
        seen: set[str] = set()
        while not {"READY=1", "WATCHDOG=1"} <= seen:
            seen.update(sock.recv(4096).decode().split("\n"))
        assert any(line.startswith("STATUS=") for line in seen)

        def get(p: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""

        assert get("/healthz")[0] == 200
        wait_until(lambda: get("/readyz")[0] == 200, 10, what="readyz")
        text = get("/metrics")[1]
        for name in (
            "sidecar_catalog_sync_age_seconds",
            "sidecar_applies_total",
            "sidecar_backend_servers_up",
            "sidecar_haproxy_old_workers",
        ):
            assert name in text
        certs = wait_until(
            lambda: (gw.status().get("certs") or {}).get("servers"),
            30,
            what="a certificate report with the backend",
        )
        assert certs[0]["status"] == "OK"
        os.kill(gw.pid, 15)
        while "STOPPING=1" not in seen:
            seen.update(sock.recv(4096).decode().split("\n"))
    finally:
        sock.close()

"""The shipped alert rules on a real Prometheus (Debian's ``prometheus``) scraping a real
daemon on loopback (issue 15): a backend whose certificate lacks the gateway names fires
``SidecarCertificateWithoutGatewayName`` for that backend server, and only for it.

Prometheus runs from a temporary directory with a 1 s scrape and evaluation interval, on a
free 127.0.0.1 port, and is stopped by PID in the fixture's finalizer.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gatewaylib import Gateway
from helpers import free_port, wait_until

from devkit.procs import stop_process
from sidecar import data

pytestmark = pytest.mark.integration
ALERT = "SidecarCertificateWithoutGatewayName"


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {json.dumps(str(data.path(data.ALERT_RULES)))}\n"
            "scrape_configs:\n  - job_name: dirac-sidecar\n"
            f"    static_configs:\n      - targets: [{json.dumps(target)}]\n"
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip

    def api(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=2) as reply:
            return json.loads(reply.read())["data"]

    def firing(self) -> list[dict[str, Any]]:
        try:
            alerts = self.api("/api/v1/alerts")["alerts"]
        except OSError:
            return []  # not up yet
        return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[list[Prometheus]]:
    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus (scripts/install-deps.sh installs Debian's)")
    started: list[Prometheus] = []
    yield started
    for prom in started:
        prom.stop()


def test_certificate_without_gateway_name_fires(
    gateway: Gateway, backend_factory: Any, prometheus_for: list[Prometheus], tmp_path: Path
) -> None:
    nogw = gateway.pki.ca().issue_host("nogw", ["127.0.0.1"], directory=tmp_path)
    bad = backend_factory(cert=nogw.cert, key=nogw.key, name="Framework/GwAlpha")
    good = backend_factory(host="backend1", name="Framework/GwBeta")
    gateway.register_backend("alpha", bad, "bad1", dirac="Framework/GwAlpha")
    gateway.register_backend("beta", good, "good1", dirac="Framework/GwBeta")
    gateway.wait_log("certificates")  # the probe of the daemon ran at least once
    found = re.search(
        r"metrics and health on http://(127\.0\.0\.1:\d+)/metrics", gateway.log_text()
    )
    assert found, gateway.log_tail()
    prom = Prometheus(tmp_path, found.group(1))
    prometheus_for.append(prom)
    alerts = wait_until(prom.firing, 60, 0.5, f"{ALERT} firing")
    labels = [a["labels"] for a in alerts]
    assert {(la["backend"], la["job"]) for la in labels} == {("Framework_GwAlpha", "dirac-sidecar")}
    assert "lacks 2 gateway name(s)" in alerts[0]["annotations"]["summary"]
    assert prom.api("/api/v1/query?query=up")["result"][0]["value"][1] == "1"

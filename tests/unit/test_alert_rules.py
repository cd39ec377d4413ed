"""The shipped alert rules and Grafana dashboard (issue 15), checked with Debian's promtool:
``promtool check rules`` and ``promtool test rules`` (one test per alert in
tests/prometheus/alerts_test.yml); every dashboard expression parses (in a throwaway rules
file) and every metric the rules and the dashboard name is one the daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar import data
from sidecar.health.metrics import Metrics
from sidecar.health.opsmetrics import exported_names

ROOT = Path(__file__).resolve().parents[2]
RULES = data.path("alerts.yml")
DASHBOARD = data.path("dashboard.json")
NAME = re.compile(r"\bsidecar_[a-z_]+\b")
ALERTS = {"SidecarNotReady", "SidecarCatalogDataOld", "SidecarReloadsFailing",
          "SidecarOldWorkersPilingUp", "SidecarCertificateWithoutGatewayName",
          "SidecarCertificateExpiring", "SidecarNoCSWriter", "SidecarLaggingFleet"}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("no promtool (scripts/install-deps.sh installs Debian's prometheus)")
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60, check=False)  # fmt: skip


def rules() -> list[dict[str, str]]:
    """(alert, expr) of every rule; the file keeps each on one line (no YAML parser in the
    test dependencies; promtool parses the file itself)."""
    text = RULES.read_text()
    alerts = re.findall(r"^ *- alert: (\w+)$", text, re.M)
    exprs = re.findall(r"^ *expr: (.+)$", text, re.M)
    assert len(alerts) == len(exprs)
    return [{"alert": a, "expr": e} for a, e in zip(alerts, exprs, strict=True)]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]


def test_shipped_beside_the_source_tree_copies() -> None:
    assert (ROOT / "contrib/prometheus/alerts.yml").resolve() == RULES.resolve()
    assert (ROOT / "contrib/grafana/dashboard.json").resolve() == DASHBOARD.resolve()
    assert {"alerts.yml", "dashboard.json"} <= set(data.SHIPPED)


def test_rules_check_and_unit_tests_pass() -> None:
    checked = run("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {rule["alert"] for rule in rules()} == ALERTS
    tests = ROOT / "tests/prometheus/alerts_test.yml"
    tested = run("test", "rules", tests.name, cwd=tests.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = set(re.findall(r"alertname: (\w+)", tests.read_text()))
    assert names == ALERTS, f"alerts without a unit test: {ALERTS - names}"


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 9
    # JSON strings are YAML double-quoted scalars: no YAML writer needed
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        lines += [f"      - record: dashboard:expr{i}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(lines) + "\n")
    checked = run("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = exported_names(Metrics().registry)
    used = {n for e in [r["expr"] for r in rules()] + dashboard_exprs() for n in NAME.findall(e)}
    assert used, "no metric named?"
    assert used <= exported, f"not exported by the daemon: {sorted(used - exported)}"
    panels = " ".join(t for t in dashboard_exprs())
    for wanted in ("sidecar_propagation_seconds", "sidecar_apply_duration_seconds",
                   "sidecar_reload", "sidecar_haproxy_old_workers",
                   "sidecar_catalog_sync_age_seconds", "sidecar_applied_catalog_index",
                   "sidecar_certificate_days_left"):  # fmt: skip
        assert wanted in panels, wanted

"""``sidecar validate``'s work: settings, template and port map checked without Consul (adapter).

Like ``nginx -t`` or ``haproxy -c``: the settings were loaded (and validated) by the caller;
here the port map and the template are loaded, the pure pipeline renders against an empty
catalog and a small sample one (two services of the port map and one on a hashed port), and
``haproxy -c`` checks both configs. Nothing is written outside a temporary directory and no
process is left behind.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sidecar.base.errors import SidecarError
from sidecar.config.schema import Settings
from sidecar.core import pipeline
from sidecar.core.model import Health, Instance, ServiceEntries, Snapshot
from sidecar.core.portmap import PortMap
from sidecar.haproxy.inputs import build_inputs
from sidecar.host.procenv import scrubbed_environment

SAMPLE_BACKEND = "192.0.2.10"  # TEST-NET-1: never dialled, only rendered


@dataclass(frozen=True, slots=True)
class Finding:
    what: str
    ok: bool
    detail: str


def sample_snapshot(port_map: PortMap) -> Snapshot:
    """Two services from the port map (one dips, one https if any) and one without a port."""
    chosen = []
    for protocol in ("dips", "https"):
        entry = next((e for e in port_map.entries if e.protocol.value == protocol), None)
        if entry is not None:
            chosen.append((entry.system, entry.service, protocol))
    chosen.append(("Validate", "Sample", "dips"))
    services = []
    for number, (system, service, protocol) in enumerate(chosen, start=1):
        name = f"validate-{system.lower()}-{service.lower()}"
        meta = (("dirac_protocol", protocol), ("dirac_service", service), ("dirac_system", system))
        instance = Instance(
            name, "node1", f"{name}-1", SAMPLE_BACKEND, 40000 + number, ("dirac",), meta,
            Health.PASSING,
        )  # fmt: skip
        services.append(ServiceEntries(name, number, (instance,)))
    return Snapshot(tuple(services), len(services))


def haproxy_check(settings: Settings, config: str) -> str | None:
    """``haproxy -c`` on ``config``; None when it passes, else HAProxy's alerts."""
    with tempfile.TemporaryDirectory(prefix="sidecar-validate-") as tmp:
        path = Path(tmp) / "haproxy.cfg"
        path.write_text(config, encoding="utf-8")
        try:
            result = subprocess.run(
                [settings.haproxy.binary, "-c", "-f", str(path)],
                capture_output=True,
                text=True,
                check=False,
                timeout=settings.haproxy.validate_timeout,
                env=scrubbed_environment(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run {settings.haproxy.binary} -c: {exc}"
    if result.returncode == 0:
        return None
    output = (result.stdout + result.stderr).strip().splitlines()
    alerts = [line for line in output if "ALERT" in line] or output
    return " | ".join(alerts[-3:])


def preflight(settings: Settings, run_haproxy: bool = True) -> list[Finding]:
    """Every check ``sidecar validate`` makes, in order; a failed stage stops the rest."""
    source = settings.source
    if not Path(source).exists():
        source = f"defaults (no file at {source})"
    findings = [Finding("settings", True, source)]
    try:
        inputs = build_inputs(settings)
    except SidecarError as exc:
        return [*findings, Finding("template and port map", False, str(exc))]
    findings.append(
        Finding(
            "template and port map",
            True,
            f"{settings.template_path}, {settings.port_map_path} "
            f"({len(inputs.port_map.entries)} services)",
        )
    )
    sample = sample_snapshot(inputs.port_map)
    catalogs = (("empty catalog", Snapshot(())), ("sample catalog", sample))
    for name, snapshot in catalogs:
        try:
            rendered = pipeline.render(snapshot, inputs, None)
        except SidecarError as exc:
            findings.append(Finding(f"render ({name})", False, str(exc)))
            continue
        services = len(rendered.desired.listed) if rendered.desired else 0
        config = rendered.config or ""
        problem = haproxy_check(settings, config) if run_haproxy else None
        detail = f"{services} services" + ("" if run_haproxy else ", haproxy -c skipped")
        findings.append(Finding(f"haproxy -c ({name})", problem is None, problem or detail))
    return findings

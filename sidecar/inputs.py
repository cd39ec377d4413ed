"""The inputs of the pure pipeline besides the catalog: port map, template, reserved ports
(adapter: reads the port map and the template; used by the daemon and every CLI command that
renders, so none of them needs the daemon).
"""

from __future__ import annotations

import hashlib

from sidecar import pipeline
from sidecar.config.schema import Settings
from sidecar.errors import SidecarError
from sidecar.portmap import load_port_map
from sidecar.render.haproxy import load_template
from sidecar.validate import parse_listen


def build_inputs(settings: Settings) -> pipeline.Inputs:
    try:
        port_map = load_port_map(settings.port_map_path)
    except (OSError, ValueError) as exc:
        raise SidecarError(f"port map: {exc}") from None
    reserved: frozenset[int] = frozenset()
    if settings.status.enabled:  # the metrics endpoint's port is never a DIRAC service's
        reserved = frozenset({parse_listen(settings.status.listen)[1]}) - {0}
    template = load_template(settings.template_path)
    try:
        digest = hashlib.sha256(settings.template_path.read_bytes()).hexdigest()
    except OSError as exc:
        raise SidecarError(f"{settings.template_path}: {exc.strerror}") from None
    return pipeline.Inputs(
        settings, port_map, template, reserved_ports=reserved, template_digest=digest
    )

"""Desired state -> HAProxy configuration bytes (pure: the template comes compiled).

The jinja2 environment uses ``StrictUndefined`` so a template that names a missing value fails
loudly instead of rendering an empty string into the load balancer. The context handed to the
template holds only validated values; the output is deterministic (the same desired state gives
the same bytes), which is what lets the planner skip a reload when nothing changed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import jinja2

from sidecar.base import validate
from sidecar.base.errors import TemplateError
from sidecar.config.durations import haproxy_time
from sidecar.config.schema import Settings
from sidecar.core.model import DesiredState
from sidecar.core.plan import backend_id

ADMIN_SOCKET = "admin.sock"
MASTER_SOCKET = "master.sock"
STATE_FILE = "server-state"
CONFIG_FILE = "haproxy.cfg"


def haproxy_settings(settings: Settings) -> dict[str, Any]:
    """The ``[haproxy]`` settings as the template sees them: durations as HAProxy time values
    ("660s", "500ms"), enums as their words, everything else as validated."""
    values: dict[str, Any] = {}
    for key, value in asdict(settings.haproxy).items():
        values[key] = haproxy_time(value) if isinstance(value, float) else value
    values["balance"] = settings.haproxy.balance.value
    return values


def server_options(settings: Settings) -> str:
    """The options of every server line, also given to ``add server`` (a dynamic server does
    not inherit ``default-server``): a server added at runtime and the same server after a
    reload are configured alike."""
    h = settings.haproxy
    return (
        f"check inter {haproxy_time(h.check_inter)} fastinter 500ms downinter 1s "
        f"fall {h.check_fall} rise {h.check_rise}"
    )


def template_context(desired: DesiredState, settings: Settings) -> dict[str, Any]:
    runtime = settings.runtime_dir
    backends = []
    for backend in desired.backends:
        servers = [
            {
                "name": server.name,
                "addr": validate.hostport(server.address, server.port),
                "state": server.state.value,
                "weight": server.effective_weight,
            }
            for server in backend.servers
        ]
        backends.append(
            {
                "name": backend.name,
                "id": backend_id(backend),
                "path": backend.path,
                "system": backend.system,
                "service": backend.service,
                "protocol": backend.protocol.value,
                "public_port": backend.public_port,
                "extra_ports": list(backend.extra_ports),
                "port_source": backend.port_source,
                "origin": backend.origin.value,
                "servers": servers,
            }
        )
    return {
        "settings": haproxy_settings(settings),
        "server_options": server_options(settings),
        "bind": settings.gateway.bind
        if ":" not in settings.gateway.bind
        else f"[{settings.gateway.bind}]",
        "runtime_dir": str(runtime),
        "admin_socket": str(runtime / ADMIN_SOCKET),
        "state_file": str(runtime / STATE_FILE),
        "backends": backends,
    }


def render_config(template: jinja2.Template, desired: DesiredState, settings: Settings) -> str:
    """The HAProxy configuration text for ``desired``."""
    try:
        text = template.render(template_context(desired, settings))
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{settings.template_path}: cannot render: {exc}") from None
    return text if text.endswith("\n") else text + "\n"

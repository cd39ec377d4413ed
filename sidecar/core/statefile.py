"""The applied desired state as JSON (pure encode/decode).

Written next to the HAProxy config after every apply, read at start-up: a restarted sidecar
knows what HAProxy runs, renders the same bytes and does not reload.
"""

from __future__ import annotations

import json
from typing import Any

from sidecar.core.model import Backend, DesiredState, Origin, Protocol, Server, ServerState

VERSION = 2  # 2: dynamic servers (no free slots), origin, extra ports


def encode(desired: DesiredState, extra: dict[str, Any] | None = None) -> str:
    data = {
        "version": VERSION,
        "backends": [
            {
                "system": b.system,
                "service": b.service,
                "protocol": b.protocol.value,
                "public_port": b.public_port,
                "port_source": b.port_source,
                "claim_index": b.claim_index,
                "origin": b.origin.value,
                "extra_ports": list(b.extra_ports),
                "servers": [
                    [s.name, s.address, s.port, s.state.value, s.instance, s.weight]
                    for s in b.servers
                ],
            }
            for b in desired.backends
        ],
        **(extra or {}),
    }
    # compact: json's C encoder runs only without indent (5x faster, 1,000 services: 60 -> 12 ms,
    # on every apply and runtime flush)
    return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"


def decode(text: str) -> DesiredState:
    """Raises ValueError on anything unexpected (the caller then starts from scratch)."""
    try:
        data = json.loads(text)
        if data.get("version") != VERSION:
            raise ValueError("unknown state file version")
        backends = tuple(
            Backend(
                str(b["system"]),
                str(b["service"]),
                Protocol(b["protocol"]),
                int(b["public_port"]),
                tuple(
                    Server(str(n), str(a), int(p), ServerState(st), str(i), int(w))
                    for n, a, p, st, i, w in b["servers"]
                ),
                str(b.get("port_source", "map")),
                int(b.get("claim_index", 0)),
                Origin(b.get("origin", "catalog")),
                tuple(int(p) for p in b.get("extra_ports", ())),
            )
            for b in data["backends"]
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed state file: {exc}") from None
    return DesiredState(backends, ())

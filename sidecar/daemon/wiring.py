"""The daemon's wiring: every adapter the loop drives, built from the settings (adapter glue).

``build`` makes the parts for a start; ``rewire`` makes what a SIGHUP changes: a new ``[consul]``
gets a new Consul client and watcher (the old watcher's loop is cancelled and closed first, so
nothing is abandoned) and a new fleet member; anything else is passed on to the parts that
keep running. The loop (``daemon.loop``) only ever sees ``Parts``: a unit test hands it fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.config.loader import read_token
from sidecar.config.schema import Settings
from sidecar.consul.client import ConsulClient
from sidecar.consul.confirm import HeldRemovals
from sidecar.consul.watcher import CatalogWatcher
from sidecar.daemon.drain import DrainControl
from sidecar.daemon.filewatch import FileWatcher
from sidecar.daemon.ops import Operations
from sidecar.fleet.member import FleetMember
from sidecar.haproxy.applier import Applier
from sidecar.haproxy.process import HAProxy
from sidecar.host.netfacts import NetFacts

Post = Callable[[str], None]  # puts an event on the loop's queue
FLEET_MIN_INTERVAL = 5.0  # seconds: unchanged fleet facts (TTL pass, lock renew) re-published


@dataclass(slots=True)
class Parts:
    """The adapters of one daemon: what the loop calls, nothing it decides."""

    haproxy: HAProxy
    applier: Applier
    client: ConsulClient  # the second read of held removals
    watcher: CatalogWatcher
    held: HeldRemovals
    ops: Operations
    files: FileWatcher
    fleet: FleetMember
    net: NetFacts
    drain: DrainControl


def consul(settings: Settings, post: Post) -> tuple[ConsulClient, CatalogWatcher]:
    token = read_token(settings.consul)
    watcher = CatalogWatcher(settings.consul, token, lambda: post("catalog"))
    return ConsulClient(settings.consul, token), watcher


def fleet(settings: Settings) -> FleetMember:
    # Its own client, used from the status round only.
    client = ConsulClient(settings.consul, read_token(settings.consul))
    return FleetMember(settings, client, min_interval=FLEET_MIN_INTERVAL)


def build(settings: Settings, post: Post) -> Parts:
    haproxy = HAProxy(settings)
    client, watcher = consul(settings, post)
    ops = Operations(settings, on_certs=lambda report: post("certs"))
    c = settings.certs
    files = FileWatcher(
        [settings.source, settings.haproxy.template],  # like SIGHUP
        [c.ca_dir, c.ca_file, c.client_cert, settings.consul.ca_file, settings.consul.cert_file],
        on_config=lambda: post("hup"),
        on_certs=lambda: ops.certs.rerun(),  # CA dirs and own certificates: re-check
    )
    return Parts(
        haproxy=haproxy,
        applier=Applier(haproxy),
        client=client,
        watcher=watcher,
        held=HeldRemovals(client, settings.consul, settings.apply.confirm_delay),
        ops=ops,
        files=files,
        fleet=fleet(settings),
        net=NetFacts(),  # own addresses, resolved host names: for the admission policy
        drain=DrainControl(settings.runtime_dir),  # ``sidecar drain``, polled each round
    )


def rewire(parts: Parts, old: Settings, new: Settings, post: Post) -> None:
    """Carry ``new`` settings into the running parts (after a SIGHUP)."""
    parts.haproxy.settings = new
    parts.held.delay = new.apply.confirm_delay
    if new.consul == old.consul:
        parts.fleet.reconfigure(new)
        return
    # A new address, token or TLS setting: start the watches afresh.
    parts.watcher.stop()  # cancels its parked queries and ends its thread
    parts.client.close()
    parts.client, parts.watcher = consul(new, post)
    parts.held.client, parts.held.settings = parts.client, new.consul
    parts.watcher.start()
    parts.fleet.stop()
    parts.fleet = fleet(new)

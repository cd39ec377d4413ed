"""Files shipped inside the package (package data, read with ``importlib.resources``).

What a gateway gets from the wheel alone: the HAProxy template, the port map, the example
settings, the systemd unit, the Prometheus alert rules and the Grafana dashboard
(``sidecar files`` lists them and prints one). Nothing here is
looked up through the source tree, so an installed wheel runs without a checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TEMPLATE = "haproxy.cfg.j2"
PORT_MAP = "dirac-port-map.csv"
EXAMPLE_SETTINGS = "sidecar.example.toml"
SYSTEMD_UNIT = "dirac-sidecar.service"
ALERT_RULES = "alerts.yml"  # Prometheus rules (also contrib/prometheus/alerts.yml)
DASHBOARD = "dashboard.json"  # Grafana (also contrib/grafana/dashboard.json)
SHIPPED = (TEMPLATE, PORT_MAP, EXAMPLE_SETTINGS, SYSTEMD_UNIT, ALERT_RULES, DASHBOARD)


def path(name: str) -> Path:
    """The file system path of the shipped file ``name`` (the package is installed unzipped)."""
    found = resources.files(__name__) / name
    if not isinstance(found, Path):  # a zipped install: not supported, say so plainly
        raise FileNotFoundError(f"package data {name} is not on a file system ({found})")
    return found


def read(name: str) -> str:
    return path(name).read_text(encoding="utf-8")

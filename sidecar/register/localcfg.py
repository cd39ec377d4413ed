"""The local DIRAC configuration as ``sidecar register`` reads it (pure): cfg texts -> services.

What DIRAC itself reads (checked in DIRAC 9.1.22, ``Core/DISET/private/ServiceConfiguration``
and ``Core/Tornado/Server/HandlerManager``):
- v9: ``/Systems/<System>/Services/<Service>/Port``; v8: ``/Systems/<System>/<Instance>/
  Services/<Service>/Port`` with the instance from ``/DIRAC/Setups/<Setup>/<System>``.
- A service is a Tornado (``https``) one exactly when its ``Protocol`` option is ``https``
  (case-insensitive); anything else unset means ``dips``. Tornado services without their own
  ``Port`` listen on the Tornado server's port, ``/Systems/Tornado/Port`` (v8:
  ``/Systems/Tornado/<Instance>/Port``), default 8443. The ``Tornado`` name prefix is only a
  convention of DIRAC's templates, not what DIRAC decides on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from diraccfg import CFG

from sidecar.base import validate
from sidecar.base.errors import ConfigError
from sidecar.core.cfgtree import flatten_into as _flatten
from sidecar.core.cfgtree import setup_instances

TORNADO_DEFAULT_PORT = 8443
PROTOCOLS = ("dips", "https")


@dataclass(frozen=True, slots=True)
class DiracConfig:
    """A parsed DIRAC cfg: option path -> raw value, and every section path."""

    source: str
    options: Mapping[str, str]
    sections: frozenset[str]

    def get(self, path: str, default: str = "") -> str:
        return self.options.get(path, default).strip()


@dataclass(frozen=True, slots=True)
class LocalService:
    """One DIRAC service as the local config describes it."""

    system: str
    service: str
    protocol: str  # "dips" or "https"
    port: int  # where the service really listens (inside its container)
    section: str  # the cfg section it came from, for messages

    @property
    def path(self) -> str:
        return f"{self.system}/{self.service}"


# --- reading the DIRAC config -------------------------------------------------------------


def parse_dirac_cfg(texts: Sequence[tuple[str, str]]) -> DiracConfig:
    """Parse and merge DIRAC cfg texts ``(source, text)`` in order (later files win, as with
    a comma-separated ``DIRACSYSCONFIG``). ``ConfigError`` names the file that fails."""
    if not texts:
        raise ConfigError("DIRACSYSCONFIG", "", "no DIRAC config file given")
    merged = CFG()
    for source, text in texts:
        try:
            cfg = CFG().loadFromBuffer(text)
        except Exception as exc:  # diraccfg raises ValueError, KeyError, ... on bad syntax
            raise ConfigError(source, "", f"not a valid DIRAC cfg: {exc}") from None
        merged = merged.mergeWith(cfg)
    options: dict[str, str] = {}
    sections: set[str] = set()
    _flatten(merged.getAsDict(), "", options, sections)
    return DiracConfig(",".join(s for s, _ in texts), options, frozenset(sections))


def _children(cfg: DiracConfig, parent: str) -> list[str]:
    depth = parent.count("/") + 1
    return sorted(
        s.rsplit("/", 1)[1]
        for s in cfg.sections
        if s.startswith(parent + "/") and s.count("/") == depth
    )


def detect_layout(cfg: DiracConfig, layout: str = "auto", setup: str = "") -> tuple[str, str]:
    """``(layout, setup)``: ``v9`` when any ``/Systems/<S>/Services`` section exists, else
    ``v8`` when a setup is known; ``ConfigError`` when neither fits."""
    if layout not in ("auto", "v8", "v9"):
        raise ConfigError(cfg.source, "layout", f"{layout!r}: must be auto, v8 or v9")
    setup = setup or cfg.get("/DIRAC/Setup")
    if layout == "v9" or (layout == "auto" and _v9_systems(cfg)):
        return "v9", ""
    if setup:
        if f"/DIRAC/Setups/{setup}" not in cfg.sections:
            raise ConfigError(cfg.source, f"/DIRAC/Setups/{setup}", "v8 layout: setup not defined")
        return "v8", setup
    if layout == "v8":
        raise ConfigError(cfg.source, "/DIRAC/Setup", "v8 layout: no setup given or configured")
    raise ConfigError(
        cfg.source,
        "/Systems",
        "unknown layout: no /Systems/<System>/Services section (v9) and no /DIRAC/Setup (v8)",
    )


def _v9_systems(cfg: DiracConfig) -> list[str]:
    return [s for s in _children(cfg, "/Systems") if f"/Systems/{s}/Services" in cfg.sections]


def _bases(cfg: DiracConfig, layout: str, setup: str) -> list[tuple[str, str]]:
    """``(system, base section)`` of every system, e.g. ``("Framework", "/Systems/Framework")``
    (v9) or ``("Framework", "/Systems/Framework/Production")`` (v8)."""
    if layout == "v9":
        return [(s, f"/Systems/{s}") for s in _v9_systems(cfg)]
    return [
        (system, f"/Systems/{system}/{instance}")
        for system, instance in setup_instances(cfg.options, setup)
        if f"/Systems/{system}/{instance}/Services" in cfg.sections
    ]


def _port(cfg: DiracConfig, option: str) -> int:
    raw = cfg.get(option)
    try:
        return validate.port(raw, "port")
    except ValueError as exc:
        raise ConfigError(cfg.source, option, str(exc)) from None


def _service(
    cfg: DiracConfig, system: str, base: str, name: str, tornado_port: str
) -> LocalService:
    section = f"{base}/Services/{name}"
    for what, value in (("system", system), ("service", name)):
        try:
            validate.dirac_name(value, what)
        except ValueError as exc:
            raise ConfigError(cfg.source, section, str(exc)) from None
    protocol = cfg.get(f"{section}/Protocol", "dips").lower() or "dips"
    if protocol not in PROTOCOLS:
        raise ConfigError(
            cfg.source,
            f"{section}/Protocol",
            f"{protocol!r}: the gateway passes only dips and https",
        )
    if f"{section}/Port" in cfg.options:
        port = _port(cfg, f"{section}/Port")
    elif protocol == "https":
        port = _port(cfg, tornado_port) if tornado_port in cfg.options else TORNADO_DEFAULT_PORT
    else:
        raise ConfigError(cfg.source, f"{section}/Port", "missing: a dips service needs its Port")
    return LocalService(system, name, protocol, port, section)


def find_services(
    cfg: DiracConfig, layout: str = "auto", setup: str = ""
) -> tuple[LocalService, ...]:
    """Every service under ``/Systems/*/Services`` (v9) or ``/Systems/*/<Instance>/Services``
    (v8), sorted by ``System/Service``. ``ConfigError`` on a bad entry or when none is found."""
    layout, setup = detect_layout(cfg, layout, setup)
    tornado = "/Systems/Tornado/Port"
    if layout == "v8":
        instance = cfg.get(f"/DIRAC/Setups/{setup}/Tornado")
        tornado = f"/Systems/Tornado/{instance}/Port" if instance else tornado
    found = [
        _service(cfg, system, base, name, tornado)
        for system, base in _bases(cfg, layout, setup)
        for name in _children(cfg, f"{base}/Services")
    ]
    if not found:
        where = (
            "/Systems/<System>/Services"
            if layout == "v9"
            else f"/Systems/<System>/<Instance>/Services (setup {setup})"
        )
        raise ConfigError(cfg.source, where, "no DIRAC service configured")
    return tuple(sorted(found, key=lambda s: s.path))


def select(
    services: Sequence[LocalService], wanted: Iterable[str], source: str
) -> tuple[LocalService, ...]:
    """The services named ``System/Service`` in ``wanted`` (all when empty)."""
    names = list(dict.fromkeys(wanted))
    if not names:
        return tuple(services)
    by_path = {s.path: s for s in services}
    missing = [n for n in names if n not in by_path]
    if missing:
        known = ", ".join(by_path) or "none"
        raise ConfigError(
            source,
            "--service",
            f"not in the DIRAC config: {', '.join(missing)} (configured: {known})",
        )
    return tuple(by_path[n] for n in sorted(names))

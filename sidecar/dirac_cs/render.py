"""Desired state -> DIRAC Configuration Service URL lists, and the plan against the CS (pure).

Sits in the render and plan stages: catalog -> desired -> **render -> plan** -> apply. It
imports no I/O module and reads no clock or environment. ``render_cs`` turns the exposed
backends and the gateway names into the option values the CS should hold (option path -> tuple
of values, sorted); what it needs from the current CS (``/DIRAC/Setup`` and
``/DIRAC/Setups/<Setup>/<System>`` for the v8 layout) comes in as a plain mapping of option
path -> raw value. ``plan_cs`` compares those lists with the current ones the way DIRAC reads
them (split on commas, stripped, as a set) and returns only the options that really change.

Rules kept here: one option never mixes ``dips`` and ``https``; an empty list is never planned;
options of services the gateway does not expose are left alone unless pruning is asked for,
and pruning only removes the gateway's own URLs from an option.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar.base import validate
from sidecar.config.cs import CSSettings
from sidecar.core.cfgtree import setup_instances
from sidecar.core.model import Backend, DesiredState, Problem

MAINSERVERS = "$MAINSERVERS$"
CS_SYSTEM = "Configuration"
CS_SERVICE = "Server"
SERVERS_OPTION = "/DIRAC/Configuration/Servers"
MASTER_OPTION = "/DIRAC/Configuration/MasterServer"

Lists = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class CSOptions:
    """The CS option values the gateway wants, plus what is needed to prune safely."""

    lists: Lists = ()  # (option path, values), sorted by path; values sorted, never empty
    owned_hosts: tuple[str, ...] = ()  # URL hosts that are the gateway's own (for pruning)
    owned_failover: tuple[str, ...] = ()  # the same in FailoverURLs options: failover names
    prune_scope: tuple[str, ...] = ()  # option path patterns ("*" = one segment) to prune in
    problems: tuple[Problem, ...] = ()

    def as_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(self.lists)


@dataclass(frozen=True, slots=True)
class CSChange:
    """One option to write: ``new`` None deletes it (pruning only), ``old`` None creates it."""

    path: str
    old: tuple[str, ...] | None
    new: tuple[str, ...] | None

    def __str__(self) -> str:
        def show(values: tuple[str, ...] | None) -> str:
            return "(absent)" if values is None else ", ".join(values)

        return f"{self.path}: {show(self.old)} -> {show(self.new)}"


def split_values(raw: str) -> tuple[str, ...]:
    """A CS option value as DIRAC reads a list: split on commas, stripped, empties dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def url_host(url: str) -> str | None:
    """The host of ``<proto>://<host>:<port>/<path>``, lower-cased, or None."""
    _, sep, rest = url.partition("://")
    if not sep:
        return None
    hostport = rest.split("/", 1)[0]
    host = hostport.rsplit(":", 1)[0] if ":" in hostport else hostport
    return host.lower() or None


def _gateway_names(
    names: Iterable[str], what: str = "gateway name"
) -> tuple[tuple[str, ...], list[Problem]]:
    """Validated DNS names or IPv4 addresses, deduplicated, in the order given."""
    good: list[str] = []
    problems: list[Problem] = []
    for name in names:
        try:
            host = validate.host(name, what)
        except ValueError as exc:
            problems.append(Problem("dirac_cs", str(exc)))
            continue
        if ":" in host:
            problems.append(Problem("dirac_cs", f"{what} {host} is IPv6: not usable in URLs"))
        elif host not in good:
            good.append(host)
    return tuple(good), problems


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the options of each system live (v9, or v8 for one setup)."""

    setup: str  # "" for v9
    instances: tuple[tuple[str, str], ...]  # v8: (system, instance) from /DIRAC/Setups/<setup>

    def base(self, system: str) -> str | None:
        if not self.setup:
            return f"/Systems/{system}"
        instance = dict(self.instances).get(system)
        return None if instance is None else f"/Systems/{system}/{instance}"

    @property
    def mainservers(self) -> str:
        return f"/Operations/{self.setup or 'Defaults'}/MainServers"

    def scope(self, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if not self.setup:
            return tuple(f"/Systems/*/{kind}/*" for kind in kinds)
        return tuple(
            f"/Systems/{system}/{instance}/{kind}/*"
            for system, instance in self.instances
            for kind in kinds
        )


def _layout(settings: CSSettings, cs: Mapping[str, str]) -> tuple[_Layout | None, list[Problem]]:
    if settings.layout != "v8":
        return _Layout("", ()), []
    setup = settings.setup or cs.get("/DIRAC/Setup", "").strip()
    if not setup or "/" in setup:
        return None, [Problem("dirac_cs", "v8 layout: no setup (dirac_cs.setup or /DIRAC/Setup)")]
    prefix = f"/DIRAC/Setups/{setup}/"
    instances: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for system, instance in setup_instances(cs, setup):
        if not instance or "/" in instance or "," in instance:
            problems.append(Problem(f"{prefix}{system}", f"{instance!r} is not an instance name"))
        else:
            instances.append((system, instance))
    return _Layout(setup, tuple(instances)), problems


def _urls(backend: Backend, hosts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        sorted(
            {f"{backend.protocol.value}://{h}:{backend.public_port}/{backend.path}" for h in hosts}
        )
    )


def _service_lists(
    backends: tuple[Backend, ...], gateways: tuple[str, ...], settings: CSSettings, layout: _Layout
) -> tuple[dict[str, tuple[str, ...]], list[Problem]]:
    """URLs (and FailoverURLs) options for every exposed backend."""
    hosts = (MAINSERVERS,) if settings.use_mainservers else gateways
    failover, problems = _gateway_names(settings.failover_names, "failover name")
    lists: dict[str, tuple[str, ...]] = {}
    by_path: dict[str, list[Backend]] = {}
    for backend in backends:
        by_path.setdefault(backend.path, []).append(backend)
    for path, group in sorted(by_path.items()):
        if len({b.protocol for b in group}) > 1:
            problems.append(Problem(path, "exposed as both dips and https: CS option left alone"))
            continue
        first = group[0]
        base = layout.base(first.system)
        if base is None:
            reason = f"no instance in /DIRAC/Setups/{layout.setup}/{first.system}"
            problems.append(Problem(path, reason))
            continue
        lists[f"{base}/URLs/{first.service}"] = tuple(
            sorted({url for b in group for url in _urls(b, hosts)})
        )
        if failover:
            lists[f"{base}/FailoverURLs/{first.service}"] = tuple(
                sorted({url for b in group for url in _urls(b, failover)})
            )
    return lists, problems


def _configuration_lists(
    backends: tuple[Backend, ...], gateways: tuple[str, ...], settings: CSSettings
) -> dict[str, tuple[str, ...]]:
    """/DIRAC/Configuration/Servers (and MasterServer) when the CS server is exposed."""
    if not settings.configuration_servers:
        return {}
    server = next((b for b in backends if b.path == f"{CS_SYSTEM}/{CS_SERVICE}"), None)
    if server is None:
        return {}
    lists = {SERVERS_OPTION: _urls(server, gateways)}
    if settings.master_server:
        lists[MASTER_OPTION] = _urls(server, gateways[:1])  # a single URL, never a list
    return lists


def render_cs(
    desired: DesiredState,
    gateways: tuple[str, ...],
    settings: CSSettings,
    cs: Mapping[str, str],
) -> CSOptions:
    """The CS options for ``desired``: ``cs`` maps option paths of the current CS to raw values.

    Every backend in ``desired`` is written, also one with no ready server (its port refuses
    fast, so clients fail over). Without a usable gateway name nothing is produced.
    """
    names, problems = _gateway_names(gateways)
    layout, layout_problems = _layout(settings, cs)
    problems += layout_problems
    if not names or layout is None:
        if not names:
            problems.append(Problem("dirac_cs", "no usable gateway name: CS left alone"))
        return CSOptions(problems=tuple(problems))
    lists, service_problems = _service_lists(desired.listed, names, settings, layout)
    problems += service_problems
    if settings.use_mainservers and lists:
        lists[layout.mainservers] = tuple(sorted(names))
    lists.update(_configuration_lists(desired.listed, names, settings))
    kinds = ("URLs", "FailoverURLs") if settings.failover_names else ("URLs",)
    owned = (*sorted(names), MAINSERVERS) if settings.use_mainservers else tuple(sorted(names))
    failover, _ = _gateway_names(settings.failover_names, "failover name")
    return CSOptions(
        lists=tuple(sorted((path, values) for path, values in lists.items() if values)),
        owned_hosts=owned,
        owned_failover=tuple(sorted(failover)),
        prune_scope=layout.scope(kinds),
        problems=tuple(problems),
    )


def in_scope(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` matches one pattern segment by segment (``*`` matches one segment)."""
    parts = path.split("/")
    for pattern in patterns:
        pieces = pattern.split("/")
        if len(pieces) == len(parts) and all(
            p in ("*", s) for p, s in zip(pieces, parts, strict=True)
        ):
            return True
    return False


def _pruned(path: str, values: tuple[str, ...], desired: CSOptions) -> CSChange | None:
    """The change removing the gateway's own URLs from an option it no longer serves: its
    names' in a URLs option, its failover names' in a FailoverURLs one (what it wrote there)."""
    failover = path.rsplit("/", 2)[-2] == "FailoverURLs"
    hosts = desired.owned_failover if failover else desired.owned_hosts
    owned = {host.lower() for host in hosts}
    kept = tuple(v for v in values if url_host(v) not in owned)
    if kept == values:
        return None
    return CSChange(path, values, kept or None)


def plan_cs(
    current: Mapping[str, tuple[str, ...] | None],
    desired: CSOptions,
    *,
    prune: bool = False,
) -> tuple[CSChange, ...]:
    """The options whose lists differ (compared as sets), sorted by path.

    ``current`` maps option paths to their values (None or missing: the option is absent). An
    empty desired list is never planned. With ``prune`` the gateway's URLs are removed from
    options in ``desired.prune_scope`` that the gateway does not serve any more; an option left
    with no URL at all is deleted rather than emptied.
    """
    wanted = desired.as_dict()
    changes: list[CSChange] = []
    for path, values in sorted(wanted.items()):
        old = current.get(path)
        if values and (old is None or set(old) != set(values)):
            changes.append(CSChange(path, old, values))
    if prune:
        for path, old in sorted(current.items()):
            if path in wanted or not old or not in_scope(path, desired.prune_scope):
                continue
            change = _pruned(path, old, desired)
            if change is not None:
                changes.append(change)
    return tuple(sorted(changes, key=lambda change: change.path))

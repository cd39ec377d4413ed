"""The catalog is untrusted input: property tests over hostile Consul health answers (issue 6).

Anyone who can register a service in Consul writes into the gateway's input. Hypothesis builds
whole catalogs (raw ``/v1/health/service/<name>`` JSON, as ``parse_health`` reads it) whose
names, tags, metadata and addresses carry newlines, spaces, ``#``, quotes, HAProxy keywords,
unicode, control characters and very long strings, with ports 0 / 65536 / non-numeric, unknown
protocols, duplicate IDs and malformed shapes, next to one well-formed service. For every
catalog:

- every line of the rendered HAProxy config is either a line of the fixed template prelude or
  matches a strict grammar built from the validated alphabets (no catalog text outside it);
- the canary word carried by every hostile string never reaches the config, the template
  context or the CS URL lists;
- every instance that does not become a server is accounted for in ``desired.problems``
  (or is simply not routable: critical health);
- the well-formed service in the same catalog still renders with its server;
- the CS URL lists (``render_cs``) match a strict URL grammar.

Seeded and bounded for CI (``derandomize=True``, 200 examples); ``HYPOTHESIS_PROFILE=deep``
runs 5,000 per test. ``tests/integration/test_hostile_haproxy.py`` passes a sample of the same
catalogs through the real ``haproxy -c``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import data
from sidecar.base.validate import consul_service_name
from sidecar.config.cs import CSSettings
from sidecar.config.loader import parse_settings
from sidecar.consul.parse import parse_health
from sidecar.core import pipeline
from sidecar.core.candidates import server_name
from sidecar.core.model import Health, ServerState, ServiceEntries, Snapshot
from sidecar.core.portmap import load_port_map
from sidecar.core.render import template_context
from sidecar.dirac_cs.render import render_cs
from sidecar.haproxy.inputs import load_template

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
EXAMPLES = {"ci": 200, "deep": 5000}.get(PROFILE, 200)
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    derandomize=PROFILE != "random",  # fixed seed unless explicitly asked for
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

CANARY = "INJECTED"  # every hostile string carries it, always next to a forbidden character
ANCHOR = ("Framework", "Anchor")  # the well-formed service present in every catalog
ANCHOR_PORT = 7001
ANCHOR_KEY = "anchor-node/anchor-1"
GATEWAY = "dirac-gw.example.org"

# --- the validated alphabets, written independently of sidecar.base.validate -------------------

NAME = r"[A-Za-z][A-Za-z0-9_]{0,63}"
PORT = r"[0-9]{1,5}"
IPV4 = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
IPV6 = r"\[[0-9a-f:.]+\]"
DNS = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
ADDR = rf"(?:{IPV4}|{IPV6}|{DNS}):{PORT}"
BACKEND = rf"{NAME}_{NAME}"
SERVER = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}-[0-9a-f]{8}"
LINE_GRAMMAR = [
    re.compile(
        rf"# {NAME}/{NAME} \((?:dips|https)\), public port {PORT} from the "
        r"(?:config|map|meta|auto)(?:, (?:kept|declared))?"
    ),
    re.compile(rf"frontend fe_{PORT}"),
    re.compile(rf"    bind 0\.0\.0\.0:{PORT}"),
    re.compile(rf"    tcp-request connection reject unless \{{ nbsrv\(bk_{BACKEND}\) gt 0 \}}"),
    re.compile(rf"    default_backend bk_{BACKEND}"),
    re.compile(rf"backend bk_{BACKEND}"),
    re.compile(r"    balance leastconn"),
    re.compile(
        rf"    server {SERVER} {ADDR} check inter 2s fastinter 500ms downinter 1s fall 2 rise 2"
        r"(?: weight 0)?"
    ),
    re.compile(r""),
]
URL = re.compile(rf"(?:dips|https)://{DNS}:{PORT}/{NAME}/{NAME}")
URL_OPTION = re.compile(rf"/Systems/{NAME}/(?:Failover)?URLs/{NAME}")

# --- hostile building blocks --------------------------------------------------------------

FORBIDDEN = [
    "\n", "\r", "\r\n", " ", "\t", "#", '"', "'", "\\", "{", "}", ";", "\x00", "\x1b", "\x7f",
    "\u2028", "\u0085", "é", "\u0131", "\uff10", "٣", "/", ",", "%", "$", "`", "@", "|", "*",
]  # fmt: skip
KEYWORDS = [
    "server", "backend", "frontend", "bind", "global", "defaults", "listen", "use_backend",
    "acl", "http-request", "tcp-request", "stats socket", "lua-load", "userlist", "check",
    "disabled", "weight 0", "ssl crt /etc/passwd", "$MAINSERVERS$", "dips://evil:1/A/B",
]  # fmt: skip
INJECTIONS = [
    "x\n    server {c} 6.6.6.6:443 check",
    "x\nbackend bk_{c}\n    server s1 6.6.6.6:1",
    "a #{c}",
    "a\r\nfrontend fe_{c}\n    bind :22",
    '"{c}"',
    "'{c}'",
    "{c}\x00tail",
    "Framework\n{c}",
    "1.2.3.4 {c}",
    "1.2.3.4:80\n{c}",
    "::1%{c}",
    "dips://{c}:9135/Framework/X,dips://x:1/Y/Z",
    "{c}" + "A" * 300 + " ",
    "\u202e{c}",
    "${{{c}}}",
    "{{{{ {c} }}}}",
    "{{% {c} %}}",
]  # fmt: skip


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    """A string that always holds the canary next to at least one forbidden character."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from(INJECTIONS)).format(c=CANARY)
    left = draw(st.sampled_from(["", *KEYWORDS]))
    sep = draw(st.sampled_from(FORBIDDEN))
    if kind == 1:
        return f"{left}{sep}{CANARY}"
    noise = draw(st.text(max_size=20))
    if kind == 2:
        return f"{noise}{sep}{CANARY}{sep}{left}"
    return f"{CANARY}{sep}{noise}" + "z" * draw(st.sampled_from([0, 70, 300, 5000]))


VALID_NAMES = st.from_regex(r"[A-Z][a-z]{2,8}", fullmatch=True).filter(lambda s: s != "Anchor")
MAP_PAIRS = [("Framework", "SystemAdministrator"), ("DataManagement", "FileCatalog"),
             ("WorkloadManagement", "JobManager")]  # fmt: skip


def maybe_hostile(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid, so that a catalog mixes good and bad entries (one field in ~6 hostile)."""
    return st.one_of(valid, valid, valid, valid, valid, hostile_text())


CLEAN_SYSTEMS = st.one_of(VALID_NAMES, st.sampled_from([p[0] for p in MAP_PAIRS]))
CLEAN_SERVICES = st.one_of(VALID_NAMES, st.sampled_from([p[1] for p in MAP_PAIRS]))
SYSTEMS = maybe_hostile(st.one_of(VALID_NAMES, st.sampled_from([p[0] for p in MAP_PAIRS])))
SERVICES = maybe_hostile(st.one_of(VALID_NAMES, st.sampled_from([p[1] for p in MAP_PAIRS])))
GOOD_ADDRESSES = st.one_of(
    st.sampled_from(["10.0.0.5", "192.0.2.7", "2001:db8::5", "backend-1.example.org", "B1.Org."]),
    st.ip_addresses().map(str),
)
BAD_ADDRESSES = st.sampled_from(["0.0.0.0", "::", "", "256.1.1.1", "1.2.3", "-bad-.org", "a..b",
                                 "\uff10.\uff10.\uff10.\uff10", "fe80::1%eth0", "1e100", "123",
                                 "a" * 64 + ".org", "::ffff:1.2.3.4 ", "localhost\n"])  # fmt: skip
ADDRESSES = st.one_of(GOOD_ADDRESSES, GOOD_ADDRESSES, GOOD_ADDRESSES, BAD_ADDRESSES,
                      hostile_text())  # fmt: skip
BAD_PORTS = st.sampled_from([0, 65536, -1, 99999, 2**63, True, None, 1.5, "0", "65536", "١٢٣",
                             "80 ", " 80", "0x50", "", "8443\n"])  # fmt: skip
PORTS = st.one_of(
    st.integers(1, 65535), st.integers(1, 65535), st.just("8443"), BAD_PORTS, hostile_text()
)
META_PORTS = st.one_of(
    st.none(), st.none(), st.none(), st.integers(1, 65535).map(str),
    st.sampled_from(["0", "65536", "abc", "9135", "7001", "12", "1e3", "٣", " 80"]),
    hostile_text(),
)  # fmt: skip
PROTOCOLS = st.one_of(
    st.none(), st.none(), st.sampled_from(["dips", "https"]),
    st.sampled_from(["http", "DIPS", "tcp", "", "dips "]), hostile_text(),
)  # fmt: skip
STATUSES = st.sampled_from(["passing", "passing", "passing", "warning", "critical", "bogus", 7])


@st.composite
def raw_entry(draw: st.DrawFn, ids: list[str]) -> Any:
    """One element of a health answer; sometimes of the wrong shape altogether."""
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return draw(st.sampled_from([None, 5, "entry", [], {"Node": "x"}, {"Service": []}]))
    clean = shape >= 12  # a well-formed entry (valid or invalid only by its health)
    meta: dict[str, Any] = {}
    for key, values in (
        ("dirac_system", CLEAN_SYSTEMS if clean else SYSTEMS),
        ("dirac_service", CLEAN_SERVICES if clean else SERVICES),
        ("dirac_protocol", st.sampled_from([None, "dips"]) if clean else PROTOCOLS),
        ("dirac_port", st.none() if clean else META_PORTS),
    ):
        value = draw(values)
        if value is not None:
            meta[key] = value
    if draw(st.booleans()):
        meta[draw(hostile_text())] = draw(hostile_text())
    service_id = draw(st.one_of(st.sampled_from(ids), maybe_hostile(VALID_NAMES)))
    node_name = draw(st.sampled_from(["node1", "node2", f"n{CANARY}\n#"]))
    service: dict[str, Any] = {
        "ID": service_id,
        "Service": "ignored",
        "Address": draw(GOOD_ADDRESSES if clean else ADDRESSES),
        "Port": draw(st.integers(1, 65535) if clean else PORTS),
        "Tags": draw(st.lists(maybe_hostile(st.just("dirac")), max_size=3)),
        "Meta": meta if shape != 1 else draw(st.sampled_from([None, [], "meta", 3])),
    }
    if shape == 2:
        service["Tags"] = "dirac"
    checks: Any = [
        {
            "CheckID": draw(st.sampled_from(["serfHealth", "service:x", "_node_maintenance"])),
            "Status": draw(STATUSES),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    if shape == 3:
        checks = draw(st.sampled_from(["passing", [1], {"Status": "passing"}]))
    node = {"Node": node_name, "Address": draw(ADDRESSES)}
    return {"Node": node, "Service": service, "Checks": checks}


@st.composite
def catalogs(draw: st.DrawFn) -> dict[str, Any]:
    """Consul service name -> raw health answer, plus the well-formed anchor service."""
    ids = ["dup-1", "dup-2"]  # shared IDs: duplicate instances on the same node
    result: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 5))):
        name = draw(maybe_hostile(VALID_NAMES.map(str.lower)))
        if draw(st.integers(0, 9)) == 0:
            result[name] = draw(st.sampled_from([None, {}, "x", 3]))  # not a list at all
        else:
            result[name] = draw(st.lists(raw_entry(ids), max_size=6))
    result["anchor"] = [anchor_entry()]
    return result


def anchor_entry() -> dict[str, Any]:
    node, sid = ANCHOR_KEY.split("/")
    return {
        "Node": {"Node": node, "Address": "10.9.9.9"},
        "Service": {"ID": sid, "Address": "10.1.1.1", "Port": 9135, "Tags": ["dirac"],
                    "Meta": {"dirac_system": ANCHOR[0], "dirac_service": ANCHOR[1]}},
        "Checks": [{"CheckID": "serfHealth", "Status": "passing"}],
    }  # fmt: skip


def snapshot_of(catalog: dict[str, Any], index: int = 10) -> Snapshot:
    """What the watcher builds: names Consul cannot be asked about are reported, not queried."""
    entries = []
    for name, payload in sorted(catalog.items()):
        try:
            consul_service_name(name)
        except ValueError as exc:
            entries.append(ServiceEntries(name, 0, (), error=str(exc)))
            continue
        entries.append(parse_health(name, index, payload))
    return Snapshot(tuple(entries), index)


def make_inputs(tmp: Path) -> pipeline.Inputs:
    raw = {
        "haproxy": {"runtime_dir": str(tmp / "run")},
        "ports": {"overrides": {f"{ANCHOR[0]}/{ANCHOR[1]}": ANCHOR_PORT}},
        "status": {"enabled": False},
    }
    settings = parse_settings(raw, "<test>", {})
    return pipeline.Inputs(
        settings,
        load_port_map(settings.port_map_path),
        load_template(data.path(data.TEMPLATE)),
    )


INPUTS = make_inputs(Path("/nonexistent/hostile"))


# The fixed text: the prelude rendered for an empty catalog, and the template's literal lines.
def prelude_of(inputs: pipeline.Inputs) -> frozenset[str]:
    return frozenset(pipeline.render(Snapshot(()), inputs, None).config.split("\n")) | {
        line
        for line in (data.path(data.TEMPLATE)).read_text().split("\n")
        if "{" not in line and "}" not in line
    }


PRELUDE = prelude_of(INPUTS)


# --- an independent oracle of what is valid -----------------------------------------------


def _host_ok(value: object) -> bool:
    if not isinstance(value, str) or not value or not value.isascii() or "%" in value:
        return False
    try:
        return not ipaddress.ip_address(value).is_unspecified
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    label = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
    return (
        len(name) <= 253
        and all(label.fullmatch(part) for part in name.split("."))
        and not name.replace(".", "").isdigit()
    )


def _port_ok(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,5}", value, re.ASCII):
            return False
        value = int(value)
    return isinstance(value, int) and 1 <= value <= 65535


def oracle_valid(meta: dict[str, str], address: str, port: object) -> bool:
    name = re.compile(NAME, re.ASCII)
    proto = meta.get("dirac_protocol")
    return bool(
        name.fullmatch(meta.get("dirac_system", ""))
        and name.fullmatch(meta.get("dirac_service", ""))
        and (proto is None or proto in ("dips", "https") or proto == "")
        and _host_ok(address)
        and _port_ok(port)
        and (meta.get("dirac_port") is None or _port_ok(meta["dirac_port"]))
    )


# --- the checks ---------------------------------------------------------------------------


def assert_config_clean(config: str, prelude: frozenset[str] = PRELUDE) -> None:
    assert CANARY not in config
    assert all(ch == "\n" or 32 <= ord(ch) < 127 for ch in config), "non-printable or non-ASCII"
    for line in config.split("\n"):
        if line in prelude:
            continue
        assert any(g.fullmatch(line) for g in LINE_GRAMMAR), f"line outside the grammar: {line!r}"


def assert_context_clean(context: dict[str, Any]) -> None:
    """What an operator's own template could print is inside the alphabet too."""
    for backend in context["backends"]:
        assert re.fullmatch(BACKEND, backend["name"], re.ASCII)
        assert re.fullmatch(f"{NAME}/{NAME}", backend["path"], re.ASCII)
        assert backend["protocol"] in ("dips", "https")
        assert isinstance(backend["public_port"], int) and 1 <= backend["public_port"] <= 65535
        for server in backend["servers"]:
            assert re.fullmatch(SERVER, server["name"])
            assert re.fullmatch(ADDR, server["addr"], re.ASCII), server["addr"]
            assert server["state"] in ("ready", "drain", "maint")


def assert_accounted(snapshot: Snapshot, rendered: pipeline.Rendered) -> None:
    desired = rendered.desired
    assert desired is not None
    problems = [str(p) for p in desired.problems]
    served = {s.instance for b in desired.backends for s in b.servers if s.instance}
    for entries in snapshot.services:
        if entries.error is not None:
            assert any(repr(entries.name) in p for p in problems), entries.name
            continue
        assert set(entries.problems) <= set(desired.problems)  # malformed shapes
        seen: set[str] = set()
        for inst in entries.instances:
            first, _ = inst.key not in seen, seen.add(inst.key)
            mentioned = any(repr(inst.key) in p for p in problems)
            valid = oracle_valid(dict(inst.meta), inst.address, inst.port)
            if not first or not valid:
                assert mentioned, f"rejected {inst.key!r} not reported"
                continue
            routable = inst.health in (Health.PASSING, Health.MAINTENANCE)
            path = f"{inst.meta_value('dirac_system')}/{inst.meta_value('dirac_service')}"
            if routable:
                assert inst.key in served or mentioned or any(path in p for p in problems), (
                    f"valid instance {inst.key!r} neither served nor reported"
                )


def assert_anchor_served(rendered: pipeline.Rendered) -> None:
    assert rendered.desired is not None
    backend = rendered.desired.backend(f"{ANCHOR[0]}_{ANCHOR[1]}")
    assert backend is not None and backend.public_port == ANCHOR_PORT
    ready = [s for s in backend.servers if s.state is ServerState.READY]
    assert [(s.address, s.port, s.instance) for s in ready] == [("10.1.1.1", 9135, ANCHOR_KEY)]
    name = server_name(ANCHOR_KEY)
    assert f"    server {name} 10.1.1.1:9135 check inter 2s" in rendered.config


def assert_cs_clean(rendered: pipeline.Rendered, cs_settings: CSSettings) -> None:
    assert rendered.desired is not None
    options = render_cs(rendered.desired, (GATEWAY,), cs_settings, {})
    assert options.lists, "the anchor service at least must be written"
    for path, values in options.lists:
        assert URL_OPTION.fullmatch(path), path
        assert values and all(URL.fullmatch(v) for v in values), values
        assert CANARY not in path and not any(CANARY in v for v in values)


@HYPOTHESIS
@given(catalogs())
def test_hostile_catalog_never_reaches_the_config(catalog: dict[str, Any]) -> None:
    snapshot = snapshot_of(catalog)
    rendered = pipeline.render(snapshot, INPUTS, None)
    assert_config_clean(rendered.config)
    assert rendered.desired is not None
    assert_context_clean(template_context(rendered.desired, INPUTS.settings))
    assert_accounted(snapshot, rendered)
    assert_anchor_served(rendered)
    assert_cs_clean(rendered, CSSettings())


@HYPOTHESIS
@given(catalogs(), catalogs())
def test_hostile_catalog_sequence_with_previous_state(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    """Sticky slots, the blast-radius guard and vanished services see hostile input too."""
    one = pipeline.render(snapshot_of(first, 10), INPUTS, None)
    two = pipeline.render(snapshot_of(second, 11), INPUTS, one)
    for rendered in (one, two):
        assert_config_clean(rendered.config)
        assert_anchor_served(rendered)
        assert rendered.desired is not None
        assert_context_clean(template_context(rendered.desired, INPUTS.settings))
    assert_cs_clean(two, CSSettings(failover_names=("failover.example.org",)))


@HYPOTHESIS
@given(st.lists(st.one_of(hostile_text(), st.just(GATEWAY)), min_size=1, max_size=4))
def test_hostile_gateway_names_never_reach_cs_urls(names: list[str]) -> None:
    """render_cs validates the gateway names itself (an operator typo, a bad discovery)."""
    rendered = pipeline.render(snapshot_of({"anchor": [anchor_entry()]}), INPUTS, None)
    assert rendered.desired is not None
    options = render_cs(rendered.desired, tuple(names), CSSettings(), {})
    if GATEWAY in names:
        assert options.lists
    else:
        assert options.lists == () and options.problems
    for _, values in options.lists:
        assert all(URL.fullmatch(v) for v in values)
    rejected = [p for p in options.problems if p.reason.startswith("gateway name ")]
    assert len(rejected) == len([n for n in names if n != GATEWAY])  # each one reported


def test_examples_cover_each_hostile_class() -> None:
    """The grammar rejects what it must (the property tests would be vacuous otherwise)."""
    for bad in ("    server s1 6.6.6.6:443 check\n    server INJECTED 1.1.1.1:1",
                "backend bk_a b", "# Framework/X\n (dips)"):  # fmt: skip
        assert not all(
            any(g.fullmatch(line) for g in LINE_GRAMMAR) or line in PRELUDE
            for line in bad.split("\n")
        )
    entry = anchor_entry()
    entry["Service"]["Meta"]["dirac_service"] = f"Anchor\n    server x 6.6.6.6:1 #{CANARY}"
    snapshot = snapshot_of({"anchor": [anchor_entry()], "evil": [entry]})
    rendered = pipeline.render(snapshot, INPUTS, None)
    assert_config_clean(rendered.config)
    assert rendered.desired is not None
    assert any("dirac_service" in p.reason for p in rendered.desired.problems)

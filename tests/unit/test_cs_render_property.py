"""Property tests of the CS lists (pure: ``render_cs`` and ``plan_cs``), as the CS writer of
one gateway uses them for the whole fleet.

Generated: 0-6 exposed backends (some sharing a DIRAC path on two ports or both protocols),
gateway names with unusable ones among them (a space, IPv6, empty), the v9 or v8 layout (v8
with instances for some systems only), MainServers, failover names, the Configuration
Server's options, pruning on or off, and a current CS whose URL options hold the gateway's
own URLs, other sites' URLs and URLs of services that left. For every combination:

- every option planned is one the gateway wants, or (pruning) one in the prune scope;
- no list is ever emptied: an option is written with values or deleted (pruning only);
- every URL written names a usable gateway or failover name (or ``$MAINSERVERS$``), never a
  name that failed validation, and one option never mixes ``dips`` and ``https``;
- pruning removes only the gateway's own URLs (its names' from URLs options, its failover
  names' from FailoverURLs options), never another site's, and after it no option of a
  service that left still holds a URL this gateway wrote there (found: the failover URLs of
  a service that left were never pruned, their names not counted as the gateway's own);
- the plan is idempotent: planned once more on the CS it produced, it is empty.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config.cs import CSSettings, Layout
from sidecar.core.model import Backend, DesiredState, Protocol, Server, ServerState
from sidecar.dirac_cs.render import (
    MAINSERVERS,
    CSChange,
    CSOptions,
    in_scope,
    plan_cs,
    render_cs,
    url_host,
)

SYSTEMS = ("Framework", "WorkloadManagement", "Configuration")
SERVICES = ("SystemAdministrator", "JobMonitoring", "Server")
GOOD = ("dirac-gw1.example.org", "dirac-gw2.example.org", "10.1.2.3", "GW3.Example.org")
BAD = ("bad name", "::1", "", "gw..example.org")
FAILOVER = ("failover1.example.org", "failover2.example.org")
FOREIGN = ("other-site.example.org", "dirac.cern.ch")
SETUP = "Production"
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")  # "deep": 5,000 examples

backend_st = st.builds(
    lambda system, service, port, protocol: Backend(
        system, service, protocol, port, (Server("s1", "10.0.0.1", 40000, ServerState.READY),)
    ),
    st.sampled_from(SYSTEMS),
    st.sampled_from(SERVICES),
    st.sampled_from((9135, 9162, 8443, 20001)),
    st.sampled_from(tuple(Protocol)),
)


@st.composite
def scenario(
    draw: st.DrawFn,
) -> tuple[DesiredState, tuple[str, ...], CSSettings, dict[str, str], dict[str, tuple[str, ...]]]:
    backends = draw(st.lists(backend_st, max_size=6, unique_by=lambda b: (b.path, b.public_port)))
    gateways = tuple(draw(st.lists(st.sampled_from(GOOD + BAD), min_size=1, max_size=4)))
    v8 = draw(st.booleans())
    cs_settings = CSSettings(
        layout=Layout.V8 if v8 else Layout.V9,
        setup=SETUP if v8 else "",
        use_mainservers=draw(st.booleans()),
        failover_names=tuple(draw(st.lists(st.sampled_from(FAILOVER), max_size=2, unique=True))),
        prune=draw(st.booleans()),
        configuration_servers=draw(st.booleans()),
        master_server=draw(st.booleans()),
    )
    instances = draw(st.lists(st.sampled_from(SYSTEMS), unique=True)) if v8 else []
    raw = {f"/DIRAC/Setups/{SETUP}/{system}": "Prod" for system in instances}
    bases = [f"/Systems/{s}/Prod" for s in instances] if v8 else [f"/Systems/{s}" for s in SYSTEMS]
    paths = [f"{base}/{kind}/{svc}" for base in bases for kind in ("URLs", "FailoverURLs")
             for svc in SERVICES]  # fmt: skip
    hosts = st.sampled_from((*GOOD, *FAILOVER, *FOREIGN, MAINSERVERS)).map(str.lower)
    protocols, ports = st.sampled_from(("dips", "https")), st.sampled_from((9162, 20001))
    url = st.builds(lambda proto, host, port: f"{proto}://{host}:{port}/Framework/X",
                    protocols, hosts, ports)  # fmt: skip
    values = st.lists(url, min_size=1, max_size=4, unique=True).map(tuple)
    current = draw(st.dictionaries(st.sampled_from(paths), values, max_size=6)) if paths else {}
    return DesiredState(tuple(backends)), gateways, cs_settings, raw, current


def applied(
    current: dict[str, tuple[str, ...]], changes: tuple[CSChange, ...]
) -> dict[str, tuple[str, ...]]:
    after = dict(current)
    for change in changes:
        if change.new is None:
            after.pop(change.path, None)
        else:
            after[change.path] = change.new
    return after


def written_by_gateway(options: CSOptions, path: str) -> set[str]:
    """The hosts of the URLs this gateway writes in option ``path``."""
    failover = path.split("/")[-2] == "FailoverURLs"
    return {h.lower() for h in (options.owned_failover if failover else options.owned_hosts)}


@settings(
    max_examples={"ci": 300, "deep": 5000}.get(PROFILE, 300),
    derandomize=PROFILE != "random",
    deadline=None,
    database=None,
)
@given(scenario())
def test_cs_lists_only_the_gateways_urls_never_empty_idempotent(
    case: tuple[
        DesiredState, tuple[str, ...], CSSettings, dict[str, str], dict[str, tuple[str, ...]]
    ],
) -> None:
    desired, gateways, cs_settings, raw, current = case
    options = render_cs(desired, gateways, cs_settings, raw)
    wanted = options.as_dict()
    changes = plan_cs(current, options, prune=cs_settings.prune)
    usable = {g.lower() for g in gateways if g in GOOD}
    allowed = usable | {f.lower() for f in cs_settings.failover_names} | {MAINSERVERS.lower()}
    for path, values in wanted.items():
        assert values, path
        if path.endswith("/MainServers"):
            assert {v.lower() for v in values} <= usable
            continue
        assert {url_host(v) for v in values} <= allowed, (path, values)
        assert len({v.split("://", 1)[0] for v in values}) == 1, (path, values)
    for change in changes:
        assert change.new is None or change.new, change
        if change.path in wanted:
            assert change.new == wanted[change.path]
            continue
        assert cs_settings.prune and in_scope(change.path, options.prune_scope), change
        old, new = set(change.old or ()), set(change.new or ())
        assert new < old  # pruning only takes away
        assert {url_host(v) for v in old - new} <= written_by_gateway(options, change.path)
    after = applied(current, changes)
    assert plan_cs(after, options, prune=cs_settings.prune) == ()
    if cs_settings.prune and wanted:  # nothing usable: the CS is left alone, not pruned
        for path, values in after.items():
            if path not in wanted and in_scope(path, options.prune_scope):
                mine = written_by_gateway(options, path)
                assert not {url_host(v) for v in values} & mine, (path, values)

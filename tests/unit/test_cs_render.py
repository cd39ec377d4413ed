"""CS rendering and planning (pure): plain values in, plain values out."""

from __future__ import annotations

from sidecar.config.cs import CSSettings, Layout
from sidecar.core.model import Backend, DesiredState, Protocol, Server, ServerState
from sidecar.dirac_cs.render import (
    CSChange,
    CSOptions,
    in_scope,
    plan_cs,
    render_cs,
    split_values,
    url_host,
)

GW = ("dirac-gw2.example.org", "dirac-gw1.example.org")
SA = "/Systems/Framework/URLs/SystemAdministrator"
SA_URLS = (
    "dips://dirac-gw1.example.org:9162/Framework/SystemAdministrator",
    "dips://dirac-gw2.example.org:9162/Framework/SystemAdministrator",
)


def backend(
    system: str,
    service: str,
    port: int,
    protocol: Protocol = Protocol.DIPS,
    ready: bool = True,
) -> Backend:
    state = ServerState.READY if ready else ServerState.MAINT
    return Backend(system, service, protocol, port, (Server("s1", "10.0.0.1", 40000, state),))


DESIRED = DesiredState(
    (
        backend("Framework", "SystemAdministrator", 9162),
        backend("WorkloadManagement", "JobMonitoring", 8443, Protocol.HTTPS),
        backend("Configuration", "Server", 9135, Protocol.HTTPS),
    )
)
V8_CS = {
    "/DIRAC/Setup": "LHCb-Production",
    "/DIRAC/Setups/LHCb-Production/Framework": "Production",
    "/DIRAC/Setups/LHCb-Production/WorkloadManagement": "Prod2",
    "/DIRAC/Setups/LHCb-Certification/Framework": "Certification",
}


def test_v9_urls_for_every_gateway_sorted() -> None:
    options = render_cs(DESIRED, GW, CSSettings(), {}).as_dict()
    assert options[SA] == SA_URLS
    assert options["/Systems/WorkloadManagement/URLs/JobMonitoring"] == (
        "https://dirac-gw1.example.org:8443/WorkloadManagement/JobMonitoring",
        "https://dirac-gw2.example.org:8443/WorkloadManagement/JobMonitoring",
    )
    assert set(options) == {
        SA,
        "/Systems/WorkloadManagement/URLs/JobMonitoring",
        "/Systems/Configuration/URLs/Server",
    }


def test_lists_sorted_by_path_and_deterministic() -> None:
    first = render_cs(DESIRED, GW, CSSettings(), {})
    reordered = DesiredState(tuple(reversed(DESIRED.backends)))
    assert render_cs(reordered, tuple(reversed(GW)), CSSettings(), {}) == first
    paths = [path for path, _ in first.lists]
    assert paths == sorted(paths)


def test_backend_without_ready_server_is_still_written() -> None:
    desired = DesiredState((backend("Framework", "SystemAdministrator", 9162, ready=False),))
    assert render_cs(desired, GW, CSSettings(), {}).as_dict() == {SA: SA_URLS}


def test_mainservers_form_v9() -> None:
    options = render_cs(DESIRED, GW, CSSettings(use_mainservers=True), {}).as_dict()
    assert options[SA] == ("dips://$MAINSERVERS$:9162/Framework/SystemAdministrator",)
    assert options["/Operations/Defaults/MainServers"] == (
        "dirac-gw1.example.org",
        "dirac-gw2.example.org",
    )


def test_v8_layout_uses_the_setup_instances() -> None:
    settings = CSSettings(layout=Layout.V8, use_mainservers=True)
    result = render_cs(DESIRED, GW, settings, V8_CS)
    options = result.as_dict()
    assert options["/Systems/Framework/Production/URLs/SystemAdministrator"] == (
        "dips://$MAINSERVERS$:9162/Framework/SystemAdministrator",
    )
    assert "/Systems/WorkloadManagement/Prod2/URLs/JobMonitoring" in options
    assert options["/Operations/LHCb-Production/MainServers"] == tuple(sorted(GW))
    # Configuration has no instance in this setup: reported, not written
    assert not any(path.startswith("/Systems/Configuration") for path in options)
    assert any("Configuration" in problem.subject for problem in result.problems)


def test_v8_setup_setting_overrides_the_file() -> None:
    settings = CSSettings(layout=Layout.V8, setup="LHCb-Certification")
    options = render_cs(DESIRED, GW, settings, V8_CS).as_dict()
    assert set(options) == {"/Systems/Framework/Certification/URLs/SystemAdministrator"}


def test_v8_without_setup_writes_nothing() -> None:
    result = render_cs(DESIRED, GW, CSSettings(layout=Layout.V8), {})
    assert result.lists == ()
    assert result.problems


def test_https_and_dips_never_mixed() -> None:
    desired = DesiredState(
        (
            backend("Framework", "SystemAdministrator", 9162),
            backend("Framework", "SystemAdministrator", 8443, Protocol.HTTPS),
        )
    )
    result = render_cs(desired, GW, CSSettings(), {})
    assert SA not in result.as_dict()
    assert result.problems
    for _, values in render_cs(DESIRED, GW, CSSettings(), {}).lists:
        assert len({value.split("://")[0] for value in values}) == 1


def test_failover_urls() -> None:
    settings = CSSettings(failover_names=("dr-gw.example.org",))
    options = render_cs(DESIRED, GW, settings, {}).as_dict()
    assert options["/Systems/Framework/FailoverURLs/SystemAdministrator"] == (
        "dips://dr-gw.example.org:9162/Framework/SystemAdministrator",
    )


def test_configuration_servers_and_master() -> None:
    settings = CSSettings(configuration_servers=True, master_server=True)
    options = render_cs(DESIRED, GW, settings, {}).as_dict()
    assert options["/DIRAC/Configuration/Servers"] == (
        "https://dirac-gw1.example.org:9135/Configuration/Server",
        "https://dirac-gw2.example.org:9135/Configuration/Server",
    )
    # a single URL: the first gateway name as configured
    assert options["/DIRAC/Configuration/MasterServer"] == (
        "https://dirac-gw2.example.org:9135/Configuration/Server",
    )
    assert "/DIRAC/Configuration/Servers" not in render_cs(DESIRED, GW, CSSettings(), {}).as_dict()


def test_bad_gateway_names_are_skipped_and_none_left_means_nothing() -> None:
    result = render_cs(DESIRED, ("bad name", "DIRAC-GW1.example.org.", "::1"), CSSettings(), {})
    assert result.as_dict()[SA] == (
        "dips://dirac-gw1.example.org:9162/Framework/SystemAdministrator",
    )
    assert len(result.problems) == 2
    empty = render_cs(DESIRED, (), CSSettings(), {})
    assert empty.lists == () and empty.problems
    assert plan_cs({SA: SA_URLS}, empty, prune=True) == ()


def test_plan_compares_lists_as_sets() -> None:
    desired = render_cs(DESIRED, GW, CSSettings(), {})
    current = {path: tuple(reversed(values)) + values[:1] for path, values in desired.lists}
    assert plan_cs(current, desired) == ()
    raw = ", ".join(SA_URLS) + ",  " + SA_URLS[0] + " ,"
    assert split_values(raw) == (*SA_URLS, SA_URLS[0])


def test_plan_creates_and_updates() -> None:
    desired = render_cs(DESIRED, GW, CSSettings(), {})
    current = {SA: ("dips://old.example.org:9162/Framework/SystemAdministrator",)}
    changes = {change.path: change for change in plan_cs(current, desired)}
    assert changes[SA] == CSChange(SA, current[SA], SA_URLS)
    assert changes["/Systems/Configuration/URLs/Server"].old is None
    assert [c.path for c in plan_cs(current, desired)] == sorted(changes)


def test_plan_never_writes_an_empty_list() -> None:
    desired = CSOptions(lists=((SA, ()),))
    assert plan_cs({SA: SA_URLS}, desired) == ()
    assert plan_cs({}, desired) == ()


GONE = "/Systems/Framework/URLs/Notification"
GONE_URLS = (
    "dips://dirac-gw1.example.org:9154/Framework/Notification",
    "dips://direct.example.org:9154/Framework/Notification",
)


def test_pruning_is_off_by_default() -> None:
    desired = render_cs(DESIRED, GW, CSSettings(), {})
    current = {**desired.as_dict(), GONE: GONE_URLS}
    assert plan_cs(current, desired) == ()


def test_pruning_removes_only_the_gateway_urls() -> None:
    desired = render_cs(DESIRED, GW, CSSettings(prune=True), {})
    only_gw = "/Systems/Bookkeeping/URLs/Query"
    current = {
        **desired.as_dict(),
        GONE: GONE_URLS,
        only_gw: ("dips://dirac-gw2.example.org:9170/Bookkeeping/Query",),
        "/Systems/Other/URLs/Direct": ("dips://direct.example.org:1/Other/Direct",),
        "/Resources/Sites/X/URLs/Y": ("dips://dirac-gw1.example.org:1/A/B",),  # out of scope
    }
    changes = plan_cs(current, desired, prune=True)
    assert changes == (
        CSChange(only_gw, current[only_gw], None),
        CSChange(GONE, GONE_URLS, GONE_URLS[1:]),
    )


def test_pruning_removes_the_failover_urls_it_wrote_and_only_those() -> None:
    settings = CSSettings(prune=True, failover_names=("fo.example.org",))
    desired = render_cs(DESIRED, GW, settings, {})
    gone = "/Systems/Bookkeeping/FailoverURLs/Query"
    mine = "dips://fo.example.org:9170/Bookkeeping/Query"
    current = {**desired.as_dict(), gone: (mine, "dips://dirac-gw1.example.org:9170/B/Q")}
    # a gateway name in a FailoverURLs option is not what this gateway wrote there: kept
    assert plan_cs(current, desired, prune=True) == (
        CSChange(gone, current[gone], current[gone][1:]),
    )


def test_prune_scope_v8_is_per_instance() -> None:
    result = render_cs(DESIRED, GW, CSSettings(layout=Layout.V8), V8_CS)
    assert in_scope("/Systems/Framework/Production/URLs/X", result.prune_scope)
    assert not in_scope("/Systems/Framework/Certification/URLs/X", result.prune_scope)
    assert not in_scope("/Systems/Framework/URLs/X", result.prune_scope)


def test_url_host() -> None:
    assert url_host("dips://Host.Example.org:9162/A/B") == "host.example.org"
    assert url_host("dips://$MAINSERVERS$:9162/A/B") == "$mainservers$"
    assert url_host("not a url") is None

"""Pure parts of the fleet view and the lock: lagging gateways, the published index, durations."""

from __future__ import annotations

import pytest

from sidecar.config.durations import consul_duration, parse_duration
from sidecar.core.model import ServiceEntries, Snapshot
from sidecar.fleet.lock import takeover_bound
from sidecar.fleet.registry import catalog_index
from sidecar.fleet.view import GatewayInfo, lagging


def gw(name: str, index: int, generation: str, status: str = "passing") -> GatewayInfo:
    return GatewayInfo(name, f"node-{name}", generation, index, status, (name,))


def test_nobody_lags_when_all_agree() -> None:
    assert lagging([gw("a", 10, "g1"), gw("b", 10, "g1"), gw("c", 10, "g1")]) == ()
    assert lagging([]) == ()
    assert lagging([gw("a", 10, "g1")]) == ()


def test_lower_index_lags() -> None:
    assert lagging([gw("a", 10, "g1"), gw("b", 9, "g1"), gw("c", 10, "g1")]) == ("b",)


def test_generation_outside_the_majority_lags() -> None:
    assert lagging([gw("a", 10, "g1"), gw("b", 10, "g2"), gw("c", 10, "g1")]) == ("b",)


def test_a_tie_has_no_majority_so_only_the_index_decides() -> None:
    assert lagging([gw("a", 10, "g1"), gw("b", 10, "g2")]) == ()
    assert lagging([gw("a", 10, "g1"), gw("b", 8, "g2")]) == ("b",)


def test_a_gateway_without_a_generation_lags() -> None:
    assert lagging([gw("a", 10, "g1"), gw("b", 10, "")]) == ("b",)
    assert lagging([gw("a", 0, ""), gw("b", 0, "")]) == ()


def test_both_reasons_are_reported_once_sorted() -> None:
    fleet = [gw("z", 5, "g2"), gw("a", 10, "g1"), gw("m", 10, "g1"), gw("b", 10, "g3")]
    assert lagging(fleet) == ("b", "z")


def test_catalog_index_ignores_the_services_list_index() -> None:
    snapshot = Snapshot(
        (ServiceEntries("a", 40, ()), ServiceEntries("b", 55, ()), ServiceEntries("c", 7, ())),
        index=999,  # moved by the gateways' own registrations: never published
    )
    assert catalog_index(snapshot) == 55
    assert catalog_index(Snapshot(())) == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0), ("0s", 0.0), ("1.5s", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "s", "15 s", "-1s", "1w", "15s junk"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_consul_duration_and_takeover_bound() -> None:
    assert consul_duration(15.0) == "15000ms"
    assert consul_duration(0.0) == "0ms"
    assert takeover_bound(15.0, 5.0) == 36.0
    # with the writer check (the daemon's defaults): inside the product's 5 s
    assert takeover_bound(15.0, 1.0, check_ttl=2.0) == pytest.approx(3.6)

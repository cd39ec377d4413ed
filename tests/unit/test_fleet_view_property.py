"""Property tests of gateway discovery (pure: ``fleet.view.advertised_names``), the names the
CS writer advertises for the whole fleet when ``dirac_cs.discover_gateways`` is on.

Generated: 0-6 passing ``dirac-gateway`` entries as Consul returns them, written by anyone:
with or without a check of their own (or one bound to another service ID, or failing), and
names drawn from the allowed domain, another domain, the same names in upper case or with a
trailing dot, IP addresses and unusable text (a space, an empty label, a leading hyphen). For
every combination:

- every advertised name is canonical (lower case, no trailing dot), inside ``allowed`` and
  written by an entry whose own checks all pass; no name is both advertised and refused;
- every usable, allowed name of a ready entry is advertised (written in any case, once:
  found, names were advertised as written, so one gateway could be listed twice);
- every name written is accounted for: advertised or refused;
- the answer does not depend on the order of Consul's entries, and a ready entry added
  never takes a name away.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.base import validate
from sidecar.fleet.registry import META_NAMES
from sidecar.fleet.view import advertised_names, allowed_name

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")  # "deep": 5,000 examples
ALLOWED = (".example.org", "gw.partner.net")
BASE = ("dirac-gw", "gw2", "gw-3.site")
NAMES = st.one_of(
    st.sampled_from(BASE).map(lambda n: f"{n}.example.org"),
    st.sampled_from(BASE).map(lambda n: f"{n.upper()}.Example.ORG"),
    st.sampled_from(BASE).map(lambda n: f"{n}.example.org."),
    st.just("gw.partner.net"),
    st.just("GW.partner.net."),
    st.sampled_from(BASE).map(lambda n: f"{n}.evil.com"),
    st.just("example.org"),
    st.sampled_from(("10.0.0.1", "::1", "2001:db8::1")),
    st.sampled_from(
        ("bad name.example.org", "a..example.org", "-x.example.org", "x_y.example.org")
    ),
)


def _check(owner: str, status: str) -> dict[str, str]:
    return {"CheckID": f"c-{owner}", "ServiceID": owner, "Status": status}


@st.composite
def entries(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for k in range(draw(st.integers(0, 6))):
        sid = f"gw-{k}"
        names = draw(st.lists(NAMES, max_size=4))
        checks = [_check("", "passing")]  # the node's serfHealth: no service ID
        own = draw(st.sampled_from(("passing", "passing", "none", "other", "critical")))
        if own == "passing":
            checks.append(_check(sid, "passing"))
        elif own == "other":
            checks.append(_check(f"{sid}-x", "passing"))
        elif own == "critical":
            checks += [_check(sid, "passing"), _check(sid, "critical")]
        out.append(
            {
                "Service": {"ID": sid, "Meta": {META_NAMES: " , ".join(names)}},
                "Checks": checks,
            }
        )
    return out


def _ready(entry: dict[str, Any]) -> bool:
    own = [c for c in entry["Checks"] if c["ServiceID"] == entry["Service"]["ID"]]
    return bool(own) and all(c["Status"] == "passing" for c in own)


def _written(entry: dict[str, Any]) -> list[str]:
    return [n.strip() for n in entry["Service"]["Meta"][META_NAMES].split(",") if n.strip()]


def _canonical(raw: str) -> str | None:
    try:
        return validate.host(raw)
    except ValueError:
        return None


@settings(
    max_examples={"ci": 300, "deep": 5000}.get(PROFILE, 300),
    derandomize=PROFILE != "random",
    deadline=None,
)
@given(entries(), st.randoms(use_true_random=False))
def test_advertised_names(found: list[dict[str, Any]], rng: Any) -> None:
    names, refused = advertised_names(found, ALLOWED)
    assert not set(names) & set(refused)
    assert list(names) == sorted(set(names))
    ready = {c for e in found if _ready(e) for r in _written(e) if (c := _canonical(r))}
    for name in names:
        assert _canonical(name) == name, name
        assert allowed_name(name, ALLOWED), name
        assert name in ready, name
    for entry in found:
        for raw in _written(entry):
            canonical = _canonical(raw)
            if _ready(entry) and canonical and allowed_name(canonical, ALLOWED):
                assert canonical in names, raw
            assert canonical in names or (canonical or raw) in refused, raw
    shuffled = list(found)
    rng.shuffle(shuffled)
    assert advertised_names(shuffled, ALLOWED) == (names, refused)
    extra = {
        "Service": {"ID": "gw-new", "Meta": {META_NAMES: "gw9.example.org"}},
        "Checks": [_check("gw-new", "passing")],
    }
    more, _ = advertised_names([*found, extra], ALLOWED)
    assert set(names) <= set(more) and "gw9.example.org" in more


def test_one_gateway_written_two_ways_is_listed_once() -> None:
    written = ["dirac-gw.example.org", "DIRAC-GW.Example.org.", "dirac-gw.example.org."]
    found = [
        {
            "Service": {"ID": f"gw-{k}", "Meta": {META_NAMES: name}},
            "Checks": [_check(f"gw-{k}", "passing")],
        }
        for k, name in enumerate(written)
    ]
    assert advertised_names(found, ALLOWED) == (("dirac-gw.example.org",), ())

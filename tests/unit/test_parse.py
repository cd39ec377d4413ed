import json

from sidecar.consul.parse import aggregate_health, parse_health, tagged_services
from sidecar.core.model import Health


def entry(checks: list[dict[str, str]], **service: object) -> dict[str, object]:
    svc = {
        "ID": "s1",
        "Service": "sysadmin",
        "Tags": ["dirac"],
        "Address": "10.0.0.5",
        "Port": 31000,
        "Meta": {"dirac_system": "Framework"},
    }
    svc.update(service)
    return {"Node": {"Node": "n1", "Address": "10.0.0.9"}, "Service": svc, "Checks": checks}


def test_health_aggregation() -> None:
    ok = {"CheckID": "serfHealth", "Status": "passing"}
    assert aggregate_health([ok]) is Health.PASSING
    assert aggregate_health([ok, {"CheckID": "c", "Status": "warning"}]) is Health.WARNING
    assert aggregate_health([ok, {"CheckID": "c", "Status": "critical"}]) is Health.CRITICAL
    maint = {"CheckID": "_service_maintenance:s1", "Status": "critical"}
    assert aggregate_health([ok, maint]) is Health.MAINTENANCE
    assert (
        aggregate_health([{"CheckID": "_node_maintenance", "Status": "critical"}])
        is Health.MAINTENANCE
    )
    # maintenance of an instance that is failing anyway: out, not drained
    assert aggregate_health([maint, {"CheckID": "c", "Status": "critical"}]) is Health.CRITICAL
    assert aggregate_health([{"CheckID": "c", "Status": "bogus"}]) is Health.CRITICAL


def test_parse_falls_back_to_node_address_and_sorts() -> None:
    answer = [entry([], ID="b", Address=""), entry([], ID="a")]
    parsed = parse_health("sysadmin", 7, answer)
    assert [i.service_id for i in parsed.instances] == ["a", "b"]
    assert parsed.instances[1].address == "10.0.0.9"
    assert parsed.instances[0].meta_value("dirac_system") == "Framework"


def test_malformed_entries_are_reported_not_fatal() -> None:
    parsed = parse_health("x", 1, [42, {"Node": "n"}, entry([], Tags="dirac"), entry([])])
    assert len(parsed.instances) == 1
    assert len(parsed.problems) == 3
    assert parse_health("x", 1, {"not": "a list"}).error is not None


def test_hostile_types_are_neutralised() -> None:
    parsed = parse_health("x", 1, [entry([], Port=True, Address=["x"], Meta="no")])
    (instance,) = parsed.instances
    # a garbage Service.Address must not fall back to the node address: it is rejected later
    assert instance.port is None and instance.address == "" and instance.meta == ()


def test_tagged_services() -> None:
    body = {"b": ["dirac"], "a": ["dirac", "x"], "c": ["other"], "d": "dirac", "consul": []}
    assert tagged_services(body, "dirac") == ("a", "b")
    assert tagged_services(["x"], "dirac") == ()


def test_repeated_words_are_one_object_across_answers() -> None:
    """Two answers decoded apart (fresh strings each) share their words; the values stay
    what Consul said."""
    text = json.dumps([entry([], Meta={"dirac_system": "Framework", "dirac_port": 9162})])
    a = parse_health("x", 1, json.loads(text)).instances[0]
    b = parse_health("x", 2, json.loads(text)).instances[0]
    assert a == b and a.meta == (("dirac_port", "9162"), ("dirac_system", "Framework"))
    assert a.meta[1][1] is b.meta[1][1] and a.tags[0] is b.tags[0]
    assert a.node is b.node and a.address is b.address


def test_instances_of_one_answer_share_their_tags_and_metadata_tuples() -> None:
    """One tuple per answer for equal tags / metadata (instances of a service carry the
    same); not across answers, so nothing outlives the instances that carry it."""
    meta = {"dirac_system": "Framework", "dirac_service": "SystemAdministrator"}
    one = entry([], Meta=meta)
    other = json.loads(json.dumps(one))
    other["Service"]["ID"] = "second"
    a, b = parse_health("x", 1, [one, other]).instances
    assert a.key != b.key and a.meta == b.meta and a.meta is b.meta and a.tags is b.tags
    c = parse_health("x", 2, [json.loads(json.dumps(one))]).instances[0]
    assert c.meta == a.meta and c.meta is not a.meta

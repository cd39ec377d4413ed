"""Whole rendered configs compared with golden files (UPDATE_GOLDEN=1 rewrites them)."""

import os
from pathlib import Path

import pytest

from sidecar.config.schema import HAProxySettings
from sidecar.core.model import Health
from sidecar.core.pipeline import Inputs, render
from sidecar.haproxy.inputs import load_template
from tests.unit.factories import inst, port_map, settings, snap

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; UPDATE_GOLDEN=1 rewrites it"


def inputs(**haproxy: object) -> Inputs:
    s = settings(**haproxy)
    return Inputs(s, port_map(), load_template(s.template_path))


CATALOG = snap(
    (
        "sysadmin",
        [
            inst("a", "10.0.0.1", 31001),
            inst("b", "10.0.0.2", 31002, Health.MAINTENANCE),
            inst("c", "10.0.0.3", 31003, Health.CRITICAL),
        ],
    ),
    (
        "filecatalog",
        [
            inst(
                "fc",
                "2001:db8::7",
                32000,
                system="DataManagement",
                service="FileCatalog",
                consul="filecatalog",
            )
        ],
    ),
    (
        "tpm",
        [
            inst(
                "t",
                "10.0.1.1",
                8443,
                system="Framework",
                service="TornadoProxyManager",
                consul="tpm",
                dirac_protocol="https",
            )
        ],
    ),
    (
        "down",
        [
            inst(
                "d",
                "10.0.2.1",
                9999,
                Health.CRITICAL,
                system="Framework",
                service="Notification",
                consul="down",
            )
        ],
    ),
)


def test_golden_gateway() -> None:
    rendered = render(CATALOG, inputs(), None)
    check_golden("gateway.cfg", rendered.config)


def test_golden_empty_catalog() -> None:
    check_golden("empty.cfg", render(snap(), inputs(), None).config)


def test_golden_with_logging_and_settings() -> None:
    rendered = render(
        CATALOG,
        inputs(log_target="/dev/log local0", balance="roundrobin", hard_stop_after="2h"),
        None,
    )
    check_golden("gateway-logging.cfg", rendered.config)


def test_same_catalog_same_bytes() -> None:
    assert render(CATALOG, inputs(), None).config == render(CATALOG, inputs(), None).config


def test_timeouts_suit_long_dirac_rpcs() -> None:
    config = render(CATALOG, inputs(), None).config
    assert "timeout client 660s" in config and "timeout server 660s" in config
    assert "send-proxy" not in config  # DISET backends break on the PROXY protocol
    # TLS passes through: no ssl keyword anywhere but the line that turns HAProxy's own
    # HTTP client's CA loading off (it is never used)
    passthrough = config.replace("srv_use_ssl", "").replace("httpclient.ssl.verify none", "")
    assert "mode tcp" in config and "ssl" not in passthrough
    assert "\n    httpclient.ssl.verify none\n" in config


def test_strict_undefined(tmp_path: Path) -> None:
    from sidecar.base.errors import TemplateError
    from sidecar.core.render import render_config

    bad = tmp_path / "bad.j2"
    bad.write_text("global\n    maxconn {{ settings.no_such_key }}\n")
    s = settings()
    with pytest.raises(TemplateError, match="no_such_key"):
        render_config(load_template(bad), render(CATALOG, inputs(), None).desired, s)  # type: ignore[arg-type]
    broken = tmp_path / "broken.j2"
    broken.write_text("{% for x in %}\n")
    with pytest.raises(TemplateError, match=r"broken\.j2:1"):
        load_template(broken)


def test_haproxy_settings_defaults_are_sane() -> None:
    h = HAProxySettings()
    assert h.timeout_client == 660.0 and h.balance == "leastconn"
    assert h.timeout_client >= 600.0, "DIRAC RPCs may be silent for 600 s (dirac.md)"

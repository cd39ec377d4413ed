import tomllib
from dataclasses import fields, replace
from pathlib import Path

import pytest

from sidecar import data
from sidecar.base.errors import ConfigError
from sidecar.config.loader import load_settings, parse_settings
from sidecar.config.schema import SECTIONS, Settings
from sidecar.config.validation import validate_section

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = data.path(data.EXAMPLE_SETTINGS)


def strip(settings: Settings) -> Settings:
    return replace(settings, source="", consul_configured=False)


def test_example_file_documents_exactly_the_defaults() -> None:
    """Every key of the example carries the default value, and every default key is there."""
    example = load_settings(str(EXAMPLE), env={})
    assert strip(example) == strip(Settings())
    raw = tomllib.loads(EXAMPLE.read_text())
    for section in (
        "consul",
        "gateway",
        "ports",
        "haproxy",
        "apply",
        "log",
        "dirac_cs",
        "check",
        "certs",
        "status",
        "drain",
    ):
        keys = {f.name for f in fields(type(getattr(Settings(), section)))}
        documented = set(raw.get(section, {}))
        if section == "ports":
            documented.add("overrides")
        assert keys == documented, f"[{section}] example and defaults differ"


def test_dev_config_loads() -> None:
    s = load_settings(str(ROOT / "configs" / "dev.toml"), env={})
    assert s.gateway.bind == "127.0.0.1"
    assert Path(s.haproxy.runtime_dir).is_absolute()
    assert not s.consul_configured


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[consul]\nwait = 900\n", "consul.wait", "must be <= 600"),
        ("[consul]\nadress = 'x'\n", "consul.adress", "unknown key"),
        ("[consul]\naddress = 'tcp://x'\n", "consul.address", "http"),
        ("[gateway]\nnames = []\n", "gateway.names", "at least one"),
        ("[gateway]\nnames = ['bad name']\n", "gateway.names[0]", "neither an IP"),
        ("[gateway]\nbind = 'any'\n", "gateway.bind", "not an IP"),
        ("[haproxy]\nmaxconn = '4'\n", "haproxy.maxconn", "expected an integer"),
        ("[haproxy]\nmanage = 1\n", "haproxy.manage", "true or false"),
        (
            "[ports.overrides]\n'Framework' = 9162\n",
            'ports.overrides."Framework"',
            "System/Service",
        ),
        ("[ports.overrides]\n'A/B' = 70000\n", 'ports.overrides."A/B"', "out of range"),
        ("[bogus]\nx = 1\n", "bogus", "unknown section"),
        ("[log]\nformat = 'xml'\n", "log.format", "plain"),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.source == path and info.value.key == key
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{path}: {key}: ")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[consul\n"), env={})


def test_missing_explicit_file_is_an_error_but_default_location_is_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(str(tmp_path / "nope.toml"), env={})
    assert isinstance(load_settings(None, env={"SIDECAR_CONFIG": ""}), Settings)


def test_consul_environment_variables_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    env = {
        "CONSUL_HTTP_ADDR": "127.0.0.1:8501",
        "CONSUL_HTTP_SSL": "true",
        "CONSUL_HTTP_TOKEN_FILE": "/etc/token",
        "CONSUL_CACERT": "/etc/ca.pem",
    }
    s = parse_settings({}, "x", env)
    assert s.consul.address == "https://127.0.0.1:8501" and s.consul_configured
    assert s.consul.token_file == "/etc/token" and s.consul.ca_file == "/etc/ca.pem"
    s = parse_settings({"consul": {"address": "http://10.0.0.1:8500"}}, "x", env)
    assert s.consul.address == "http://10.0.0.1:8500"
    assert not parse_settings({}, "x", {}).consul_configured


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    s = load_settings(
        write(tmp_path, "[haproxy]\nruntime_dir = 'run'\ntemplate = '/abs.j2'\n"), env={}
    )
    assert s.haproxy.runtime_dir == str(tmp_path / "run")
    assert s.haproxy.template == "/abs.j2"


def test_overrides_parse() -> None:
    s = parse_settings({"ports": {"overrides": {"B/C": 2, "A/B": 1}}}, "x", {})
    assert s.ports.overrides == (("A/B", 1), ("B/C", 2))


def test_files_writable_by_others_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[log]\nlevel = 'INFO'\n")
    Path(path).chmod(0o666)
    with pytest.raises(ConfigError, match="writable by others"):
        load_settings(path, env={})
    Path(path).chmod(0o644)
    assert load_settings(path, env={}).log.level == "INFO"


def test_templates_writable_by_others_are_refused(tmp_path: Path) -> None:
    from sidecar.base.errors import TemplateError
    from sidecar.haproxy.inputs import load_template

    template = tmp_path / "t.j2"
    template.write_text("global\n")
    template.chmod(0o646)
    with pytest.raises(TemplateError, match="writable by others"):
        load_template(template)


def test_every_default_passes_its_own_rules() -> None:
    """Defaults are trusted (not validated at load): each section's defaults, fed back through
    the validator, come out unchanged and without a problem."""
    for name, section in SECTIONS.items():
        default = getattr(Settings(), name)
        raw = {f.name: getattr(default, f.name) for f in fields(section)}
        value, problems = validate_section(section, raw, name)
        assert problems == [] and value == default, name

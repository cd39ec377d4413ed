"""The daemon's settings, validated in a child (host.apart): the same value, the same errors,
and no pydantic in the daemon's process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.base.errors import ConfigError, SidecarError
from sidecar.config.loader import load_settings
from sidecar.host import apart
from sidecar.host.apart import load_settings_apart

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "sidecar" / "data" / "sidecar.example.toml"


@pytest.mark.parametrize("path", [EXAMPLE, ROOT / "configs" / "dev.toml"])
def test_the_child_returns_what_the_loader_returns(path: Path) -> None:
    assert load_settings_apart(str(path)) == load_settings(str(path))


def test_the_childs_errors_are_the_loaders(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[consul]\nadress = "x"\nwait = "0s"\ntoken = "s3cret"\n[bogus]\n')
    with pytest.raises(ConfigError) as here:
        load_settings(str(bad))
    with pytest.raises(ConfigError) as apart:
        load_settings_apart(str(bad))
    assert apart.value.lines() == here.value.lines()
    assert len(apart.value.errors) == 3 and "did you mean `consul.address`" in str(apart.value)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings_apart(str(tmp_path / "missing.toml"))


def test_the_token_crosses_but_never_shows(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[consul]\ntoken = "s3cret-token"\n')
    settings = load_settings_apart(str(path))
    assert settings.consul.token.get_secret_value() == "s3cret-token"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.consul)


def test_the_daemons_process_never_imports_pydantic() -> None:
    """What `sidecar run` imports, and the settings it loads, leave pydantic out."""
    code = (
        "import sys; import sidecar.cli.app, sidecar.daemon.wiring, sidecar.daemon.loop\n"
        "from sidecar.host.apart import load_settings_apart\n"
        f"s = load_settings_apart({str(EXAMPLE)!r})\n"
        "print(s.haproxy.maxconn, sorted(m for m in sys.modules if 'pydantic' in m))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["8000", "[]"], out.stderr


def test_the_child_ignores_a_sidecar_folder_in_the_working_directory(tmp_path: Path) -> None:
    """`python -m` would put the working directory first on sys.path; the child runs with -P,
    so a `sidecar` folder there (whoever could write it) never stands in for the package."""
    fake = tmp_path / "sidecar" / "config"
    fake.mkdir(parents=True)
    for init in (tmp_path / "sidecar" / "__init__.py", fake / "__init__.py"):
        init.write_text("raise SystemExit('the impostor was imported')\n")
    (fake / "apart.py").write_text("raise SystemExit('the impostor was imported')\n")
    code = (
        "from sidecar.host.apart import load_settings_apart\n"
        f"print(load_settings_apart({str(EXAMPLE)!r}).haproxy.maxconn)\n"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "8000", out.stderr


def test_a_child_that_answers_nothing_usable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a traceback from the unpickler: `python -m this` exits 0 with text on stdout."""
    monkeypatch.setattr(apart, "MODULE", "this")
    with pytest.raises(SidecarError, match="settings check gave no answer"):
        load_settings_apart(str(EXAMPLE))


def test_the_child_finds_the_file_as_the_loader_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """No --config: $SIDECAR_CONFIG (the child inherits the environment), as in process."""
    monkeypatch.setenv("SIDECAR_CONFIG", str(ROOT / "configs" / "dev.toml"))
    assert load_settings_apart(None) == load_settings(None)
    assert load_settings_apart(None).source.endswith("dev.toml")

"""The package as a gateway gets it: the built wheel in a fresh venv, outside the checkout, the
CLI typed as the README shows it (issue 10).

The module builds the wheel once (``pip wheel --no-deps .``), creates a venv in a temporary
directory, installs the wheel (its dependencies from the package index, or pip's cache), and
runs ``sidecar`` from that venv as a subprocess with its working directory outside the
checkout and a clean environment. Every command runs with ``--config`` after the command name
(as operators type it) and, where it matters, before it too.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gatewaylib import Gateway
from helpers import REPO_ROOT, free_port, wait_until

from devkit.consul_agent import ConsulAgent
from devkit.wheel import installed_venv

pytestmark = pytest.mark.integration


class Installed:
    def __init__(self, venv: Path, workdir: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.sidecar = venv / "bin" / "sidecar"

    def env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.sidecar), *args],
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env=self.env(),
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    venv = installed_venv(root)
    work = root / "work"
    work.mkdir()
    return Installed(venv, work)


def test_the_package_comes_from_the_venv_not_the_checkout(installed: Installed) -> None:
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import sidecar; print(sidecar.__file__)"],
        capture_output=True, text=True, cwd=installed.workdir, env=installed.env(), check=True,
    )  # fmt: skip
    path = Path(where.stdout.strip())
    assert installed.venv in path.parents and REPO_ROOT not in path.parents
    listing = installed.run("files")
    assert listing.returncode == 0 and str(REPO_ROOT) not in listing.stdout


def test_version(installed: Installed) -> None:
    result = installed.run("--version")
    assert result.returncode == 0
    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    assert result.stdout.strip() == f"dirac-sidecar, version {version}"


def test_validate_names_all_three_key_paths(installed: Installed) -> None:
    bad = installed.workdir / "bad.toml"
    bad.write_text('[consul]\nadress = "x"\n[apply]\nmax_old_workers = -1\n[log]\nlevel = "LOUD"\n')
    for args in (("validate", "--config", str(bad)), ("--config", str(bad), "validate")):
        result = installed.run(*args)
        assert result.returncode == 1, result.stdout + result.stderr
        for key in ("consul.adress", "apply.max_old_workers", "log.level"):
            assert f"{bad}: {key}: " in result.stdout
        assert "did you mean `consul.address`?" in result.stdout


def test_validate_runs_haproxy_on_the_shipped_defaults(installed: Installed) -> None:
    example = installed.workdir / "example.toml"
    shipped = installed.run("files", "sidecar.example.toml")
    example.write_text(shipped.stdout)
    result = installed.run("validate", "--config", str(example))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: haproxy -c (sample catalog)" in result.stdout


@pytest.fixture
def gateway_installed(
    tmp_path: Path, consul_agent: ConsulAgent, pki: object, installed: Installed
) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, consul_agent, pki, prefix=f"inst{os.getpid()}")  # type: ignore[arg-type]
    gw.command = [str(installed.sidecar)]
    gw.config_first = False  # `sidecar run --config F`, as the README shows it
    try:
        yield gw
    finally:
        gw.teardown()


def test_run_once_render_check_from_the_wheel(
    gateway_installed: Gateway, installed: Installed, backend_factory: object
) -> None:
    """`run`, `once`, `render`, `check` from the wheel; a registration's dirac_port is the port
    served and the port written to the CS."""
    gw = gateway_installed
    public = free_port()
    gw.public_ranges = [str(public)]  # a dirac_port must lie in [ports] public_ranges
    cs_file = gw.tmp / "dirac.cfg"
    cs_file.write_text("Systems\n{\n}\n")
    gw.write_config(
        gw.config_text() + f'\n[dirac_cs]\nenabled = true\nfile = "{cs_file}"\n'
        f'lock_ttl = "10s"\nlock_delay = "0s"\n'
    )
    def instance(sid: str, count: int) -> Any:
        """One more SystemAdministrator instance on the dirac_port, seen in the catalog."""
        started = backend_factory(name="Framework/SystemAdministrator")  # type: ignore[operator]
        gw.register("sysadmin", sid, started.port, "Framework/SystemAdministrator",
                    meta={"dirac_port": str(public)})  # fmt: skip
        gw.wait_in_catalog("sysadmin", count)
        return started

    backend = instance("sa1", 1)
    rendered = installed.run("render", "--config", str(gw.config_path))
    assert rendered.returncode == 0, rendered.stderr
    assert f"bind 127.0.0.1:{public}" in rendered.stdout and "port 9162" not in rendered.stdout
    once = installed.run("once", "--config", str(gw.config_path))
    assert once.returncode == 0, once.stdout + once.stderr
    assert f"dips://dirac-gw.test:{public}/Framework/SystemAdministrator" in cs_file.read_text()
    assert gw.call(public)["instance"]  # `once` left HAProxy serving the dirac_port
    second = instance("sa2", 2)
    again = installed.run("once", "--config", str(gw.config_path))
    assert again.returncode == 0 and again.stdout.startswith("runtime: ok"), again.stdout
    # through the runtime API, and into the file a restart of HAProxy starts from
    assert f"127.0.0.1:{second.port}" in gw.haproxy_cfg.read_text()
    gw.start()
    gw.wait_routed(public, backend.instance)  # type: ignore[attr-defined]
    last: list[str] = []

    def check_ok() -> bool:
        result = installed.run("check", "--config", str(gw.config_path))
        last[:] = [result.stdout + result.stderr]
        return result.returncode == 0

    try:
        wait_until(check_ok, 30, 0.5, "sidecar check OK")
    except AssertionError:
        raise AssertionError(last) from None
    assert last[0].startswith("SIDECAR OK"), last
    assert installed.run("--config", str(gw.config_path), "check").returncode == 0

    def probed() -> list[dict[str, object]]:  # by the probe's child, from the wheel's venv
        return list((gw.status().get("certs") or {}).get("servers") or [])

    wait_until(lambda: len(probed()) == 2, 30, 0.2, "the certificate probe's report")
    assert {(s["backend"], s["status"]) for s in probed()} == {
        ("Framework_SystemAdministrator", "OK")
    }

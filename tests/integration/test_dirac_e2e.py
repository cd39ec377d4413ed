"""Real DIRAC end to end: a DISET service, ``sidecar register``, ``sidecar run`` + HAProxy, the
CS URL list, and DIRAC's own client with an RFC 3820 proxy calling through the gateway.

DIRAC 9.1.22 lives in its own venv (``scripts/install-dirac.sh``, called once per session by
the ``dirac_python`` fixture; the test is skipped, saying why, only when that install fails,
and fails instead when ``SIDECAR_REQUIRE_DIRAC=1``). Everything DIRAC runs through
``dirac_e2e/diracctl.py`` with the DIRAC venv's interpreter: the stock ``dirac-service`` main
(bound to loopback), proxy generation with ``X509Chain`` and the client calls.

Two services run as two "containers": ``GwE2E/Echo`` with a host certificate that carries the
gateway name ``localhost`` in its SAN, and ``GwE2E/Bad`` whose certificate lacks it (SAN
``diracbad``, ``127.0.0.1``). Each is registered by its own ``sidecar register`` reading the
service's own cfg. The client's DIRACSYSCONFIG is the CS file the sidecar wrote. Timings are
printed even when output is captured.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from gatewaylib import Gateway, sidecar_command
from helpers import REPO_ROOT, free_port, wait_until
from registerlib import RegisterProcess, check_status, write_settings

from devkit.pki import DevPKI
from sidecar.register.probe import HostCredentials, diset_ping, tls_context

HERE = Path(__file__).resolve().parent / "dirac_e2e"
DIRAC_VENV = Path(os.environ.get("DIRAC_VENV", str(REPO_ROOT / ".deps" / "dirac-venv")))
INSTALL_TIMEOUT = 900.0
SYSTEM = "GwE2E"
GATEWAY_NAME = "localhost"  # in the good certificate's SAN, and it resolves to 127.0.0.1
TIMINGS: dict[str, str] = {}


@pytest.fixture(scope="session")
def dirac_python() -> Path:
    """The DIRAC venv's interpreter, installing DIRAC first when needed (bounded)."""
    start = time.monotonic()
    script = REPO_ROOT / "scripts" / "install-dirac.sh"
    env = {**os.environ, "DIRAC_VENV": str(DIRAC_VENV)}
    try:
        done = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, env=env,
            timeout=INSTALL_TIMEOUT, check=False,
        )  # fmt: skip
        ok, output = done.returncode == 0, done.stderr + done.stdout
    except subprocess.TimeoutExpired:
        ok, output = False, f"timed out after {INSTALL_TIMEOUT:g} s"
    if not ok:
        reason = "DIRAC cannot be installed: " + " | ".join(output.strip().splitlines()[-5:])
        if os.environ.get("SIDECAR_REQUIRE_DIRAC") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    TIMINGS["install (scripts/install-dirac.sh)"] = f"{time.monotonic() - start:.1f} s"
    return DIRAC_VENV / "bin" / "python"


def dirac_env(**extra: str) -> dict[str, str]:
    drop = ("X509_", "DIRAC", "CONSUL_", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **extra}


def run_dirac(python: Path, *args: str, timeout: float = 120.0, **env: str) -> dict[str, Any]:
    """Run ``diracctl.py`` and return its ``RESULT`` JSON (the wall time under ``wall_s``)."""
    start = time.monotonic()
    done = subprocess.run(
        [str(python), str(HERE / "diracctl.py"), *args], capture_output=True, text=True,
        env=dirac_env(**env), timeout=timeout, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"diracctl {args} failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    result["wall_s"] = time.monotonic() - start
    result["stderr"] = done.stderr
    return result


def dirac_dn(cert_path: Path) -> str:
    """A certificate subject the way DIRAC writes DNs: ``/O=.../OU=.../CN=...``."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return "".join(
        f"/{attr.rfc4514_attribute_name}={attr.value!s}"
        for rdn in cert.subject.rdns
        for attr in rdn
    )


class DiracService:
    """One real DISET service process (``diracctl.py service``), stopped by PID."""

    def __init__(self, python: Path, cfg: Path, path: str, log: Path) -> None:
        self.path, self.log, self.cfg = path, log, cfg
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(python), str(HERE / "diracctl.py"), "service", path],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dirac_env(DIRACSYSCONFIG=str(cfg), PYTHONPATH=str(HERE)), cwd=cfg.parent,
            )  # fmt: skip

    def wait_listening(self, timeout: float = 60.0) -> None:
        def listening() -> bool:
            assert self.proc.poll() is None, f"{self.path} exited:\n{self.output()}"
            return "Listening at" in self.output()

        wait_until(listening, timeout, 0.05, f"{self.path} to listen")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def service_cfg(path: Path, service: str, port: int, cert: Path, key: Path, ca_dir: Path) -> Path:
    path.write_text(
        "DIRAC\n{\n  Security\n  {\n"
        f"    CertFile = {cert}\n    KeyFile = {key}\n    CALocation = {ca_dir}\n"
        "    UseServerCertificate = yes\n  }\n}\n"
        f"Systems\n{{\n  {SYSTEM}\n  {{\n    Services\n    {{\n      {service}\n      {{\n"
        f"        Port = {port}\n        HandlerPath = gwtest/GwEchoHandler.py\n"
        "        Authorization\n        {\n          Default = all\n        }\n"
        f"      }}\n    }}\n    URLs\n    {{\n"
        f"      {service} = dips://127.0.0.1:{port}/{SYSTEM}/{service}\n    }}\n  }}\n}}\n"
    )
    return path


def client_cfg(path: Path, ca_dir: Path, urls: dict[str, str]) -> Path:
    lines = "".join(f"      {name} = {url}\n" for name, url in urls.items())
    path.write_text(
        f"DIRAC\n{{\n  Security\n  {{\n    CALocation = {ca_dir}\n  }}\n}}\n"
        f"Systems\n{{\n  {SYSTEM}\n  {{\n    URLs\n    {{\n{lines}    }}\n  }}\n}}\n"
    )
    return path


@pytest.fixture
def started() -> Iterator[list[DiracService | RegisterProcess]]:
    """Processes the test starts; stopped by PID in reverse order at teardown."""
    procs: list[DiracService | RegisterProcess] = []
    yield procs
    for proc in reversed(procs):
        proc.stop()


def timed(what: str, func: Callable[[], Any]) -> Any:
    start = time.monotonic()
    result = func()
    TIMINGS[what] = f"{time.monotonic() - start:.2f} s"
    return result


def median_ms(result: dict[str, Any]) -> float:
    return statistics.median(result["ping_ms"][1:] or result["ping_ms"])


def call(python: Path, path: str, repeat: int, cfg: Path, proxy: Path) -> dict[str, Any]:
    """DIRAC's client in the DIRAC venv: ``ping`` ``repeat`` times, then ``whoami``."""
    env = {"DIRACSYSCONFIG": str(cfg), "X509_USER_PROXY": str(proxy)}
    return run_dirac(python, "call", f"{SYSTEM}/{path}", str(repeat), **env)


def wait_passing(agent_addr: str, check: str) -> None:
    def passing() -> bool:
        return check_status(agent_addr, check)[0] == "passing"

    wait_until(passing, 30, 0.05, f"{check} passing")


def wait_routed(creds: HostCredentials, port: int, path: str) -> None:
    """Poll DISET pings through the gateway port until one is answered."""
    ctx = tls_context(creds)
    wait_until(lambda: diset_ping(ctx, "127.0.0.1", port, path, 2.0)[0], 30, 0.1, f"port {port}")


def test_real_dirac_client_through_gateway(
    dirac_python: Path,
    gateway_unstarted: Gateway,
    pki: DevPKI,
    tmp_path: Path,
    started: list[DiracService | RegisterProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = gateway_unstarted
    ca_dir = pki.ca_dir
    good = pki.host("backend1")  # SAN: backend1, dirac-gw.test, localhost, 127.0.0.1
    bad = pki.ca().issue_host("diracbad", ["127.0.0.1"], directory=tmp_path)  # no "localhost"
    proxy = tmp_path / "proxy.pem"
    make_proxy = ("proxy", str(pki.user.cert), str(pki.user.key), str(proxy))
    timed("proxy (DIRAC X509Chain)", lambda: run_dirac(dirac_python, *make_proxy))
    user_dn = dirac_dn(pki.user.cert)

    # -- two DISET services, each with its own cfg ("container") --------------------------
    ports = {"Echo": free_port(), "Bad": free_port()}
    certs = {"Echo": good, "Bad": bad}
    cfgs = {
        name: service_cfg(
            tmp_path / f"svc-{name}.cfg", name, port, certs[name].cert, certs[name].key, ca_dir
        )
        for name, port in ports.items()
    }
    services = {
        name: DiracService(dirac_python, cfg, f"{SYSTEM}/{name}", tmp_path / f"svc-{name}.log")
        for name, cfg in cfgs.items()
    }
    started.extend(services.values())
    for name, svc in services.items():
        timed(f"service start ({SYSTEM}/{name})", svc.wait_listening)

    # Echo by name (same resolution as through the gateway), Bad by IP (its only usable SAN)
    direct_urls = {
        "Echo": f"dips://{GATEWAY_NAME}:{ports['Echo']}/{SYSTEM}/Echo",
        "Bad": f"dips://127.0.0.1:{ports['Bad']}/{SYSTEM}/Bad",
    }
    direct_cfg = client_cfg(tmp_path / "direct.cfg", ca_dir, direct_urls)
    direct = call(dirac_python, "Echo", 11, direct_cfg, proxy)
    assert direct["ping"]["OK"], direct
    assert direct["whoami"]["OK"] and direct["whoami"]["Value"]["DN"] == user_dn, direct
    bad_direct = call(dirac_python, "Bad", 1, direct_cfg, proxy)
    assert bad_direct["ping"]["OK"], bad_direct  # the Bad service itself works (IP SAN)

    # -- sidecar register, one per service, reading the service's own cfg -----------------
    settings = write_settings(tmp_path / "register.toml", gw.agent.http_addr)
    regs = {
        name: RegisterProcess(
            settings,
            ["--interval", "1", "--instance", "e2e"],
            tmp_path / f"register-{name}.log",
            {"DIRACSYSCONFIG": str(cfg)},
        ).start()
        for name, cfg in cfgs.items()
    }
    started.extend(regs.values())
    for name, port in ports.items():
        check = f"dirac-{SYSTEM.lower()}-{name.lower()}-e2e-{port}:tls"
        timed(f"register -> passing ({name})", lambda c=check: wait_passing(gw.agent.http_addr, c))
        output = check_status(gw.agent.http_addr, check)[1]
        assert f"DISET ping of {SYSTEM}/{name} OK" in output, output
        # one more ping later (the uptime in the note moves), still no error in the service log
        wait_until(lambda c=check, o=output: check_status(gw.agent.http_addr, c)[1] != o, 10,
                   0.1, "another check")  # fmt: skip
        assert "Invalid action proposal" not in services[name].output()

    # -- the gateway: name "localhost", a public port per service, the CS file -------------
    public = {name: free_port() for name in ports}
    gw.names = (GATEWAY_NAME,)
    gw.ports.update({f"{SYSTEM}/{name}": port for name, port in public.items()})
    cs_file = client_cfg(tmp_path / "cs.cfg", ca_dir, {})
    text = gw.config_text().replace(
        "[certs]\n", f'[certs]\nclient_cert = "{good.cert}"\nclient_key = "{good.key}"\n'
    )
    gw.write_config(text + f'\n[dirac_cs]\nenabled = true\nfile = "{cs_file}"\nlayout = "v9"\n')
    timed("sidecar run start", gw.start)
    creds = HostCredentials(str(good.cert), str(good.key), str(ca_dir))
    for name, port in public.items():
        path = f"{SYSTEM}/{name}"
        timed(f"gateway routes {name}", lambda p=port, s=path: wait_routed(creds, p, s))

    # -- the CS: the daemon writes the URL lists (it holds the one-writer lock) ---------------
    wanted = {
        name: f"dips://{GATEWAY_NAME}:{port}/{SYSTEM}/{name}" for name, port in public.items()
    }

    def cs_written() -> bool:
        text = cs_file.read_text()
        return all(url in text for url in wanted.values())

    timed("CS written by sidecar run", lambda: wait_until(cs_written, 30, 0.05, "the CS URLs"))

    # -- DIRAC's client through the gateway, resolving the service from the CS file --------
    via = call(dirac_python, "Echo", 11, cs_file, proxy)
    assert via["urls"] == [wanted["Echo"]]
    assert via["ping"]["OK"], via
    assert via["ping"]["Value"]["name"] == f"{SYSTEM}/Echo"
    who = via["whoami"]
    assert who["OK"], who
    assert who["Value"]["DN"] == user_dn == direct["whoami"]["Value"]["DN"]
    assert who["Value"]["isProxy"] is True
    assert who["Value"]["subject"].startswith(user_dn + "/CN=")  # the RFC 3820 proxy itself

    # -- a backend certificate without the gateway name: predicted, then seen --------------
    report = subprocess.run(
        [*sidecar_command(), "--config", str(gw.config_path), "certs", "--json",
         "--target", f"127.0.0.1:{ports['Bad']}", "--target", f"127.0.0.1:{ports['Echo']}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    findings = {f["where"]: f for f in json.loads(report.stdout)["findings"]}
    bad_finding = next(f for w, f in findings.items() if str(ports["Bad"]) in w)
    good_finding = next(f for w, f in findings.items() if str(ports["Echo"]) in w)
    assert report.returncode == 2, report
    assert any(GATEWAY_NAME in problem for problem in bad_finding["problems"]), bad_finding
    assert not good_finding["problems"], good_finding
    failed = call(dirac_python, "Bad", 1, cs_file, proxy)
    assert failed["urls"] == [wanted["Bad"]]
    assert not failed["ping"]["OK"], failed
    message = failed["ping"]["Message"]
    assert "certificate verify failed" in message.lower() or "hostname" in message.lower(), message

    TIMINGS["ping direct (median of 10)"] = f"{median_ms(direct):.1f} ms"
    TIMINGS["ping via gateway (median of 10)"] = f"{median_ms(via):.1f} ms"
    TIMINGS["DIRAC client process (11 pings + whoami)"] = f"{via['wall_s']:.2f} s"
    with capsys.disabled():
        print(f"\n--- real DIRAC end to end (DIRAC venv {DIRAC_VENV}) ---")
        for what, value in TIMINGS.items():
            print(f"  {what:<44} {value}")
        print(f"  whoami via gateway: DN={who['Value']['DN']} isProxy={who['Value']['isProxy']}")
        print(f"  sidecar certs on Bad: {'; '.join(bad_finding['problems'])}")
        print(f"  DIRAC client on Bad via gateway: {message[:200]}")

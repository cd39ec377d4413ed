"""The demo behind README command 1: the whole gateway path on one machine.

It starts (only when no Consul is configured) a Consul dev agent on 127.0.0.1, makes a
throwaway PKI, starts sample DIRAC-like TLS services that require a client certificate,
registers them with the metadata convention, runs ``sidecar run`` with ``configs/dev.toml``
and calls every service through its fixed gateway port with an RFC 3820 proxy, printing what
each backend saw of the caller. With a terminal it then keeps serving until Ctrl-C; without
one (or with ``--once``) it stops everything it started and exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devkit import consul_agent
from devkit.backendproc import BackendProcess, backend_args
from devkit.client import CallError, call
from devkit.pki import DevPKI, make_dev_pki
from sidecar.config.loader import load_settings

ROOT = Path(__file__).resolve().parents[2]
# (System, Service, protocol, gateway port from the shipped map, instances)
SERVICES = (
    ("Framework", "SystemAdministrator", "dips", 9162, 2),
    ("DataManagement", "FileCatalog", "dips", 9197, 1),
    ("Framework", "TornadoProxyManager", "https", 0, 1),
)


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


class Demo:
    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.stack: list[Callable[[], None]] = []
        self.consul_addr = os.environ.get("CONSUL_HTTP_ADDR", "")
        self.registered: list[str] = []

    def start_consul(self) -> None:
        settings = load_settings(str(self.config))
        if settings.consul_configured:
            self.consul_addr = settings.consul.address
            print(f"using the configured Consul at {self.consul_addr}")
            return
        agent = consul_agent.ConsulAgent(self.workdir / "consul", node="dirac-demo").start()
        self.stack.append(agent.stop)
        self.consul_addr = agent.http_addr
        print(f"started a Consul dev agent at {self.consul_addr} (pid {agent.pid})")

    def start_services(self, pki: DevPKI) -> None:
        for system, service, protocol, _, count in SERVICES:
            for n in range(1, count + 1):
                host = f"backend{n}"
                paths = pki.host(host)
                proc = BackendProcess(
                    backend_args(
                        "127.0.0.1:0",
                        paths.cert,
                        paths.key,
                        ca_dir=pki.ca_dir,
                        name=f"{system}/{service}",
                        instance=f"{service}-{n}",
                    ),
                    log=self.workdir / "backends.log",
                ).start()
                self.stack.append(proc.stop)
                sid = f"{service.lower()}-{n}"
                consul_agent.register(
                    self.consul_addr,
                    f"dirac-{service.lower()}",
                    sid,
                    "127.0.0.1",
                    proc.port,
                    meta={
                        "dirac_system": system,
                        "dirac_service": service,
                        "dirac_protocol": protocol,
                    },
                )
                self.registered.append(sid)
                print(
                    f"  {system}/{service} instance {n}: TLS on 127.0.0.1:{proc.port} "
                    f"(pid {proc.pid}), registered as {sid}"
                )

    def start_sidecar(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, CONSUL_HTTP_ADDR=self.consul_addr)
        log = (self.workdir / "sidecar.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from sidecar.cli import main; main()",
                "run",
                "--config",
                str(self.config),
                "--stop-haproxy",
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
        log.close()

        def stop() -> None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

        self.stack.append(stop)
        print(f"started sidecar run (pid {proc.pid}), log in {self.workdir / 'sidecar.log'}")
        return proc

    def stop(self) -> None:
        for sid in self.registered:
            try:
                consul_agent.deregister(self.consul_addr, sid)
            except Exception:  # noqa: S112 - best effort: the agent may be gone
                continue
        while self.stack:
            self.stack.pop()()


def _gateway_port(system: str, service: str) -> int:
    from sidecar.config.schema import Settings
    from sidecar.core.portmap import load_port_map

    entry = load_port_map(Settings().port_map_path).lookup(system, service)
    assert entry is not None
    return entry.gateway_port


def show_calls(pki: DevPKI, gateway: str) -> bool:
    ok = True
    for system, service, protocol, _, count in SERVICES:
        port = _gateway_port(system, service)
        seen: set[str] = set()
        answer: dict[str, Any] = {}
        for _ in range(4 * count):
            try:
                answer = call("127.0.0.1", port, pki.proxy, pki.ca_dir, server_hostname=gateway)
            except CallError as exc:
                print(f"  {protocol}://{gateway}:{port}/{system}/{service}: FAILED {exc}")
                ok = False
                break
            seen.add(str(answer.get("instance")))
        if answer:
            print(
                f"  {protocol}://{gateway}:{port}/{system}/{service} -> instances "
                f"{sorted(seen)}; the backend saw identity {answer.get('identity')!r} "
                f"through proxy {answer.get('peer_subject')!r}"
            )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", default=str(ROOT / "configs" / "dev.toml"))
    parser.add_argument("--workdir", default=str(ROOT / ".run" / "demo"))
    parser.add_argument("--once", action="store_true", help="exit after the demonstration")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = load_settings(args.config, {})
    gateway = settings.gateway.names[0]
    demo = Demo(Path(args.config).resolve(), workdir)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        pki = make_dev_pki(workdir / "pki", settings.gateway.names, ("backend1", "backend2"))
        print(
            f"dev PKI in {pki.directory}: CA, host certificates with SANs "
            f"{list(settings.gateway.names)}, user {pki.user.cert.name}, RFC 3820 proxy"
        )
        demo.start_consul()
        demo.start_services(pki)
        demo.start_sidecar()
        wanted = [_gateway_port(s, v) for s, v, *_ in SERVICES]
        from sidecar.haproxy.binds import unbound_ports

        _wait("the gateway ports", lambda: not unbound_ports("127.0.0.1", wanted, 0.2), 60)
        print("calls through the gateway (TLS passthrough, client authenticated by proxy):")
        _wait("routes", lambda: show_calls_quiet(pki, gateway), 30)
        ok = show_calls(pki, gateway)
        if not ok:
            return 1
        if args.once or not sys.stdin.isatty():
            print("demo complete; stopping everything it started")
            return 0
        print("gateway running: try `sidecar --config configs/dev.toml render`; Ctrl-C stops all")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    finally:
        demo.stop()


def show_calls_quiet(pki: DevPKI, gateway: str) -> bool:
    for system, service, *_ in SERVICES:
        try:
            call(
                "127.0.0.1",
                _gateway_port(system, service),
                pki.proxy,
                pki.ca_dir,
                server_hostname=gateway,
                timeout=2,
            )
        except CallError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())

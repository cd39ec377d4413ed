"""The gateway end to end: real Consul dev agent, ``sidecar run``, real HAProxy (master-worker),
real TLS backends that require a client certificate, a client with an RFC 3820 proxy.

Every test runs its own daemon and HAProxy on free loopback ports (see ``conftest.py``); the
Consul agent is shared by the module, so each test uses its own service names and the fixture
deregisters them.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest
from gatewaylib import Gateway, settled, sidecar_command, undeclared
from helpers import free_port, wait_until

from devkit.client import ConnectionFailedError, TLSError, TLSVerificationError
from devkit.consul_agent import health
from devkit.pki import DevPKI
from devkit.x509tools import dirac_dn, load_cert
from sidecar.core.answers import parse_servers_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ALPHA, BETA = "Framework/GwAlpha", "Framework/GwBeta"


def _rejects_fast(gw: Gateway, port: int) -> None:
    """The port is bound but HAProxy closes every connection at once (no TLS, no hang)."""
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError) as info:
        gw.call(port, timeout=5.0)
    elapsed = time.monotonic() - started
    assert not isinstance(info.value, TLSError | TLSVerificationError)
    assert info.value.reason in ("reset", "closed"), info.value
    assert elapsed < 0.5, f"rejection took {elapsed:.3f}s"
    # At the TCP level: the port stays bound (the handshake completes, never "refused") and
    # the connection is reset at once without a byte; the reset may even beat connect()'s
    # own completion check.
    started = time.monotonic()
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
            sock.settimeout(5.0)
            data = sock.recv(16)
    except ConnectionResetError:
        pass
    assert data == b""
    assert time.monotonic() - started < 0.5


def _wait_rejecting(gw: Gateway, port: int) -> None:
    def rejecting() -> bool:
        try:
            gw.call(port, timeout=2.0)
        except ConnectionFailedError as exc:
            return exc.reason in ("reset", "closed")
        return False

    wait_until(rejecting, 20, 0.1, f"port {port} to reject")


def test_registered_service_is_routed_and_passes_the_proxy_chain_through(
    gateway: Gateway, backend_factory, pki: DevPKI
) -> None:
    port = gateway.ports[ALPHA]
    backend = backend_factory(host="backend1", name=ALPHA, instance="alpha-1")
    assert backend.port != port
    gateway.register_backend("alpha", backend, "alpha-1")

    answer = gateway.wait_routed(port, "alpha-1")

    proxy, user = load_cert(pki.proxy.file), load_cert(pki.user.cert)
    user_dn, proxy_dn = dirac_dn(user.subject), dirac_dn(proxy.subject)
    assert re.fullmatch(re.escape(user_dn) + r"/CN=\d+", proxy_dn), proxy_dn
    assert answer["service"] == ALPHA
    assert answer["peer_subject"] == proxy_dn
    assert answer["peer_chain"][0] == {"subject": proxy_dn, "issuer": user_dn}
    assert answer["peer_chain"][1]["subject"] == user_dn
    assert answer["is_proxy"] is True
    assert answer["identity"] == user_dn
    assert answer["group"] == "dirac_user"
    config = settled(gateway.haproxy_cfg)
    assert f"bind 127.0.0.1:{port}\n" in config
    assert re.search(rf"server \S+ 127\.0\.0\.1:{backend.port} check ", config)


def test_two_instances_both_receive_connections(gateway: Gateway, backend_factory) -> None:
    port = gateway.ports[ALPHA]
    for host, instance in (("backend1", "a1"), ("backend2", "a2")):
        backend = backend_factory(host=host, name=ALPHA, instance=instance)
        gateway.register_backend("alpha", backend, instance)
    gateway.wait_routed(port, "a1")
    gateway.wait_routed(port, "a2")

    seen = gateway.seen(port, 20)

    assert set(seen) == {"a1", "a2"}, seen
    assert min(seen.values()) >= 5, seen  # leastconn spreads sequential calls


def test_deregistered_or_critical_instances_leave_rotation(
    gateway: Gateway, backend_factory
) -> None:
    port = gateway.ports[ALPHA]
    ids = {}
    for host, instance in (("backend1", "a1"), ("backend2", "a2"), ("backend3", "a3")):
        backend = backend_factory(host=host, name=ALPHA, instance=instance)
        ids[instance] = gateway.register_backend("alpha", backend, instance)
    for instance in ids:
        gateway.wait_routed(port, instance)

    gateway.deregister(ids["a1"])
    gateway.wait_only(port, {"a2", "a3"})
    seen = gateway.seen(port, 12)
    assert set(seen) == {"a2", "a3"}, seen

    gateway.set_health(ids["a2"], "critical")
    gateway.wait_only(port, {"a3"})
    seen = gateway.seen(port, 10)
    assert set(seen) == {"a3"}, seen

    gateway.set_health(ids["a2"], "passing")  # and back
    gateway.wait_routed(port, "a2")


def test_last_instance_gone_port_stays_bound_and_rejects_at_once(
    gateway: Gateway, backend_factory
) -> None:
    port = gateway.ports[ALPHA]
    backend = backend_factory(host="backend1", name=ALPHA, instance="only")
    sid = gateway.register_backend("alpha", backend, "only")
    gateway.wait_routed(port, "only")

    gateway.set_health(sid, "critical")  # registered, but no healthy instance
    _wait_rejecting(gateway, port)
    _rejects_fast(gateway, port)

    gateway.set_health(sid, "passing")
    gateway.wait_routed(port, "only")

    gateway.deregister(sid)  # the service leaves the catalog: its port is kept, rejecting
    _wait_rejecting(gateway, port)
    _rejects_fast(gateway, port)
    assert f"bind 127.0.0.1:{port}\n" in settled(gateway.haproxy_cfg)


def test_maintenance_drains_an_instance(gateway: Gateway, backend_factory) -> None:
    port = gateway.ports[ALPHA]
    ids = {}
    for host, instance in (("backend1", "a1"), ("backend2", "a2")):
        backend = backend_factory(host=host, name=ALPHA, instance=instance)
        ids[instance] = gateway.register_backend("alpha", backend, instance)
    gateway.wait_routed(port, "a1")
    gateway.wait_routed(port, "a2")

    gateway.maintenance(ids["a1"], True)
    gateway.wait_only(port, {"a2"})
    seen = gateway.seen(port, 10)
    assert set(seen) == {"a2"}, seen
    # Drained, not removed: the slot keeps its address with weight 0 (existing connections
    # finish), in HAProxy and in the file a reload would start from.
    a1_port = _port_of(gateway, "a1")
    state = {s.server.port: s.server for s in parse_servers_state(gateway.haproxy.servers_state())}
    assert state[a1_port].weight == 0
    assert state[a1_port].state.value == "drain"
    config = settled(gateway.haproxy_cfg)
    assert re.search(rf"127\.0\.0\.1:{a1_port} check .* weight 0\n", config)

    gateway.maintenance(ids["a1"], False)
    gateway.wait_routed(port, "a1")


def _port_of(gw: Gateway, instance: str) -> int:
    """The backend port registered in Consul for ``instance``."""
    sid = f"{gw.prefix}-{instance}"
    for name in set(gw.registered.values()):
        for entry in health(gw.agent.http_addr, name):
            if entry["Service"]["ID"] == sid:
                return int(entry["Service"]["Port"])
    raise AssertionError(f"{sid} not in the catalog")


def test_identical_bytes_no_reload_membership_runtime_new_service_one_reload(
    gateway: Gateway, backend_factory
) -> None:
    port, beta_port = gateway.ports[ALPHA], gateway.ports[BETA]
    a1 = backend_factory(host="backend1", name=ALPHA, instance="a1")
    gateway.register_backend("alpha", a1, "a1", meta={"owner": "ops"})
    gateway.wait_routed(port, "a1")
    # The route works as soon as HAProxy has it; the apply's file writes and log line follow.
    wait_until(lambda: gateway.status().get("servers_ready", 0) >= 1, 10, 0.05, "status")
    reloads = gateway.reload_count()
    config = settled(gateway.haproxy_cfg).encode()
    mtime = gateway.haproxy_cfg.stat().st_mtime_ns
    applied_lines = gateway.log_text().count(" applied ")

    # Same instance, unrelated tag and non-DIRAC metadata changed: the same bytes.
    gateway.register_backend(
        "alpha", a1, "a1", meta={"owner": "someone-else"}, tags=("dirac", "canary")
    )
    # Marker: a malformed instance of the same Consul service (skipped, same bytes again).
    # Once the daemon reports it, it has rendered a catalog read that holds the change above.
    marker = gateway.register("alpha", "bad-port", 1234, ALPHA, meta={"dirac_port": "70000"})
    wait_until(
        lambda: any(marker in p for p in gateway.status().get("problems", [])),
        20,
        0.05,
        "the daemon to report the malformed marker instance",
    )
    entry = next(
        e
        for e in health(gateway.agent.http_addr, gateway.consul_name("alpha"))
        if e["Service"]["ID"].endswith("-a1")
    )
    assert "canary" in entry["Service"]["Tags"]
    assert entry["Service"]["Meta"]["owner"] == "someone-else"

    assert gateway.reload_count() == reloads
    assert gateway.haproxy_cfg.stat().st_mtime_ns == mtime
    assert gateway.haproxy_cfg.read_bytes() == config
    assert gateway.log_text().count(" applied ") == applied_lines

    # Membership change: runtime API, no reload.
    a2 = backend_factory(host="backend2", name=ALPHA, instance="a2")
    gateway.register_backend("alpha", a2, "a2")
    gateway.wait_routed(port, "a2")
    assert gateway.reload_count() == reloads
    assert "applied runtime" in gateway.log_text()

    # A new declared DIRAC service ([ports.overrides]): its frontend was bound from the start,
    # so it is a runtime change too.
    b1 = backend_factory(host="backend3", name=BETA, instance="b1")
    gateway.register_backend("beta", b1, "b1", dirac=BETA)
    gateway.wait_routed(beta_port, "b1")
    assert gateway.reload_count() == reloads
    # A new service nobody declared: structure changed, exactly one reload.
    path, new_port = undeclared()
    gateway.register_backend("new", backend_factory(name=path, instance="n1"), "n1", dirac=path)
    gateway.wait_routed(new_port, "n1")
    gateway.wait_routed(port, "a1")
    assert gateway.reload_count() == reloads + 1
    assert gateway.proc_info().failed == 0


def test_invalid_settings_or_template_keeps_the_running_config(
    gateway: Gateway, backend_factory
) -> None:
    port = gateway.ports[ALPHA]
    a1 = backend_factory(host="backend1", name=ALPHA, instance="a1")
    gateway.register_backend("alpha", a1, "a1")
    gateway.wait_routed(port, "a1")
    reloads = gateway.reload_count()
    good_config = settled(gateway.haproxy_cfg).encode()

    # 1. An invalid settings file on SIGHUP: rejected, the running configuration stays.
    gateway.write_config("[gateway]\nnames = [\n")
    gateway.sighup()
    gateway.wait_log("configuration not reloaded")
    gateway.wait_routed(port, "a1")
    gateway.write_config()

    # 2. A template whose output `haproxy -c` rejects: never replaces the running config.
    good_template = gateway.template_path.read_text()
    broken = good_template.replace(
        "    master-worker\n", "    master-worker\n    bogus-keyword-for-tests on\n", 1
    )
    assert broken != good_template
    gateway.template_path.write_text(broken)
    gateway.sighup()
    gateway.wait_log("configuration reloaded")
    gateway.wait_log("bogus-keyword-for-tests")
    rejected = gateway.log_text().count("haproxy -c rejected")
    assert rejected >= 1
    path, new_port = undeclared()
    b1 = backend_factory(host="backend2", name=path, instance="b1")
    gateway.register_backend("new", b1, "b1", dirac=path)  # needs a reload: fails again
    wait_until(
        lambda: gateway.log_text().count("haproxy -c rejected") > rejected,
        20,
        0.05,
        "the second validation failure",
    )

    assert gateway.call(port)["instance"] == "a1"
    with pytest.raises(ConnectionFailedError) as info:
        gateway.call(new_port)
    assert info.value.reason == "refused"
    assert gateway.haproxy_cfg.read_bytes() == good_config
    assert gateway.reload_count() == reloads
    assert not list(gateway.runtime_dir.glob("haproxy.cfg.new*"))
    assert gateway.alive()

    # 3. The operator fixes the template: the pending change goes through.
    gateway.template_path.write_text(good_template)
    gateway.sighup()
    gateway.wait_routed(new_port, "b1")
    gateway.wait_routed(port, "a1")
    assert gateway.reload_count() == reloads + 1


def test_render_prints_a_tcp_frontend_and_reports_skipped_entries(
    gateway_unstarted: Gateway,
) -> None:
    gw = gateway_unstarted
    port, backend_port = gw.ports[ALPHA], free_port()
    good = gw.register("alpha", "a1", backend_port, ALPHA)
    bad_name = gw.register("badname", "bad-name", 4001, "Frame work/GwAlpha")
    bad_port = gw.register("badport", "bad-port", 4002, BETA, meta={"dirac_port": "70000"})
    for label in ("alpha", "badname", "badport"):
        gw.wait_in_catalog(label, 1)

    result = subprocess.run(
        [*sidecar_command(), "--config", str(gw.config_path), "render"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^defaults\n(    .*\n)*?    mode tcp\n", out, re.M), out
    frontend = re.search(
        rf"^frontend (\S+)\n    bind 127\.0\.0\.1:{port}\n(?:    .*\n)*", out, re.M
    )
    assert frontend, out
    backend_name = re.search(r"default_backend (\S+)", frontend.group(0))
    assert backend_name, frontend.group(0)
    section = re.search(rf"^backend {re.escape(backend_name.group(1))}\n((?:    .*\n)*)", out, re.M)
    assert section, out
    assert re.search(rf"    server \S+ 127\.0\.0\.1:{backend_port} check ", section.group(1))
    assert "Frame work" not in out and ":70000" not in out
    beta = re.search(r"^backend bk_Framework_GwBeta\n((?:    .*\n)*)", out, re.M)
    assert beta and "server" not in beta.group(1)  # declared, bound, empty: rejecting
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
    assert any(bad_name in line and "dirac_system" in line for line in skipped), result.stderr
    assert any(bad_port in line and "dirac_port" in line for line in skipped), result.stderr
    assert not any(good in line for line in skipped), result.stderr
    # render changes nothing: no HAProxy, no runtime files.
    assert not gw.haproxy_processes()
    assert not (gw.runtime_dir / "haproxy.cfg").exists()


def test_sigkill_daemon_haproxy_keeps_serving_restart_converges_without_reload(
    gateway: Gateway, backend_factory
) -> None:
    port = gateway.ports[ALPHA]
    a1 = backend_factory(host="backend1", name=ALPHA, instance="a1")
    gateway.register_backend("alpha", a1, "a1")
    gateway.wait_routed(port, "a1")
    info = gateway.proc_info()
    settled(gateway.haproxy_cfg)  # the file of the runtime change is written
    mtime = gateway.haproxy_cfg.stat().st_mtime_ns

    # Killed and restarted with nothing changed: same HAProxy, no reload, no rewrite.
    gateway.kill()
    assert gateway.call(port)["instance"] == "a1"  # served while the daemon is dead
    gateway.start()
    after = gateway.proc_info()
    assert (after.master_pid, after.reloads, after.current_worker) == (
        info.master_pid,
        info.reloads,
        info.current_worker,
    )
    settled(gateway.haproxy_cfg)
    assert gateway.haproxy_cfg.stat().st_mtime_ns == mtime

    # Killed between a runtime change and the write of its file: the restarted daemon plans
    # against the servers HAProxy really has, not the stale file: still no reload.
    a3 = backend_factory(host="backend3", name=ALPHA, instance="a3")
    sid3 = gateway.register_backend("alpha", a3, "a3")
    gateway.wait_routed(port, "a3")
    gateway.kill()  # within FLUSH_DELAY of the change, most of the time
    gateway.start()
    gateway.wait_routed(port, "a3")
    assert gateway.proc_info().reloads == info.reloads
    gateway.deregister(sid3)
    gateway.wait_only(port, {"a1"})

    # Killed, the catalog changes meanwhile: the restarted daemon converges through the
    # runtime API, still without a reload.
    gateway.kill()
    a2 = backend_factory(host="backend2", name=ALPHA, instance="a2")
    gateway.register_backend("alpha", a2, "a2")
    gateway.wait_in_catalog("alpha", 2)
    assert gateway.call(port)["instance"] == "a1"
    gateway.start()
    gateway.wait_routed(port, "a2")
    after = gateway.proc_info()
    assert (after.master_pid, after.reloads) == (info.master_pid, info.reloads)
    assert gateway.log_text().count("haproxy started") == 1

import socket, time
from sidecar.dev.client import ConnectionFailedError
import pytest

def test_explore(gateway, backend_factory):
    t0=time.monotonic()
    port = gateway.ports["Framework/GwAlpha"]
    b = backend_factory(name="Framework/GwAlpha", instance="a1")
    sid = gateway.register_backend("alpha", b, "a1")
    ans = gateway.wait_routed(port, "a1")
    print("routed", time.monotonic()-t0, ans)
    gateway.set_health(sid, "critical")
    t1=time.monotonic()
    gateway.wait_only(port, {"ERROR"})
    print("rejected after", time.monotonic()-t1)
    for i in range(3):
        t=time.monotonic()
        try:
            gateway.call(port)
        except ConnectionFailedError as e:
            print("fail", e.reason, e, time.monotonic()-t)
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        try:
            print("recv", s.recv(10))
        except OSError as e:
            print("recv err", repr(e))
        s.close()
    print(gateway.proc_info(), gateway.status())
    t=time.monotonic()
    print("stop rc", gateway.stop_daemon(), time.monotonic()-t)
    print(gateway.log_tail(40))

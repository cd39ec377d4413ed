"""consul.plain: the synchronous client's connections against a scripted server on loopback.

The server (a thread) answers each request with what the test scripted for it (raw bytes, a
close, or silence), and counts connections, so reuse, the replacement of a connection the
server closed while idle, the single retry of a GET, the size bound and the names of the
failures are visible.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from sidecar.base.errors import CatalogError
from sidecar.config.schema import ConsulSettings
from sidecar.consul import plain
from sidecar.consul.client import ConsulClient
from sidecar.consul.plain import PlainError, PlainHTTP

SILENT = b"<silent>"
THEN_CLOSE = b"<then close>"  # at the end of an answer: sent, then the connection closed
Script = Callable[[int, int], bytes | None]  # (connection no., request no.) -> answer | close


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", *extra]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Server:
    """One thread per connection; ``requests`` holds every request's head and body."""

    def __init__(self, script: Script) -> None:
        self.script, self.connections = script, 0
        self.requests: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.sock.settimeout(0.05)  # accept() looks at ``stopped`` between waits
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                peer, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            peer.settimeout(None)
            self.connections += 1
            worker = threading.Thread(target=self._serve, args=(peer, self.connections))
            worker.daemon = True
            self.threads.append(worker)
            worker.start()

    def _serve(self, peer: socket.socket, number: int) -> None:
        data, count = b"", 0
        with peer:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = peer.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
                while len(data) < length:
                    data += peer.recv(65536)
                body, data = data[:length], data[length:]
                count += 1
                self.requests.append((head + b"\r\n\r\n" + body).decode())
                answer = self.script(number, count)
                if answer is None:
                    return
                if answer == SILENT:
                    self.stopped.wait(10)
                    return
                peer.sendall(answer.removesuffix(THEN_CLOSE))
                if answer.endswith(THEN_CLOSE):
                    return

    def stop(self) -> None:
        self.stopped.set()
        self.threads[0].join(timeout=5)
        self.sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


Serve = Callable[[Script], tuple[Server, PlainHTTP]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    made: list[tuple[Server, PlainHTTP]] = []

    def start(script: Script) -> tuple[Server, PlainHTTP]:
        server = Server(script)
        made.append((server, PlainHTTP("127.0.0.1", server.port, None, {"X-Consul-Token": "t"})))
        return made[-1]

    yield start
    for server, client in made:
        client.close()
        server.stop()


def test_answers_come_back_on_one_kept_connection_with_the_headers(serve: Serve) -> None:
    server, client = serve(lambda n, i: ok(b'{"i": %d}' % i, "X-Consul-Index: 7"))
    first = client.request("GET", "/v1/a?index=3", b"", 2.0)
    second = client.request("PUT", "/v1/b", b'{"x": 1}', 2.0)
    assert first[0] == 200 and first[1]["x-consul-index"] == "7" and first[2] == b'{"i": 1}'
    assert second[2] == b'{"i": 2}' and server.connections == 1
    assert "X-Consul-Token: t" in server.requests[0] and server.requests[1].endswith('{"x": 1}')


def test_an_idle_connection_the_server_closed_is_replaced_before_use(serve: Serve) -> None:
    server, client = serve(lambda n, i: ok(b"1") + THEN_CLOSE)  # as an idle timeout would
    client.request("GET", "/a", b"", 2.0)
    select.select([client._idle[0].sock], [], [], 5)  # the close reached our side
    assert client.request("PUT", "/b", b"x", 2.0)[2] == b"1"  # a PUT too: never sent on it
    assert server.connections == 2


def test_a_get_is_sent_once_more_when_the_kept_connection_drops_it(serve: Serve) -> None:
    server, client = serve(lambda n, i: ok(b"1") if (n, i) != (1, 2) else None)
    client.request("GET", "/a", b"", 2.0)
    assert client.request("GET", "/a", b"", 2.0)[2] == b"1"
    assert server.connections == 2 and len(server.requests) == 3


def test_a_put_the_kept_connection_dropped_is_the_callers_to_retry(serve: Serve) -> None:
    server, client = serve(lambda n, i: ok(b"1") if (n, i) != (1, 2) else None)
    client.request("GET", "/a", b"", 2.0)
    with pytest.raises(PlainError, match="RemoteDisconnected"):
        client.request("PUT", "/lock", b"", 2.0)
    assert len(server.requests) == 2  # it may have landed: not sent twice
    assert client.request("PUT", "/lock", b"", 2.0)[2] == b"1"  # a fresh connection next


def test_failures_are_named_by_the_step(serve: Serve) -> None:
    _, client = serve(lambda n, i: SILENT)
    with pytest.raises(PlainError, match=r"^ReadTimeout: ") as silent:
        client.request("GET", "/a", b"", 0.2)
    assert silent.value.step == "ReadTimeout"
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with pytest.raises(PlainError, match=r"^ConnectError: "):
        PlainHTTP("127.0.0.1", port, None, {}).request("GET", "/a", b"", 1.0)


def test_an_answer_over_the_size_bound_is_refused(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plain, "MAX_BODY", 10)
    _, client = serve(lambda n, i: ok(b"x" * 11))
    with pytest.raises(PlainError, match="TooLarge"):
        client.request("GET", "/a", b"", 2.0)
    assert not client._idle


def test_threads_share_the_client_each_on_a_connection_of_its_own(serve: Serve) -> None:
    server, client = serve(lambda n, i: ok(b"1"))
    got: list[bytes] = []

    def twenty() -> None:
        got.extend(client.request("GET", "/a", b"", 5.0)[2] for _ in range(20))

    workers = [threading.Thread(target=twenty) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert got == [b"1"] * 120 and len(client._idle) <= plain.KEEP
    assert server.connections <= 6


def test_the_consul_client_turns_failures_and_plain_answers_into_its_own(serve: Serve) -> None:
    server, _ = serve(lambda n, i: ok(b"not json") if i == 1 else SILENT)
    settings = ConsulSettings(address=f"http://127.0.0.1:{server.port}", timeout=0.3)
    client = ConsulClient(settings, "s3cret")
    try:
        reply = client.send("PUT", "/v1/kv/x", [("cas", "0")], "v")
        assert (reply.code, reply.body, reply.text) == (200, "not json", "not json")
        assert server.requests[0].startswith("PUT /v1/kv/x?cas=0 HTTP/1.1")
        assert "X-Consul-Token: s3cret" in server.requests[0]
        with pytest.raises(CatalogError, match=r"^GET /v1/status/leader: ReadTimeout: "):
            client.leader()
    finally:
        client.close()

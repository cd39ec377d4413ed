"""consul.conn: one keep-alive connection against a scripted HTTP server on loopback.

The server answers each request with what the test scripted for it (raw bytes, or a close),
and counts connections, so reuse, the retry after an idle close, the size bound and the
clean-up after a cancel are visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h11
import pytest

from sidecar.consul import conn as conn_mod
from sidecar.consul.conn import Connection, request_headers

Script = Callable[[int, int], bytes | None]  # (connection no., request no.) -> answer | close


def raw(got: conn_mod.Result | Exception) -> conn_mod.Result:
    """The reader that hands the answer on as it came, and raises the failure."""
    if isinstance(got, Exception):
        raise got
    return got


def ok(body: bytes, *extra: str, chunked: bool = False) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", *extra]
    if chunked:
        data = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        head.append("Transfer-Encoding: chunked")
    else:
        data = body
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


class Server:
    def __init__(self, script: Script) -> None:
        self.script, self.connections, self.requests = script, 0, []  # type: ignore[var-annotated]

    async def start(self) -> int:
        self._srv = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._srv.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._srv.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, count = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                count += 1
                self.requests.append(head.decode())
                answer = self.script(number, count)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def run(script: Script, body: Callable[[Connection, Server], object]) -> object:
    async def main() -> object:
        server = Server(script)
        port = await server.start()
        headers = request_headers("127.0.0.1", port, [("X-Consul-Token", "t0ken")])
        conn = Connection("127.0.0.1", port, None, headers)
        try:
            return await body(conn, server)  # type: ignore[misc]
        finally:
            conn.close()
            await server.stop()

    return asyncio.run(main())


def test_answers_come_back_on_one_kept_connection_with_headers_and_token() -> None:
    async def body(conn: Connection, server: Server) -> None:
        first = await conn.request("/v1/health/service/a?index=3", 5.0, raw)
        second = await conn.request("/v1/health/service/a?index=4", 5.0, raw)
        assert first == (200, {"content-type": "application/json", "x-consul-index": "7",
                               "content-length": "2"}, b"[]")  # fmt: skip
        assert second[2] == b'{"a":1}'  # chunked
        assert server.connections == 1
        assert "X-Consul-Token: t0ken" in server.requests[0]
        assert server.requests[0].startswith("GET /v1/health/service/a?index=3 HTTP/1.1")

    answers = {1: ok(b"[]", "X-Consul-Index: 7"), 2: ok(b'{"a":1}', chunked=True)}
    run(lambda c, n: answers[n], body)


def test_an_idle_connection_closed_by_the_server_is_replaced_once() -> None:
    async def body(conn: Connection, server: Server) -> None:
        assert (await conn.request("/x", 5.0, raw))[2] == b"1"
        assert (await conn.request("/x", 5.0, raw))[2] == b"2"  # the first one closed meanwhile
        assert server.connections == 2

    run(lambda c, n: (ok(b"1") if c == 1 and n == 1 else None if c == 1 else ok(b"2")), body)


def test_a_server_that_never_answers_fails_instead_of_retrying_for_ever() -> None:
    async def body(conn: Connection, server: Server) -> None:
        with pytest.raises(ConnectionResetError):
            await conn.request("/x", 5.0, raw)
        assert server.connections == 1  # a fresh connection closed at once: no second try

    run(lambda c, n: None, body)


def test_a_timeout_closes_the_connection_and_the_next_request_reconnects() -> None:
    async def body(conn: Connection, server: Server) -> None:
        with pytest.raises(TimeoutError):
            await conn.request("/park", 0.2, raw)
        assert (await conn.request("/x", 5.0, raw))[2] == b"ok"
        assert server.connections == 2  # the half-done exchange was never reused

    def script(c: int, n: int) -> bytes | None:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" if c == 1 else ok(b"ok")

    run(script, body)


def test_a_cancelled_request_leaves_no_connection_behind() -> None:
    async def body(conn: Connection, server: Server) -> None:
        task = asyncio.ensure_future(conn.request("/park", 30.0, raw))
        while not server.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not conn.open

    run(lambda c, n: b"", body)


def test_an_answer_over_the_size_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conn_mod, "MAX_BODY", 1000)

    async def body(conn: Connection, server: Server) -> None:
        with pytest.raises(ValueError, match="larger than 1000"):
            await conn.request("/x", 5.0, raw)

    run(lambda c, n: ok(b"x" * 5000), body)


def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    async def body(conn: Connection, server: Server) -> None:
        with pytest.raises(h11.ProtocolError):
            await conn.request("/x", 5.0, raw)

    run(lambda c, n: b"SSH-2.0-OpenSSH\r\n\r\n", body)


def test_an_ipv6_agent_gets_a_bracketed_host_header() -> None:
    assert ("Host", "[::1]:8500") in request_headers("::1", 8500, [])


def test_an_ipv6_consul_address_keeps_its_brackets_in_both_clients() -> None:
    from sidecar.config.schema import ConsulSettings
    from sidecar.consul.client import AsyncConsul

    client = AsyncConsul(ConsulSettings(address="http://[::1]:8501"), "")
    assert client.base == "http://[::1]:8501"  # the httpx client's base URL
    assert (client.host, client.port) == ("::1", 8501)
    assert ("Host", "[::1]:8501") in client.lease()._conn._headers


def test_a_reset_kept_connection_is_replaced_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    send = Connection._send

    def reset_once(self: Connection, target: str) -> conn_mod._Link:
        calls.append(target)
        if len(calls) == 2:  # the second request, on the kept connection
            raise ConnectionResetError("reset by peer")
        return send(self, target)

    monkeypatch.setattr(Connection, "_send", reset_once)

    async def body(conn: Connection, server: Server) -> None:
        assert (await conn.request("/x", 5.0, raw))[2] == b"1"
        assert (await conn.request("/x", 5.0, raw))[2] == b"2"
        assert len(calls) == 3 and server.connections == 2

    run(lambda c, n: ok(b"1") if c == 1 else ok(b"2"), body)


def test_the_connections_of_one_client_share_its_headers_and_keep_no_old_answer() -> None:
    from sidecar.config.schema import ConsulSettings
    from sidecar.consul.client import AsyncConsul

    client = AsyncConsul(ConsulSettings(), "")
    assert client.lease()._conn._headers is client.lease()._conn._headers

    async def body(conn: Connection, server: Server) -> None:
        assert (await conn.request("/x", 5.0, raw))[2] == b"x" * 5000
        link = conn._link
        assert link is not None and not link.body and not link.headers  # nothing kept
        assert await conn.request("/y", 5.0, raw) == (200, {"content-type": "application/json",
                                                       "content-length": "0"}, b"")  # fmt: skip

    run(lambda c, n: ok(b"x" * 5000) if n == 1 else ok(b""), body)


def test_a_blocking_query_is_one_encoded_string_with_its_parameters() -> None:
    from sidecar.config.schema import ConsulSettings
    from sidecar.consul.client import AsyncConsul

    client = AsyncConsul(ConsulSettings(datacenter="dc 2"), "")
    req = client.health_req("Framework-Sys", "dirac", 12, 300.0)
    assert req.query == "index=12&wait=300000ms&tag=dirac&dc=dc+2"
    assert client.health_req("a", "dirac", 0, 300.0).query == "tag=dirac&dc=dc+2"


def test_the_reader_decodes_in_the_request_and_names_the_failure() -> None:
    """The client's decoding runs in ``request`` itself; a failure goes through it too."""
    seen: list[object] = []

    def read(got: conn_mod.Result | Exception) -> str:
        seen.append(type(got).__name__)
        if isinstance(got, Exception):
            raise LookupError("decoded failure") from None
        return got[2].decode()

    async def body(conn: Connection, server: Server) -> None:
        assert await conn.request("/x", 5.0, read) == "hello"
        with pytest.raises(LookupError, match="decoded failure"):
            await conn.request("/x", 5.0, read)  # the server closes: a reset, read decides
        assert seen == ["tuple", "ConnectionResetError"]

    run(lambda c, n: ok(b"hello") if (c, n) == (1, 1) else None, body)


def test_a_watch_answer_at_its_own_cursor_is_not_decoded() -> None:
    """A thousand parked queries renew every ``wait``: an answer whose index is the request's
    cursor changed nothing (the watch ignores it), so its body is not even decoded."""
    from sidecar.config.schema import ConsulSettings
    from sidecar.consul.client import AsyncConsul, ConsulClient

    settings = ConsulSettings()
    watches = AsyncConsul(settings, "")
    req = watches.health_req("svc", "dirac", 12, 300.0)
    assert req.index == 12 and watches.health_req("svc", "dirac", 0, 300.0).index == 0
    same = watches.decode(req, (200, {"x-consul-index": "12"}, b'[{"a": 1}]'))
    moved = watches.decode(req, (200, {"x-consul-index": "13"}, b'[{"a": 1}]'))
    assert (same.index, same.body) == (12, None) and (moved.index, moved.body) == (13, [{"a": 1}])
    plain = ConsulClient(settings, "")  # a one-shot caller always gets the body
    try:
        assert plain.answer(req, 200, {"x-consul-index": "12"}, b"[]").body == []
    finally:
        plain.close()

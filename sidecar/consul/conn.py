"""One keep-alive HTTP/1.1 connection to Consul, one GET at a time (adapter detail of
``consul.client``: h11 for the protocol, an asyncio transport for the socket).

Why not httpx for the watches: a parked blocking query holds its connection for minutes, so a
gateway at 1,000 services keeps 1,000 of them open. Through httpx, httpcore and anyio each one
is ~20 KB of live objects (a coroutine stack ~18 frames deep, anyio events and locks with their
deques, pool bookkeeping: ~20 MB at 1,000 services, measured with tracemalloc), and httpcore
scans its pool on every request. A watch sends one request and waits for its answer: one
connection and h11's state machine (the parser httpx itself uses) is all it needs.

Why a protocol and not asyncio's streams: a ``StreamReader``, its protocol and its writer
with their buffers and futures were ~2.7 KB per parked watch (2.7 MB of the daemon's heap at
1,000 services, tracemalloc); here the transport feeds h11 directly and a parked request
holds one future. Plain and synchronous requests stay on httpx (``consul.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence

import h11

MAX_BODY = 64 * 1024 * 1024  # a Consul answer larger than this is refused, not buffered


class _Link(asyncio.Protocol):
    """The socket's side: bytes into h11, and a wake-up for the request waiting on them."""

    __slots__ = ("ended", "h11", "received", "transport", "waiter")

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.ended = False  # end of stream (or the connection lost): h11 was told
        self.received = False  # a byte of the current answer arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self._end()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            with contextlib.suppress(RuntimeError):  # h11 refuses data after its close
                self.h11.receive_data(b"")
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self) -> None:
        """Wait for the next bytes (or the end of the stream)."""
        if self.ended:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter


class Connection:
    """``request`` sends a GET and returns (status, headers, body); raises ``OSError``,
    ``h11.ProtocolError``, ``TimeoutError`` or ``ValueError`` (too large). A request that
    fails or is cancelled midway closes the connection; the next one opens a new one."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        headers: Sequence[tuple[str, str]],
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
        self._headers = [("Host", authority), *headers]
        self._link: _Link | None = None

    async def request(
        self, target: str, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(timeout):
            if self._usable():
                try:
                    return await self._exchange(target)
                except (_StaleError, ConnectionError):
                    # the server closed (or reset) the kept connection while it was idle: a
                    # GET is safe to send once more, on a fresh one
                    self.close()
            await self._open()
            try:
                return await self._exchange(target)
            except _StaleError:
                raise ConnectionResetError("Consul closed the connection") from None

    @property
    def open(self) -> bool:
        return self._link is not None

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None and link.transport is not None:
            with contextlib.suppress(Exception):
                link.transport.close()

    def _usable(self) -> bool:
        link = self._link
        return (
            link is not None
            and link.transport is not None
            and not link.transport.is_closing()
            and not link.ended
        )

    async def _open(self) -> None:
        _, self._link = await asyncio.get_running_loop().create_connection(
            _Link,
            self._host,
            self._port,
            ssl=self._tls,
            server_hostname=self._host if self._tls else None,
        )

    async def _exchange(self, target: str) -> tuple[int, dict[str, str], bytes]:
        link = self._link
        assert link is not None and link.transport is not None
        conn, done = link.h11, False
        link.received = False
        try:
            link.transport.write(conn.send(h11.Request(method="GET", target=target,
                                                       headers=self._headers)))  # fmt: skip
            link.transport.write(conn.send(h11.EndOfMessage()))
            status, headers, body = 0, {}, bytearray()
            while True:
                if link.ended and not link.received:
                    raise _StaleError
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    await link.more()
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                               for k, v in event.headers}  # fmt: skip
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        raise ValueError(f"answer larger than {MAX_BODY} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionResetError("Consul closed the connection mid-answer")
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                done = True
            return status, headers, bytes(body)
        finally:
            if not done:  # failed, cancelled, or the server asked to close: never reused
                self.close()


class _StaleError(Exception):
    """The connection ended before any byte of the answer (an idle keep-alive closed)."""

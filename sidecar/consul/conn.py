"""One keep-alive HTTP/1.1 connection to Consul, one GET at a time (adapter detail of
``consul.client``: h11 for the protocol, asyncio streams for the socket).

Why not httpx for the watches: a parked blocking query holds its connection for minutes, so a
gateway at 1,000 services keeps 1,000 of them open. Through httpx, httpcore and anyio each one
is ~20 KB of live objects (a coroutine stack ~18 frames deep, anyio events and locks with their
deques, pool bookkeeping: ~20 MB at 1,000 services, measured with tracemalloc), and httpcore
scans its pool on every request. A watch sends one request and waits for its answer: one
connection and h11's state machine (the parser httpx itself uses) is all it needs. Plain and
synchronous requests stay on httpx (``consul.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence

import h11

MAX_BODY = 64 * 1024 * 1024  # a Consul answer larger than this is refused, not buffered
READ_SIZE = 65536


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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11: h11.Connection | None = None

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

    def close(self) -> None:
        writer, self._writer, self._reader, self._h11 = self._writer, None, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    def _usable(self) -> bool:
        return (
            self._writer is not None
            and self._reader is not None
            and not self._writer.is_closing()
            and not self._reader.at_eof()
        )

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self._host,
            self._port,
            ssl=self._tls,
            server_hostname=self._host if self._tls else None,
            limit=READ_SIZE,
        )
        self._h11 = h11.Connection(h11.CLIENT)

    async def _exchange(self, target: str) -> tuple[int, dict[str, str], bytes]:
        reader, writer, conn = self._reader, self._writer, self._h11
        assert reader is not None and writer is not None and conn is not None
        done, received = False, False
        try:
            writer.write(conn.send(h11.Request(method="GET", target=target,
                                               headers=self._headers)))  # fmt: skip
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            status, headers, body = 0, {}, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    chunk = await reader.read(READ_SIZE)
                    if not chunk and not received:
                        raise _StaleError
                    received = True
                    conn.receive_data(chunk)  # b"": end of stream, h11 judges it
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

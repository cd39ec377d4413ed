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
holds one future, awaited in ``Connection.request``'s own frame, where the caller's
``Reader`` also decodes the answer (no coroutine per step or per layer), and the connections
of one client share one tuple of headers. Plain and synchronous requests have their own
transport (``consul.plain``, on ``http.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Sequence
from typing import TypeVar

import h11

MAX_BODY = 64 * 1024 * 1024  # a Consul answer larger than this is refused, not buffered
Headers = tuple[tuple[str, str], ...]
Result = tuple[int, dict[str, str], bytes]  # status, headers (names in lower case), body
T = TypeVar("T")
# What ``Connection.request`` makes of an answer, or of the failure to get one (raised, as a
# rule): the caller's decoding runs in the request's own frame, so a parked query needs no
# coroutine of the caller's around it.
Reader = Callable[[Result | Exception], T]


def request_headers(host: str, port: int, extra: Sequence[tuple[str, str]]) -> Headers:
    """The headers of every request to ``host:port``: built once per client and shared by
    its connections (1,000 watches, one tuple)."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
    return (("Host", authority), *extra)


class _Link(asyncio.Protocol):
    """The socket's side: bytes into h11, the answer being read, and a wake-up for the
    request waiting on them."""

    __slots__ = ("body", "ended", "h11", "headers", "received", "status", "transport", "waiter")

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.ended = False  # end of stream (or the connection lost): h11 was told
        self.received = False  # a byte of the current answer arrived
        self.status, self.headers, self.body = 0, _NO_HEADERS, _NO_BODY

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

    def send(self, target: str, headers: Headers) -> None:
        """Start an exchange: the GET goes out, the answer's fields start empty."""
        assert self.transport is not None
        # a parked query's link holds no dict or buffer of its own until bytes come
        self.received, self.status, self.headers, self.body = False, 0, _NO_HEADERS, _NO_BODY
        conn = self.h11
        request = h11.Request(method="GET", target=target, headers=list(headers))
        self.transport.write(conn.send(request))
        self.transport.write(conn.send(h11.EndOfMessage()))

    def later(self) -> asyncio.Future[None] | None:
        """A future that the next bytes (or the end of the stream) complete; None after the
        end. Awaited by ``Connection.request`` itself: no coroutine of its own in the chain."""
        if self.ended:
            return None
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter

    def take(self) -> Result | None:
        """The answer once it is complete (then the link holds none of it); None while it
        needs more bytes. Raises ``_StaleError``, ``ConnectionResetError``, ``ValueError``
        (too large) or h11's ``ProtocolError``."""
        conn = self.h11
        while True:
            if self.ended and not self.received:
                raise _StaleError
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                                for k, v in event.headers}  # fmt: skip
            elif isinstance(event, h11.Data):
                if self.body is _NO_BODY:
                    self.body = bytearray()
                self.body += event.data
                if len(self.body) > MAX_BODY:
                    raise ValueError(f"answer larger than {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("Consul closed the connection mid-answer")
        result = (self.status, self.headers, bytes(self.body))
        self.headers, self.body = _NO_HEADERS, _NO_BODY  # a parked link keeps no old answer
        return result


_NO_HEADERS: dict[str, str] = {}  # never written: an answer's headers are a new dict
_NO_BODY = bytearray()  # never written: an answer's first bytes get a buffer of their own


class Connection:
    """``request`` sends a GET and returns what ``read`` makes of (status, headers, body), or
    of the ``OSError``, ``h11.ProtocolError``, ``TimeoutError`` or ``ValueError`` (too large)
    that came instead. A request that fails or is cancelled midway closes the
    connection; the next one opens a new one."""

    __slots__ = ("_headers", "_host", "_link", "_port", "_tls")  # one per watch

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None, headers: Headers
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._headers = headers  # ``request_headers``: shared with the client's other links
        self._link: _Link | None = None

    async def request(self, target: str, timeout: float, read: Reader[T]) -> T:
        # The whole exchange in this one frame, awaiting the link's future itself, and the
        # reader's decoding after it: a parked query is this coroutine and the watch's only.
        try:
            async with asyncio.timeout(timeout):
                kept = self._usable()
                if not kept:
                    await self._open()
                while True:
                    try:
                        link = self._send(target)
                        while (result := link.take()) is None:
                            if (later := link.later()) is not None:
                                await later
                        break
                    except (_StaleError, ConnectionError) as exc:
                        self.close()
                        if not kept:
                            raise _failure(exc) from None
                        # the server closed (or reset) the kept connection while it was
                        # idle: a GET is safe to send once more, on a fresh one
                        kept = False
                        await self._open()
                    except BaseException:
                        self.close()  # failed or cancelled midway: never reused
                        raise
                self._finished(link)
        except (OSError, TimeoutError, h11.ProtocolError, ValueError) as exc:
            return read(exc)
        return read(result)

    def _finished(self, link: _Link) -> None:
        conn = link.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()  # the server asked to close

    def _send(self, target: str) -> _Link:
        link = self._link
        assert link is not None
        link.send(target, self._headers)
        return link

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


def _failure(exc: Exception) -> Exception:
    """What a fresh connection's failure raises: a stale one is a reset."""
    if isinstance(exc, _StaleError):
        return ConnectionResetError("Consul closed the connection")
    return exc


class _StaleError(Exception):
    """The connection ended before any byte of the answer (an idle keep-alive closed)."""

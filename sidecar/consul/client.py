"""The Consul HTTP adapter: the only module that speaks HTTP to Consul.

Thin on purpose: it sends one request and returns the decoded body with the blocking-query
headers, or raises ``CatalogError``. One request shape (``Request``) and one answer decoder are
shared by the two clients: ``ConsulClient`` (synchronous, ``consul.plain``: the command line,
the fleet lock and registry, the second read of held removals) and ``AsyncConsul`` (the
watches, every blocking query on one event loop, a ``consul.conn`` connection each). Every
request has a timeout: ``timeout`` for plain requests and ``wait + wait/16 + timeout`` for
blocking ones (Consul adds up to wait/16 of jitter), so a dead connection can never park a
watch forever.
Policy (retries, index rules, rate limits) lives in ``consul.watch``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import urllib.parse
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.base.errors import CatalogError
from sidecar.config.schema import ConsulSettings
from sidecar.consul.conn import Connection, Result, request_headers
from sidecar.consul.plain import PlainError, PlainHTTP

HEADERS = (("Accept", "application/json"), ("User-Agent", "dirac-sidecar"))


@dataclass(frozen=True, slots=True)
class Answer:
    """One Consul answer: the body and the headers that matter for blocking queries."""

    index: int
    body: Any
    last_contact_ms: int = 0
    known_leader: bool = True


@dataclass(frozen=True, slots=True)
class Reply:
    """A plain answer (KV, sessions, agent endpoints): the status code is the caller's."""

    code: int
    body: Any  # decoded JSON, or the raw text when the answer is not JSON
    text: str

    @property
    def ok(self) -> bool:
        return self.code == 200


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str = ""  # encoded once: a parked query holds one string, not a list of pairs
    content: str = ""
    timeout: float | None = None  # None: the client's default
    index: int = 0  # the blocking query's cursor (0: a plain read)


def _int_header(headers: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(headers.get(name, default))
    except (TypeError, ValueError):
        return default


def blocking(index: int, wait: float) -> list[tuple[str, str]]:
    """The blocking-query parameters; index 0 is never a cursor (the call returns at once)."""
    if index < 1:
        return []
    return [("index", str(index)), ("wait", f"{int(wait * 1000)}ms")]


def tls_context(settings: ConsulSettings) -> ssl.SSLContext:
    """The TLS of an ``https`` agent: its CA (or the system's), our client certificate."""
    ctx = ssl.create_default_context(cafile=settings.ca_file or None)
    if not settings.verify and not settings.ca_file:  # consul.verify = false, chosen
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if settings.cert_file:
        ctx.load_cert_chain(settings.cert_file, settings.key_file or None)
    return ctx


class _Shape:
    """What both clients share: settings, token, the request shapes and the decoders."""

    def __init__(self, settings: ConsulSettings, token: str) -> None:
        url, self.settings = urllib.parse.urlsplit(settings.address), settings
        scheme = url.scheme or "http"
        self.host = url.hostname or "127.0.0.1"
        self.port = port = url.port or (443 if scheme == "https" else 8500)
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 agent
        self.base = f"{scheme}://{host}:{port}"
        # The contract's order is the settings, then token_file, then the environment (folded
        # in by the settings loader): the token given here is the only one ever sent.
        self.headers = {"X-Consul-Token": token} if token else {}
        # plain HTTP: no TLS context at all
        self.tls = tls_context(settings) if scheme == "https" else None

    def catalog(
        self, path: str, params: list[tuple[str, str]], wait: float, index: int
    ) -> Request:
        if self.settings.datacenter:
            params.append(("dc", self.settings.datacenter))
        if self.settings.stale:
            params.append(("stale", "1"))
        timeout = wait + wait / 16 + self.settings.timeout if params and wait else None
        cursor = index if index >= 1 else 0  # as ``blocking``: below 1, a plain read
        return Request("GET", path, urllib.parse.urlencode(params), "", timeout, cursor)

    def services_req(self, index: int, wait: float) -> Request:
        params = blocking(index, wait)
        return self.catalog("/v1/catalog/services", params, wait if params else 0.0, index)

    def health_req(self, name: str, tag: str, index: int, wait: float) -> Request:
        wait = wait if index >= 1 else 0.0  # a first read returns at once: the plain timeout
        params = [*blocking(index, wait), ("tag", tag)]
        return self.catalog(f"/v1/health/service/{name}", params, wait, index)

    @staticmethod
    def target(req: Request) -> str:
        """The request line's target: the path quoted, the query as encoded."""
        return urllib.parse.quote(req.path, safe="/:") + ("?" + req.query if req.query else "")

    def plain(self, method: str, path: str, params: Any, content: str) -> Request:
        dc = [("dc", self.settings.datacenter)] if self.settings.datacenter else []
        return Request(method, path, urllib.parse.urlencode([*params, *dc]), content)

    def answer(
        self, req: Request, code: int, headers: Mapping[str, str], content: bytes,
        lean: bool = False,
    ) -> Answer:  # fmt: skip
        """Status, headers (names in lower case) and body of a catalog read -> ``Answer``,
        or ``CatalogError``. ``lean``: an answer whose index is the request's cursor keeps
        no body (a blocking query that timed out, or an idempotent write: the watch ignores
        it), so it is not decoded either (a thousand watches renew every ``wait``)."""
        if code != 200:
            excerpt = content[:200].decode("utf-8", "replace").strip()
            raise CatalogError(
                f"GET {req.path}: HTTP {code} {excerpt}", retryable=code != 400, status=code
            )
        index = _int_header(headers, "x-consul-index", 0)
        skip = lean and index == req.index >= 1
        try:
            body = json.loads(content) if content and not skip else None
        except ValueError:
            raise CatalogError(f"GET {req.path}: answer is not JSON") from None
        answer = Answer(
            index=index,
            body=body,
            last_contact_ms=_int_header(headers, "x-consul-lastcontact", 0),
            known_leader=headers.get("x-consul-knownleader", "true") == "true",
        )
        if self.settings.stale:
            # A stale read from a server that lost the leader long ago is not trusted.
            if not answer.known_leader:
                raise CatalogError(f"GET {req.path}: the answering server knows no leader")
            if answer.last_contact_ms > self.settings.max_stale * 1000:
                raise CatalogError(
                    f"GET {req.path}: answer {answer.last_contact_ms} ms stale (max_stale "
                    f"{self.settings.max_stale:g} s)"
                )
        return answer

    @staticmethod
    def reply(code: int, content: bytes) -> Reply:
        text = content.decode("utf-8", "replace")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return Reply(code, body, text)

    @staticmethod
    def failed(req: Request, exc: Exception) -> CatalogError:
        return CatalogError(f"{req.method} {req.path}: {type(exc).__name__}: {exc}")


class ConsulClient(_Shape):
    """The synchronous client: a few kept-alive connections, safe to share between threads."""

    def __init__(self, settings: ConsulSettings, token: str) -> None:
        super().__init__(settings, token)
        self._http = PlainHTTP(self.host, self.port, self.tls, {**self.headers, **dict(HEADERS)})

    def close(self) -> None:
        self._http.close()

    def _send(self, req: Request) -> Result:
        timeout = req.timeout if req.timeout is not None else self.settings.timeout
        try:
            return self._http.request(req.method, self.target(req), req.content.encode(), timeout)
        except PlainError as exc:
            raise CatalogError(f"{req.method} {req.path}: {exc}") from None

    def _get(self, req: Request) -> Answer:
        return self.answer(req, *self._send(req))

    def services(self, index: int, wait: float) -> Answer:
        """``/v1/catalog/services``: every service name with its tags."""
        return self._get(self.services_req(index, wait))

    def health(self, name: str, tag: str, index: int, wait: float) -> Answer:
        """``/v1/health/service/<name>``: every instance with its checks (not only passing)."""
        return self._get(self.health_req(name, tag, index, wait))

    def leader(self) -> str:
        """The current Raft leader ("" when there is none); a cheap reachability probe."""
        answer = self._get(Request("GET", "/v1/status/leader"))
        return str(answer.body or "")

    def send(self, method: str, path: str, params: Any = (), content: str = "") -> Reply:
        """One plain request; transport failures raise ``CatalogError``, codes are returned."""
        req = self.plain(method, path, params, content)
        code, _, body = self._send(req)
        return self.reply(code, body)


class AsyncConsul(_Shape):
    """The client of the watches: every blocking query on one event loop.

    A parked blocking query holds its connection for up to ``wait``, so every watch leases a
    connection of its own (``consul.conn``: h11 on an asyncio protocol, a few KB each where an
    httpx one cost ~20 KB), all sharing one tuple of headers. One-shot reads (``services(0,
    0)`` to confirm an emptied service) take turns on one more connection: never behind a
    parked query.
    """

    def __init__(self, settings: ConsulSettings, token: str) -> None:
        super().__init__(settings, token)
        self._leases: set[Lease] = set()
        self._headers = request_headers(self.host, self.port, [*self.headers.items(), *HEADERS])
        self._plain = self._connection()
        self._plain_turn = asyncio.Lock()

    def _connection(self) -> Connection:
        return Connection(self.host, self.port, self.tls, self._headers)

    def lease(self) -> Lease:
        """One watch's connection; ``release`` it when the watch ends."""
        lease = Lease(self, self._connection())
        self._leases.add(lease)
        return lease

    def forget(self, lease: Lease) -> None:
        self._leases.discard(lease)

    async def aclose(self) -> None:
        for lease in list(self._leases):
            lease.release()
        self._plain.close()

    def get(self, conn: Connection, req: Request) -> Coroutine[Any, Any, Answer]:
        """The request's coroutine: ``conn`` decodes the answer itself (no frame of ours)."""
        timeout = req.timeout if req.timeout is not None else self.settings.timeout
        return conn.request(self.target(req), timeout, functools.partial(self.decode, req))

    def decode(self, req: Request, got: Result | Exception) -> Answer:
        if isinstance(got, Exception):
            raise self.failed(req, got) from None
        return self.answer(req, *got, lean=True)

    async def services(self, index: int, wait: float) -> Answer:
        """A one-shot read (never parked: ``index`` 0)."""
        async with self._plain_turn:
            return await self.get(self._plain, self.services_req(index, wait))

    async def leader(self) -> Answer:
        """``/v1/status/leader`` on the one-shot connection: whether the agent answers at all
        (the watcher's probe; any answer counts, a leader or none)."""
        async with self._plain_turn:
            return await self.get(self._plain, Request("GET", "/v1/status/leader"))


class Lease:
    """One watch's connection of ``AsyncConsul``."""

    __slots__ = ("_conn", "_owner")  # one per service

    def __init__(self, owner: AsyncConsul, conn: Connection) -> None:
        self._owner, self._conn = owner, conn

    def release(self) -> None:
        self._conn.close()
        self._owner.forget(self)

    async def services(self, index: int, wait: float) -> Answer:
        return await self._owner.get(self._conn, self._owner.services_req(index, wait))

    def health(self, name: str, tag: str, index: int, wait: float) -> Coroutine[Any, Any, Answer]:
        """The request's own coroutine, handed on (not awaited in a frame of this one)."""
        return self._owner.get(self._conn, self._owner.health_req(name, tag, index, wait))


"""The Consul HTTP adapter: the only module that speaks HTTP to Consul (httpx).

Thin on purpose: it sends one request and returns the decoded body with the blocking-query
headers, or raises ``CatalogError``. One request shape (``Request``) and one answer decoder are
shared by the two clients: ``ConsulClient`` (synchronous: the command line, the fleet lock and
registry, the second read of held removals) and ``AsyncConsul`` (the watches, every blocking
query on one event loop). Every request has a timeout: ``timeout`` for plain requests and
``wait + wait/16 + timeout`` for blocking ones (Consul adds up to wait/16 of jitter), so a dead
connection can never park a watch forever. Policy (retries, index rules, rate limits) lives in
``consul.watch``.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import httpx

from sidecar.base.errors import CatalogError
from sidecar.config.schema import ConsulSettings

SHARD = 8  # parked queries per connection pool (httpcore scans a pool on every request)


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
    params: list[tuple[str, str]] = field(default_factory=list)
    content: str = ""
    timeout: float | None = None  # None: the client's default


def _int_header(headers: httpx.Headers, name: str, default: int) -> int:
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
        url = urllib.parse.urlsplit(settings.address)
        scheme = url.scheme or "http"
        port = url.port or (443 if scheme == "https" else 8500)
        self.settings = settings
        self.base = f"{scheme}://{url.hostname or '127.0.0.1'}:{port}"
        # The contract's order is the settings, then token_file, then the environment (folded
        # in by the settings loader): the token given here is the only one ever sent.
        self.headers = {"X-Consul-Token": token} if token else {}
        # plain HTTP: no TLS context at all (httpx would load the CA bundle for each client)
        self.verify: ssl.SSLContext | bool = tls_context(settings) if scheme == "https" else False

    def options(self) -> dict[str, Any]:
        return {
            "base_url": self.base,
            "headers": self.headers,
            "verify": self.verify,
            "timeout": self.settings.timeout,
            "trust_env": False,  # no proxy or token from the environment: the settings decide
        }

    def catalog(self, path: str, params: list[tuple[str, str]], wait: float) -> Request:
        if self.settings.datacenter:
            params.append(("dc", self.settings.datacenter))
        if self.settings.stale:
            params.append(("stale", "1"))
        timeout = wait + wait / 16 + self.settings.timeout if params and wait else None
        return Request("GET", path, params, "", timeout)

    def services_req(self, index: int, wait: float) -> Request:
        params = blocking(index, wait)
        return self.catalog("/v1/catalog/services", params, wait if params else 0.0)

    def health_req(self, name: str, tag: str, index: int, wait: float) -> Request:
        params = blocking(index, wait)
        wait = wait if params else 0.0  # a first read returns at once: the plain timeout
        params.append(("tag", tag))
        return self.catalog(f"/v1/health/service/{name}", params, wait)

    def plain(self, method: str, path: str, params: Any, content: str) -> Request:
        query = list(params)
        if self.settings.datacenter:
            query.append(("dc", self.settings.datacenter))
        return Request(method, path, query, content)

    def answer(self, req: Request, response: httpx.Response) -> Answer:
        if response.status_code != 200:
            code, excerpt = response.status_code, response.text[:200].strip()
            raise CatalogError(
                f"GET {req.path}: HTTP {code} {excerpt}", retryable=code != 400, status=code
            )
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            raise CatalogError(f"GET {req.path}: answer is not JSON") from None
        headers = response.headers
        answer = Answer(
            index=_int_header(headers, "X-Consul-Index", 0),
            body=body,
            last_contact_ms=_int_header(headers, "X-Consul-LastContact", 0),
            known_leader=headers.get("X-Consul-KnownLeader", "true") == "true",
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
    def reply(response: httpx.Response) -> Reply:
        text = response.text
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return Reply(response.status_code, body, text)

    @staticmethod
    def failed(req: Request, exc: Exception) -> CatalogError:
        return CatalogError(f"{req.method} {req.path}: {type(exc).__name__}: {exc}")


def _send_args(req: Request) -> dict[str, Any]:
    args: dict[str, Any] = {"params": req.params}
    if req.content:
        args["content"] = req.content.encode()
    if req.timeout is not None:
        args["timeout"] = req.timeout
    return args


class ConsulClient(_Shape):
    """The synchronous client: one HTTP connection pool, safe to share between threads."""

    def __init__(self, settings: ConsulSettings, token: str) -> None:
        super().__init__(settings, token)
        self._http = httpx.Client(**self.options())

    def close(self) -> None:
        self._http.close()

    def _get(self, req: Request) -> Answer:
        try:
            response = self._http.request(req.method, req.path, **_send_args(req))
        except httpx.HTTPError as exc:
            raise self.failed(req, exc) from None
        return self.answer(req, response)

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
        try:
            response = self._http.request(req.method, req.path, **_send_args(req))
        except httpx.HTTPError as exc:
            raise self.failed(req, exc) from None
        return self.reply(response)


class AsyncConsul(_Shape):
    """The client of the watches: every blocking query on one event loop.

    A parked blocking query holds its connection for up to ``wait``, so every watch needs a
    connection of its own. httpcore's pool scans all its connections on every request and
    every answer, which is quadratic with a thousand parked queries (80 s to converge at 1,000
    services, measured): the connections are spread over small pools (``SHARD`` each), and a
    watch leases a place in one for its lifetime. One-shot reads (``services(0, 0)`` to
    confirm an emptied service) use a pool of their own, so they never queue behind parked
    queries.
    """

    def __init__(self, settings: ConsulSettings, token: str) -> None:
        super().__init__(settings, token)
        self._shards: list[list[Any]] = []  # [client, leased places]
        self._plain = self._client(4)

    def _client(self, connections: int) -> httpx.AsyncClient:
        # No cap on connections: a request must never wait for a pool slot (a parked query's
        # wait is minutes, and so would be that request's pool timeout); the leases bound how
        # many live queries a pool serves.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=connections)
        return httpx.AsyncClient(limits=limits, **self.options())

    def lease(self) -> Lease:
        """A place for one watch's parked query; ``release`` it when the watch ends."""
        shard = next((s for s in self._shards if s[1] < SHARD), None)
        if shard is None:
            shard = [self._client(SHARD), 0]
            self._shards.append(shard)
        shard[1] += 1
        return Lease(self, shard)

    async def aclose(self) -> None:
        for client, _ in self._shards:
            await client.aclose()
        await self._plain.aclose()

    async def get(self, client: httpx.AsyncClient, req: Request) -> Answer:
        try:
            response = await client.request(req.method, req.path, **_send_args(req))
        except httpx.HTTPError as exc:
            raise self.failed(req, exc) from None
        return self.answer(req, response)

    async def services(self, index: int, wait: float) -> Answer:
        """A one-shot read (never parked: ``index`` 0)."""
        return await self.get(self._plain, self.services_req(index, wait))


class Lease:
    """One watch's place in a pool of ``AsyncConsul``."""

    def __init__(self, owner: AsyncConsul, shard: list[Any]) -> None:
        self._owner, self._shard = owner, shard
        self._client: httpx.AsyncClient = shard[0]

    def release(self) -> None:
        if self._shard[1] > 0:
            self._shard[1] -= 1

    async def services(self, index: int, wait: float) -> Answer:
        return await self._owner.get(self._client, self._owner.services_req(index, wait))

    async def health(self, name: str, tag: str, index: int, wait: float) -> Answer:
        return await self._owner.get(self._client, self._owner.health_req(name, tag, index, wait))

"""The Consul HTTP adapter: the only module that imports ``consul`` (py-consul).

Thin on purpose: it sends one request and returns the decoded body with the blocking-query
headers, or raises ``CatalogError``. Every request has a timeout: ``timeout`` for plain
requests and ``wait + wait/16 + timeout`` for blocking ones (Consul adds up to wait/16 of
jitter), so a dead connection can never park a watch forever. Policy (retries, index rules,
rate limits) lives in ``consul.watch``.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

import consul
import requests

from sidecar.base.errors import CatalogError
from sidecar.config.schema import ConsulSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """One Consul answer: the body and the headers that matter for blocking queries."""

    index: int
    body: Any
    last_contact_ms: int = 0
    known_leader: bool = True


def _int_header(headers: Any, name: str, default: int) -> int:
    try:
        return int(headers.get(name, default))
    except (TypeError, ValueError):
        return default


class ConsulClient:
    """One py-consul client (one HTTP session): give each watch thread its own."""

    def __init__(self, settings: ConsulSettings, token: str) -> None:
        url = urllib.parse.urlsplit(settings.address)
        verify: bool | str = settings.ca_file or settings.verify
        cert = (settings.cert_file, settings.key_file) if settings.cert_file else None
        self._settings = settings
        self._consul = consul.Consul(
            host=url.hostname or "127.0.0.1",
            port=url.port or (443 if url.scheme == "https" else 8500),
            scheme=url.scheme or "http",
            token=token or None,
            dc=settings.datacenter or None,
            verify=verify,
            cert=cert,
            consistency="stale" if settings.stale else "default",
            connections_timeout=settings.timeout,
        )
        # py-consul prefers $CONSUL_HTTP_TOKEN over the token it is given: the contract's
        # order is the settings, then token_file, then the environment (folded in by the
        # settings loader), so set the configured one (or none) explicitly.
        self._consul.token = token or None

    def pool_for(self, connections: int) -> None:
        """Let up to ``connections`` requests park at once on this client's session.

        The watcher shares one client among all its health watches (one thread each): one
        HTTP session instead of one per service keeps a 1,000-service gateway's memory low.
        """
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=connections)
        session = self._consul.http.session
        session.mount("http://", adapter)
        session.mount("https://", adapter)

    @property
    def raw(self) -> Any:
        """The py-consul client, for adapters that need other endpoints (KV, sessions)."""
        return self._consul

    def _get(self, path: str, params: list[tuple[str, Any]]) -> Answer:
        def callback(response: Any) -> Answer:
            code = int(response.code)
            if code != 200:
                excerpt = str(response.body)[:200].strip()
                raise CatalogError(
                    f"GET {path}: HTTP {code} {excerpt}", retryable=code != 400, status=code
                )
            try:
                body = json.loads(response.body) if response.body else None
            except ValueError:
                raise CatalogError(f"GET {path}: answer is not JSON") from None
            return Answer(
                index=_int_header(response.headers, "X-Consul-Index", 0),
                body=body,
                last_contact_ms=_int_header(response.headers, "X-Consul-LastContact", 0),
                known_leader=response.headers.get("X-Consul-KnownLeader", "true") == "true",
            )

        if self._consul.dc:
            params.append(("dc", self._consul.dc))
        if self._settings.stale:
            params.append(("stale", "1"))
        headers = {"X-Consul-Token": self._consul.token} if self._consul.token else None
        try:
            answer: Answer = self._consul.http.get(callback, path, params=params, headers=headers)
        except requests.RequestException as exc:
            raise CatalogError(f"GET {path}: {type(exc).__name__}: {exc}") from None
        if self._settings.stale:
            # A stale read from a server that lost the leader long ago is not trusted.
            if not answer.known_leader:
                raise CatalogError(f"GET {path}: the answering server knows no leader")
            if answer.last_contact_ms > self._settings.max_stale * 1000:
                raise CatalogError(
                    f"GET {path}: answer {answer.last_contact_ms} ms stale (max_stale "
                    f"{self._settings.max_stale:g} s)"
                )
        return answer

    @staticmethod
    def _blocking(index: int, wait: float) -> list[tuple[str, Any]]:
        if index < 1:
            return []  # index 0 is never a cursor: this call returns at once
        return [("index", str(index)), ("wait", f"{int(wait * 1000)}ms")]

    def services(self, index: int, wait: float) -> Answer:
        """``/v1/catalog/services``: every service name with its tags."""
        return self._get("/v1/catalog/services", self._blocking(index, wait))

    def health(self, name: str, tag: str, index: int, wait: float) -> Answer:
        """``/v1/health/service/<name>``: every instance with its checks (not only passing)."""
        params = self._blocking(index, wait)
        params.append(("tag", tag))
        return self._get(f"/v1/health/service/{name}", params)

    def leader(self) -> str:
        """The current Raft leader ("" when there is none); a cheap reachability probe."""
        answer = self._get("/v1/status/leader", [])
        return str(answer.body or "")

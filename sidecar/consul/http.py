"""Plain Consul HTTP calls for the apply-side adapters (lock, gateway registry): adapter, I/O.

Sits in the apply stage beside ``consul.client``: it borrows that client's py-consul HTTP
session (``ConsulClient.raw.http``: address, TLS, token, timeouts all configured there) and
sends one request, returning the status code and the decoded body. It never raises a
py-consul or requests exception: transport failures become ``CatalogError``; status codes are
left to the caller, which knows which ones are expected (a 404 from ``session/renew`` means
"session gone", not "Consul down"). Only ``consul.client`` imports ``consul``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from sidecar.base.errors import CatalogError
from sidecar.consul.client import ConsulClient

Params = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    body: Any  # decoded JSON, or the raw text when the answer is not JSON
    text: str

    @property
    def ok(self) -> bool:
        return self.code == 200


def _reply(response: Any) -> Reply:
    text = str(response.body or "")
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = text
    return Reply(int(response.code), body, text)


class ConsulHTTP:
    """One request per call through the py-consul HTTP session of ``client``."""

    def __init__(self, client: ConsulClient) -> None:
        self._consul = client.raw

    def _send(self, method: str, path: str, params: Params, payload: str) -> Reply:
        http = self._consul.http
        query = list(params)
        if self._consul.dc:
            query.append(("dc", self._consul.dc))
        headers = {"X-Consul-Token": self._consul.token} if self._consul.token else None
        try:
            if method == "GET":
                reply: Reply = http.get(_reply, path, params=query, headers=headers)
            else:
                reply = http.put(_reply, path, params=query, data=payload, headers=headers)
        except requests.RequestException as exc:
            raise CatalogError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        return reply

    def get(self, path: str, params: Params = ()) -> Reply:
        return self._send("GET", path, params, "")

    def put(self, path: str, data: Any | None = None, params: Params = ()) -> Reply:
        """PUT ``data`` encoded as JSON (nothing when None)."""
        return self._send("PUT", path, params, "" if data is None else json.dumps(data))

    def put_raw(self, path: str, value: str, params: Params = ()) -> Reply:
        """PUT ``value`` as the body unchanged (KV values are stored as sent, not as JSON)."""
        return self._send("PUT", path, params, value)


def expect_ok(reply: Reply, what: str) -> Reply:
    """``reply`` when it is HTTP 200, else ``CatalogError`` naming ``what`` and the answer."""
    if not reply.ok:
        raise CatalogError(
            f"{what}: HTTP {reply.code} {reply.text[:200].strip()}",
            retryable=reply.code not in (400, 403),
            status=reply.code,
        )
    return reply

"""Plain Consul HTTP calls for the fleet side (lock, gateway registry) and ``register``.

Sits beside the catalog calls in ``consul.client`` and uses the same client (address, TLS,
token, timeouts all configured there): one request per call, returning the status code and the
decoded body. Transport failures become ``CatalogError``; status codes are left to the caller,
which knows which ones are expected (a 404 from ``session/renew`` means "session gone", not
"Consul down").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sidecar.base.errors import CatalogError
from sidecar.consul.client import ConsulClient, Reply

__all__ = ["ConsulHTTP", "Reply", "expect_ok"]
Params = Sequence[tuple[str, str]]


class ConsulHTTP:
    """One request per call through ``client``'s connection pool."""

    def __init__(self, client: ConsulClient) -> None:
        self._client = client

    def get(self, path: str, params: Params = ()) -> Reply:
        return self._client.send("GET", path, params)

    def put(self, path: str, data: Any | None = None, params: Params = ()) -> Reply:
        """PUT ``data`` encoded as JSON (nothing when None)."""
        return self._client.send("PUT", path, params, "" if data is None else json.dumps(data))

    def put_raw(self, path: str, value: str, params: Params = ()) -> Reply:
        """PUT ``value`` as the body unchanged (KV values are stored as sent, not as JSON)."""
        return self._client.send("PUT", path, params, value)


def expect_ok(reply: Reply, what: str) -> Reply:
    """``reply`` when it is HTTP 200, else ``CatalogError`` naming ``what`` and the answer."""
    if not reply.ok:
        raise CatalogError(
            f"{what}: HTTP {reply.code} {reply.text[:200].strip()}",
            retryable=reply.code not in (400, 403),
            status=reply.code,
        )
    return reply

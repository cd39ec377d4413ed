"""Consul's session and KV primitives of the CS writer lock (adapter, one request each).

``fleet.lock`` decides when; these only speak the API: create a session bound to checks, read
a key's entry (consistently when it must not come from a deposed leader), and decode who holds
it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from sidecar.base.errors import CatalogError
from sidecar.config.durations import consul_duration
from sidecar.consul.http import ConsulHTTP, expect_ok


def create_session(
    http: ConsulHTTP, name: str, ttl: float, lock_delay: float, checks: Sequence[str] = ()
) -> str:
    """A new session (``Behavior = release``); explicit ``checks`` replace Consul's default
    (so they must name ``serfHealth`` themselves)."""
    body: dict[str, Any] = {
        "Name": name,
        "TTL": consul_duration(ttl),
        "LockDelay": consul_duration(lock_delay),
        "Behavior": "release",
    }
    if checks:
        body["Checks"] = list(checks)
    reply = expect_ok(http.put("/v1/session/create", body), "create session")
    session = reply.body.get("ID") if isinstance(reply.body, dict) else None
    if not isinstance(session, str) or not session:
        raise CatalogError(f"create session: no ID in {reply.text[:200]!r}")
    return session


def read_entry(http: ConsulHTTP, key: str, consistent: bool = False) -> dict[str, Any] | None:
    """The key's entry (None: no such key); ``consistent``: the leader first checks with a
    quorum that it is still the leader (a deposed one could answer with the old holder)."""
    params = [("consistent", "")] if consistent else []
    reply = http.get(f"/v1/kv/{key}", params)
    if reply.code == 404:
        return None
    expect_ok(reply, f"read {key}")
    entries = reply.body if isinstance(reply.body, list) else []
    return entries[0] if entries and isinstance(entries[0], dict) else None


def entry_holder(entry: dict[str, Any] | None) -> str:
    """The holder's name stored in a held key (``<node>/<gateway>``), "" when free."""
    if entry is None or not entry.get("Session"):
        return ""
    raw = entry.get("Value") or ""
    return base64.b64decode(raw).decode("utf-8", "replace") if raw else ""

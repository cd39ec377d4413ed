"""The environment handed to child processes (HAProxy): only what they need (adapter helper).

HAProxy's master and workers live for days and their environment is readable in
``/proc/<pid>/environ`` by their user: the daemon's own environment may hold
``CONSUL_HTTP_TOKEN`` or other secrets, so children get a short allow-list instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def scrubbed_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if env is None else env
    kept = {key: source[key] for key in KEPT if key in source}
    kept.setdefault("PATH", DEFAULT_PATH)
    return kept

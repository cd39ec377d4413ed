"""One exception family for the whole sidecar.

Library errors (requests, consul, OSError from sockets and files, subprocess failures) are
translated into these at the adapter boundary that meets them, so the orchestrator and the CLI
only ever catch ``SidecarError``.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """An invalid settings file: names the file, the key path and the reason."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


class CatalogError(SidecarError):
    """Consul could not be read (unreachable, ACL denied, bad answer)."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        self.retryable = retryable
        self.status = status
        super().__init__(message)


class TemplateError(SidecarError):
    """An operator template could not be loaded or rendered."""


class ValidationFailed(SidecarError):  # noqa: N818 - reads as a sentence at call sites
    """HAProxy refused a rendered configuration (``haproxy -c``)."""

    def __init__(self, message: str, output: str = "") -> None:
        self.output = output
        super().__init__(message)


class HAProxyError(SidecarError):
    """Starting, reloading or talking to HAProxy failed."""


class CSError(SidecarError):
    """The DIRAC Configuration Service could not be read or written."""

"""One exception family for the whole sidecar.

Library errors (requests, consul, OSError from sockets and files, subprocess failures) are
translated into these at the adapter boundary that meets them, so the orchestrator and the CLI
only ever catch ``SidecarError``.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """An invalid settings file: names the file, the key path and the reason.

    ``errors`` holds every problem found as (key path, reason); ``key`` and ``reason`` are the
    first. ``str()`` is one line per problem, each ``<file>: <key>: <reason>``.
    """

    def __init__(
        self, source: str, key: str, reason: str, more: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        self.errors = ((key, reason), *more)
        super().__init__("\n".join(self.lines()))

    @classmethod
    def many(cls, source: str, errors: list[tuple[str, str]]) -> ConfigError:
        (key, reason), *more = errors
        return cls(source, key, reason, tuple(more))

    def lines(self) -> list[str]:
        return [f"{self.source}: {k}: {r}" if k else f"{self.source}: {r}" for k, r in self.errors]


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


class UnsafePathError(SidecarError):
    """A file or directory another account controls (a symlink, a foreign owner, a swapped
    temporary file) where the sidecar would write: refused rather than written through."""

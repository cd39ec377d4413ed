"""Loading the settings: TOML file + consul CLI environment -> ``Settings`` (adapter at the edge).

Reads one file (``--config``, ``$SIDECAR_CONFIG`` or the default path) and the environment
mapping passed in; everything else is pure. Every problem is collected, not only the first:
unknown keys (with the nearest known key), wrong types, values out of range, cross-field
rules. ``ConfigError.errors`` holds them all as (key path, reason); ``sidecar validate``
prints each, ``run`` and SIGHUP refuse the file the same way (the daemon through a child:
``host.apart``). The checks are ``config.validation``'s, imported when a file is validated.
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sidecar.base.errors import ConfigError
from sidecar.config.schema import DEFAULT_CONFIG, SECTIONS, Settings

# Relative paths in a settings file are relative to the file, not to the working directory.
PATH_KEYS = {
    "consul": ("token_file", "ca_file", "cert_file", "key_file"),
    "haproxy": ("runtime_dir", "template"),
    "ports": ("map_file",),
    "dirac_cs": ("file", "backup_dir"),
    "certs": ("ca_dir", "ca_file", "client_cert", "client_key"),
}
# The consul CLI's variables, used where the file is silent.
ENVIRONMENT = {
    "CONSUL_HTTP_ADDR": "address",
    "CONSUL_CACERT": "ca_file",
    "CONSUL_CLIENT_CERT": "cert_file",
    "CONSUL_CLIENT_KEY": "key_file",
}


def _environment(consul: dict[str, Any], env: Mapping[str, str]) -> bool:
    """Fill ``[consul]`` keys from the consul CLI's variables where the file is silent.

    The token's precedence is the contract's: ``token`` in the file, then ``token_file``, then
    ``CONSUL_HTTP_TOKEN``, then ``CONSUL_HTTP_TOKEN_FILE``. Returns whether an address was
    configured (by the file or the environment).
    """
    configured = "address" in consul
    for var, key in ENVIRONMENT.items():
        value = env.get(var)
        if value and key not in consul:
            if key == "address":
                configured = True
                if "://" not in value:
                    ssl = env.get("CONSUL_HTTP_SSL", "").lower() in ("true", "1")
                    value = f"{'https' if ssl else 'http'}://{value}"
            consul[key] = value
    if not consul.get("token") and not consul.get("token_file"):
        if env.get("CONSUL_HTTP_TOKEN"):
            consul["token"] = env["CONSUL_HTTP_TOKEN"]
        elif env.get("CONSUL_HTTP_TOKEN_FILE"):
            consul["token_file"] = env["CONSUL_HTTP_TOKEN_FILE"]
    return configured


def _resolve(data: dict[str, Any], base: Path | None) -> None:
    if base is None:
        return
    for section, keys in PATH_KEYS.items():
        table = data.get(section)
        if not isinstance(table, dict):
            continue
        for key in keys:
            value = table.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                table[key] = str(base / value)


def parse_settings(
    raw: Mapping[str, Any], source: str, env: Mapping[str, str], base: Path | None = None
) -> Settings:
    """Validate a parsed TOML document; raises ``ConfigError`` listing every problem."""
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    consul = data.setdefault("consul", {})
    configured = _environment(consul, env) if isinstance(consul, dict) else False
    _resolve(data, base)
    from sidecar.config.validation import validate_section  # pydantic: only when validating

    problems: list[tuple[str, str]] = []
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key not in SECTIONS:
            near = difflib.get_close_matches(key, list(SECTIONS), n=1, cutoff=0.6)
            hint = f"; did you mean `[{near[0]}]`?" if near else ""
            problems.append((key, "unknown section" + hint))
            continue
        if not isinstance(value, dict):
            problems.append((key, "expected a table"))
            continue
        sections[key], found = validate_section(SECTIONS[key], value, key)
        problems.extend(found)
    if problems:
        raise ConfigError.many(source, problems)
    return Settings(**sections, source=source, consul_configured=configured)


def refuse_unsafe(fd: int, source: str, key: str = "") -> None:
    """A settings file or template another account can change would let it reconfigure the
    gateway (a template can run code, ``haproxy.binary`` names a program): refuse it.

    Checked on the open descriptor, so the file judged is the file read. Trusted writers are
    this account and root: the owner must be one of them, "others" may never write, and a
    group may write only when it is root's group or this account's own.
    """
    info = os.fstat(fd)
    mode, me = info.st_mode & 0o777, os.geteuid()
    if info.st_mode & stat.S_IWOTH:
        raise ConfigError(source, key, f"refused: writable by others (mode {mode:o})")
    if info.st_mode & stat.S_IWGRP and info.st_gid not in (0, os.getegid()):
        reason = f"refused: writable by group {info.st_gid} (mode {mode:o})"
        raise ConfigError(source, key, reason)
    if info.st_uid not in (0, me):
        reason = f"refused: owned by uid {info.st_uid} (only root or uid {me} may own it)"
        raise ConfigError(source, key, reason)


def load_settings(path: str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Load the TOML file at ``path`` (or ``$SIDECAR_CONFIG``, or the default path).

    A missing file at the *default* location gives the defaults; a missing file that was asked
    for explicitly is an error.
    """
    env = os.environ if env is None else env
    explicit = path or env.get("SIDECAR_CONFIG")
    chosen = explicit or DEFAULT_CONFIG
    try:
        with Path(chosen).open("rb") as handle:
            refuse_unsafe(handle.fileno(), chosen)
            raw = tomllib.load(handle)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(chosen, "", "file not found") from None
        raw = {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(chosen, "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(chosen, "", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(chosen, "", f"cannot read: {exc.strerror}") from None
    return parse_settings(raw, chosen, env, Path(chosen).resolve().parent)


def read_token(settings: Any) -> str:
    """The ACL token of ``[consul]``: ``token``, else the content of ``token_file``.

    (The environment was folded in by the loader, below both.) Never logged.
    """
    token = settings.token.get_secret_value()
    if token:
        return str(token)
    if settings.token_file:
        try:
            with Path(settings.token_file).open("rb") as handle:
                # whoever can change the token file chooses the ACL identity of the gateway
                refuse_unsafe(handle.fileno(), settings.token_file, "consul.token_file")
                return handle.read().decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "unreadable"
            raise ConfigError(settings.token_file, "consul.token_file", reason) from None
    return ""

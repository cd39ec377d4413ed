"""The inputs of the pure pipeline besides the catalog: port map, template, reserved ports
(adapter: reads and compiles the template, reads the port map; used by the daemon and every
CLI command that renders, so none of them needs the daemon).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2

from sidecar.base.errors import ConfigError, SidecarError, TemplateError
from sidecar.base.validate import parse_listen
from sidecar.config.loader import refuse_unsafe
from sidecar.config.schema import Settings
from sidecar.core import pipeline
from sidecar.core.portmap import load_port_map


def load_template(path: Path) -> jinja2.Template:
    """Compile the template at ``path``; errors name the file and the line.

    A template runs code in the sidecar (jinja2 is not sandboxed), so one another account may
    change is refused, by the same rule as the settings file. The file is opened once and the
    open descriptor is checked: a name swapped after the check cannot feed in another file.
    """
    try:
        with path.open(encoding="utf-8") as handle:  # text mode, as read_text: "\r\n" -> "\n"
            refuse_unsafe(handle.fileno(), str(path))
            source = handle.read()
    except ConfigError as exc:
        raise TemplateError(f"{path}: {exc.reason}") from None
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read template: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # HAProxy config, not HTML  # noqa: S701
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None


def build_inputs(settings: Settings) -> pipeline.Inputs:
    try:
        port_map = load_port_map(settings.port_map_path)
    except (OSError, ValueError) as exc:
        raise SidecarError(f"port map: {exc}") from None
    reserved: frozenset[int] = frozenset()
    if settings.status.enabled:  # the metrics endpoint's port is never a DIRAC service's
        reserved = frozenset({parse_listen(settings.status.listen)[1]}) - {0}
    template = load_template(settings.template_path)
    try:
        digest = hashlib.sha256(settings.template_path.read_bytes()).hexdigest()
    except OSError as exc:
        raise SidecarError(f"{settings.template_path}: {exc.strerror}") from None
    return pipeline.Inputs(
        settings, port_map, template, reserved_ports=reserved, template_digest=digest
    )

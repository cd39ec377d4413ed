"""The ``sidecar`` command line: one module per command group, registered explicitly in
``sidecar.cli.app`` (parse options, load settings, call in; no logic here).

- ``common``: ``--config`` before or after the command, lazy settings, exit-code helpers;
- ``gateway``: ``run``, ``render``, ``once``, ``validate``;
- ``ops``: ``check``, ``certs``, ``files``;
- ``cs``: ``cs diff``, ``cs sync``, ``status``;
- ``register``: ``register``.
"""

from sidecar.cli.app import main

__all__ = ["main"]

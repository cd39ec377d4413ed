"""``python -m sidecar``: the same CLI as the ``sidecar`` script, with every command.

(``python -m sidecar.cli`` runs cli.py as ``__main__``, a second copy of the module, so the
commands that ``sidecar.cli_ops`` registers on ``sidecar.cli.main`` are missing there.)
"""

from sidecar.cli import main

main()

"""``python -m sidecar``: the same CLI as the ``sidecar`` script."""

from sidecar.cli import main

main()

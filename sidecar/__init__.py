"""dirac-sidecar: service discovery and TLS-passthrough load balancing for DIRAC services.

The flow, one package per stage: ``consul`` (the catalog) -> ``core`` (desired state, render,
plan; pure) -> ``haproxy`` (apply) and ``dirac_cs`` (the CS URL lists) -> ``health`` (status);
``fleet`` coordinates gateways, ``daemon`` wires it all into ``sidecar run``, ``cli`` is the
command line, ``config`` the settings, ``host`` and ``base`` the small shared pieces.
"""

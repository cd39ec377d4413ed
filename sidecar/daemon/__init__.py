"""The daemon (``sidecar run``): the wiring of the adapters and the loop that drives the core.

``loop`` owns the event queue and the apply cycle; ``ops`` the operations side (notify,
metrics, status rounds); ``filewatch`` reloads settings and certificates on change. Nothing
else in the package imports this one (import contract in ``pyproject.toml``).
"""

"""The pure core: catalog snapshot -> desired state -> rendered config -> plan.

Everything here is a function of its arguments (clock and network facts passed in): the value
types (``model``), validation of catalog and settings values (``validate``), admission of
addresses and public ports (``admission``, ``ports``), grouping of instances (``members``), the
gateway's desired state (``desired``), the blast-radius guard (``guard``), rendering the HAProxy
configuration (``render``), the plan against the applied state (``plan``), drift repair
(``drift``), and the one-direction ``pipeline`` that chains them. Nothing in this package does
I/O; the import contract in ``pyproject.toml`` (import-linter) keeps it that way.
"""

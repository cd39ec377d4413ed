"""The settings: schema (every key, type, bound and default), loading, and their error paths.

``schema`` and its sections (``base``, ``types``, ``durations``, ``cs``, ``ops``) are pure;
``loader`` reads the TOML file and the Consul environment at the edge.
"""

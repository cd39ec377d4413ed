"""Consul: the HTTP client, blocking-query watches and the catalog watcher (adapters).

``client`` is the only module that talks the catalog API; ``watch``/``watcher`` turn blocking
queries into catalog snapshots; ``parse`` turns Consul JSON into core values (pure); ``http``
holds the plain calls of the fleet side (sessions, KV, agent registration).
"""

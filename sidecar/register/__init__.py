"""``sidecar register``: the local DIRAC services of a host or container, into Consul.

``localcfg`` reads the local DIRAC configuration into services (pure); ``plan`` turns them into
registrations (pure); ``agent`` puts them into the local Consul agent and feeds their TTL
checks with the TLS or DISET probe of ``probe``.
"""

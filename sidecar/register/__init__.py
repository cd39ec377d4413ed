"""``sidecar register``: the local DIRAC services of a host or container, into Consul.

``plan`` turns the local DIRAC configuration into registrations (pure); ``agent`` puts them into
the local Consul agent and keeps them there.
"""

"""Development and test tooling: throwaway PKI, sample DIRAC-like TLS backends, a TLS client
that behaves like a DIRAC client (SNI + hostname check, proxy as client certificate) and a
disposable Consul dev agent. Used by the demo and by the integration tests; never by the
daemon itself.
"""

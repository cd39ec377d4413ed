"""Health reporting: the status record, Prometheus metrics, ``sidecar check``, certificates.

``status`` writes the status record; ``metrics`` serves ``/metrics`` ``/healthz`` ``/readyz``;
``check`` judges health from the facts ``checkfacts`` gathers; ``certs`` judges backend
certificates (pure) that ``certprobe`` reads; ``notify`` is the systemd notify protocol.
"""

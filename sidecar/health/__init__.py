"""Health reporting: the status record, Prometheus metrics, ``sidecar check``, certificates.

``status`` writes the status record and ``statusview`` shapes it for people; ``metrics`` serves
``/metrics`` ``/healthz`` ``/readyz`` (``opsmetrics`` holds the latency histograms); ``check``
judges health from the facts ``checkfacts`` gathers; ``certprobe`` reads backend certificate
chains and ``certmonitor`` runs it in the daemon (the judgement is ``core.certs``); ``notify``
is the systemd notify protocol.
"""

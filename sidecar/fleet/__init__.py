"""The gateway fleet: the one-writer lock, this gateway's registration, the view of the others.

``lock`` is the Consul session + KV lock that makes one gateway the CS writer (``session``:
its API calls; ``writer_check``: the fast TTL check its session is bound to); ``registry``
registers this gateway; ``view`` reads the live gateways (the names for the CS, ``status
--fleet``); ``member`` drives them from the daemon's status round; ``cs_once`` is one CS sync
from the command line, under the lock.
"""

"""The gateway fleet: the one-writer lock, the gateway registry and this gateway's part in it.

``lock`` is the Consul session + KV lock that makes one gateway the CS writer; ``registry``
registers this gateway and reads the others; ``member`` drives both from the daemon's heartbeat.
"""

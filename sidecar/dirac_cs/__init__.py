"""The DIRAC Configuration Service: URL lists rendered from the desired state and written.

``render`` computes the URL lists and the plan against the CS (pure); ``cstext`` parses and
edits a CS file's text in place (pure); ``file`` and ``csapi`` are the two backends (a local
CS file, DIRAC's own CSAPI), ``backend`` their common shape; ``writer`` applies a plan, by the
lock holder only (the lock is ``fleet.lock``).
"""

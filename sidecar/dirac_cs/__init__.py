"""The DIRAC Configuration Service: URL lists rendered from the desired state and written.

``render`` computes the URL lists and the plan against the CS (pure); ``cstext`` parses and
edits a CS file's text in place (pure); ``file`` and ``csapi`` are the two backends (a local CS
file, DIRAC's own CSAPI; their common shape in ``backend``); ``writer`` applies a plan by the lock
holder only; ``once`` is one sync from the command line; ``cfgtree`` flattens a diraccfg tree.
"""

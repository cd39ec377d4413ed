"""HAProxy: the managed master-worker process, its runtime API, and the applier (adapters).

``process`` validates, starts and reloads HAProxy; ``sockets`` speaks the admin and master CLIs;
``answers`` parses their replies (pure); ``applier`` carries out a core plan; ``preflight`` is
``sidecar validate``'s work (settings, template, port map, ``haproxy -c``).
"""

"""The host: files, processes, privileges, network facts and logging (small adapters).

``files`` writes atomically and owns the private runtime directory; ``privileges`` drops
capabilities; ``procenv`` builds the environment of child processes; ``apart`` validates the
daemon's settings in a child (so that the daemon never loads pydantic); ``netfacts`` reads the
host's addresses and resolves names; ``deadline_io`` reads sockets with a deadline; ``logs``
sets up inert, rate-limited logging.
"""

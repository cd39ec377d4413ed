"""Adapters that change the world: files, HAProxy, the DIRAC CS."""

"""The smallest DISET handler: ``hello(name)`` plus what every service answers (``ping``,
``whoami``, ``echo``). Loaded by DIRAC through ``HandlerPath = gwtest/GwEchoHandler.py``."""

from DIRAC import S_OK
from DIRAC.Core.DISET.RequestHandler import RequestHandler


class GwEchoHandler(RequestHandler):
    types_hello = [str]

    def export_hello(self, name):
        return S_OK(f"hello {name}")

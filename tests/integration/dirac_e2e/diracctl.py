"""Real DIRAC for the end-to-end test; runs with the DIRAC venv's interpreter, never imported
by the project. Subcommands:

- ``service System/Service``: the stock ``dirac-service`` main, but listening on 127.0.0.1
  only (DIRAC binds every interface; the test keeps its traffic on loopback). The cfg comes
  from ``$DIRACSYSCONFIG``, the handler module from ``$PYTHONPATH``.
- ``proxy CERT KEY OUT [GROUP]``: an RFC 3820 proxy made by DIRAC's ``X509Chain``.
- ``call System/Service [REPEAT]``: resolve the service's URLs from ``$DIRACSYSCONFIG`` (the CS
  file) like any DIRAC client, call ``ping`` REPEAT times and ``whoami`` once, print one line
  ``RESULT <json>`` with the answers and the latency of every ping in milliseconds.
"""

import json
import socket
import sys
import time


def service(name):
    from DIRAC.Core.DISET.private.Transports import M2SSLTransport

    original = M2SSLTransport.SSLTransport.initAsServer

    def loopback(self):
        # DIRAC's listening socket is AF_INET6 when the host has IPv6 (dual stack), else
        # AF_INET: bind the IPv4-mapped or the plain loopback address accordingly.
        if self.stServerAddress[0] == "":
            host = "::ffff:127.0.0.1" if socket.has_ipv6 else "127.0.0.1"
            self.stServerAddress = (host, self.stServerAddress[1])
        return original(self)

    M2SSLTransport.SSLTransport.initAsServer = loopback
    from DIRAC.Core.scripts.dirac_service import main

    sys.argv = ["dirac-service", name]
    main()


def proxy(cert, key, out, group="dirac_user"):
    from DIRAC.Core.Security.X509Chain import X509Chain

    chain = X509Chain()
    for result in (chain.loadChainFromFile(cert), chain.loadKeyFromFile(key)):
        if not result["OK"]:
            sys.exit(f"cannot load {cert}/{key}: {result['Message']}")
    result = chain.generateProxyToFile(out, 3600, diracGroup=group)
    if not result["OK"]:
        sys.exit(f"generateProxyToFile: {result['Message']}")
    print(f"RESULT {json.dumps({'proxy': out})}")


def call(path, repeat="1"):
    from DIRAC.Core.Base.Script import Script

    sys.argv = sys.argv[:1]
    Script.parseCommandLine(ignoreErrors=True)
    from DIRAC.ConfigurationSystem.Client.PathFinder import getServiceURLs
    from DIRAC.Core.Base.Client import Client

    client = Client(url=path)
    out = {"urls": sorted(getServiceURLs(path)), "ping_ms": []}
    for _ in range(int(repeat)):
        start = time.perf_counter()
        out["ping"] = client.ping()
        out["ping_ms"].append((time.perf_counter() - start) * 1000)
        if not out["ping"]["OK"]:
            break
    out["whoami"] = client.whoami()
    for answer in (out["ping"], out["whoami"]):
        answer.pop("rpcStub", None)
        answer.pop("CallStack", None)
    print("RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"service": service, "proxy": proxy, "call": call}[command](*args)

"""Mail domains that are broken in the ways operators meet, on the federation test bed
(tests/support/fednet.py), for `relayctl why` and `relayctl queue`:

    nullmx.probe.test     a null MX (RFC 7505): accepts no mail
    nowhere.probe.test    does not exist (NXDOMAIN)
    closed.probe.test     port 25 closed, port 443 open (a web server without /mxdeliv)
    expired.probe.test    STARTTLS and HTTPS with an expired certificate (right name)
    wrongname.probe.test  MX host with the classic server's address, whose certificate
                          names only mail.classic.test

All in one zone (a new zone restarts NSD once); the two servers are the tools image
running tests/support/probe_peer.py. Certificates come from the test CA the relays
trust, so only the one fault shows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fednet import CLASSIC_HOST, Federation, openssl
from relaytest import docker, wait_for

ZONE = "probe.test"
NULL_MX, NOWHERE, CLOSED, EXPIRED, WRONG_NAME = (
    f"{name}.{ZONE}" for name in ("nullmx", "nowhere", "closed", "expired", "wrongname"))
CLOSED_HOST, EXPIRED_HOST = 41, 42


def certificate(fed: Federation, directory: Path, name: str, days: str) -> None:
    """A certificate for ``name`` from the test CA; ``days`` -1 makes it expired."""
    ca = fed.net.dir / "pebble"
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(directory / "key.pem"), "-out", str(directory / "csr.pem"))
    (directory / "ext.cnf").write_text(f"subjectAltName=DNS:{name}\n")
    openssl("x509", "-req", "-in", str(directory / "csr.pem"), "-CA", str(ca / "ca.pem"),
            "-CAkey", str(ca / "ca.key"), "-CAcreateserial", "-days", days,
            "-extfile", str(directory / "ext.cnf"), "-out", str(directory / "cert.pem"))
    for f in directory.iterdir():
        f.chmod(0o644)


class ProbePeers:
    __test__ = False

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.dir = fed.net.dir / "probepeers"

    def start(self) -> "ProbePeers":
        net = self.fed.net
        self.dir.mkdir(exist_ok=True)
        shutil.copy(Path(__file__).with_name("probe_peer.py"), self.dir / "probe_peer.py")
        (self.dir / "probe_peer.py").chmod(0o644)
        names = []
        for host, domain, days, flags in ((CLOSED_HOST, CLOSED, "2", ("--https",)),
                                          (EXPIRED_HOST, EXPIRED, "-1", ("--https", "--smtp"))):
            certs = self.dir / domain
            certs.mkdir(exist_ok=True)
            certificate(self.fed, certs, f"mx.{domain}", days)
            names.append(net.run(domain.split(".")[0] + "-peer", host, "-v", f"{self.dir}:/peer:ro",
                                 command=("python3", "/peer/probe_peer.py", "--cert",
                                          f"/peer/{domain}/cert.pem", "--key",
                                          f"/peer/{domain}/key.pem", "--name", f"mx.{domain}",
                                          *flags)))
        net.set_zone(ZONE, [
            f"{NULL_MX}. IN MX 0 .",
            f"{CLOSED}. IN MX 10 mx.{CLOSED}.", f"mx.{CLOSED}. IN A {net.ip(CLOSED_HOST)}",
            f"{EXPIRED}. IN MX 10 mx.{EXPIRED}.", f"mx.{EXPIRED}. IN A {net.ip(EXPIRED_HOST)}",
            f"{WRONG_NAME}. IN MX 10 mx.{WRONG_NAME}.",
            f"mx.{WRONG_NAME}. IN A {net.ip(CLASSIC_HOST)}"])
        for name in names:
            wait_for(lambda n=name: "probe peer ready" in docker("logs", n).stdout, 30, 0.2,
                     f"{name} listening")
        return self

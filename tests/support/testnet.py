"""A small internet of our own for the tests: a docker network with an
authoritative DNS server (NSD) for test zones and an ACME CA (pebble).

Relays join it with a fixed address and use its DNS server, so they resolve
each other, the CA and themselves exactly as on the internet, while nothing
leaves this machine. Everything is removed by ``close()`` (tests call it in a
fixture's ``finally``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from relaytest import ROOT, Relay, docker, wait_for

TOOLS_DIR = ROOT / "tests" / "support" / "testnet-image"
# Tagged by the Dockerfile's content: test sessions of different branches on one machine
# must not swap each other's tools image between its build and their `docker run`.
TOOLS_IMAGE = "chatmail-testnet:" + hashlib.sha256((TOOLS_DIR / "Dockerfile").read_bytes()).hexdigest()[:12]
DNS_HOST, PEBBLE_HOST = 2, 3
CA_IN_CONTAINER = "/etc/chatmail-test/extra-ca.pem"


def build_tools_image() -> None:
    docker("build", "-q", "-t", TOOLS_IMAGE, str(TOOLS_DIR), timeout=900)


class TestNet:
    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.name = f"chatmail-net-{self.tag}"
        self.dir = Path(tempfile.mkdtemp(prefix="chatmail-net-"))
        self.dir.chmod(0o755)
        self.containers: list[str] = []
        self.relays: list[Relay] = []
        self.zones: dict[str, list[str]] = {}
        self.unserved_zones: list[str] = []
        self.serial = 1
        self.prefix = self._create_network()

    # --- the network ------------------------------------------------------------------

    def _create_network(self) -> str:
        last = ""
        for _ in range(8):
            prefix = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
            done = docker("network", "create", "--subnet", f"{prefix}.0/24", self.name, check=False)
            if done.returncode == 0:
                return prefix
            last = done.stderr
        raise RuntimeError(f"cannot create a test network: {last}")

    def ip(self, host: int) -> str:
        return f"{self.prefix}.{host}"

    def run(self, name: str, host: int, *args: str, command: tuple[str, ...] = (),
            image: str = TOOLS_IMAGE) -> str:
        """A container on this network with a fixed address, resolving through our DNS."""
        full = f"{self.name}-{name}"
        docker("run", "-d", "--name", full, "--network", self.name, "--ip", self.ip(host),
               "--dns", self.ip(DNS_HOST), *args, image, *command)
        self.containers.append(full)
        return full

    def close(self) -> None:
        for relay in self.relays:
            relay.remove()
        for name in self.containers:
            docker("rm", "-f", "-v", name, check=False)
        docker("network", "rm", self.name, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- DNS --------------------------------------------------------------------------

    def start_dns(self) -> None:
        (self.dir / "zones").mkdir()
        self._write_zones()
        self.run("dns", DNS_HOST, "-v", f"{self.dir / 'zones'}:/zones:ro",
                 command=("nsd", "-d", "-c", "/zones/nsd.conf"))
        wait_for(lambda: self.query("ns.test", "A") == [self.ip(DNS_HOST)], 30, 0.3, "NSD answers")

    def set_zone(self, domain: str, records: list[str]) -> None:
        """Replace a zone's records (zone-file lines with absolute names)."""
        new_zone = domain not in self.zones
        self.zones[domain] = list(records)
        if (self.dir / "zones").exists():
            serial = self._write_zones()
            # NSD re-reads zone files on SIGHUP, but its list of zones only at start.
            if new_zone:
                docker("restart", "-t", "2", f"{self.name}-dns")
            else:
                docker("kill", "-s", "HUP", f"{self.name}-dns")
            wait_for(lambda: self.query(domain, "SOA", field=2) == [str(serial)], 30, 0.3,
                     f"NSD serves the new {domain} zone")

    def add_unserved_zone(self, domain: str) -> None:
        """A zone NSD is a secondary for but holds no data of (its primary, an address where
        nothing listens, never answers): NSD answers SERVFAIL for every name in it, as an
        authoritative server that lost its zone does, and resolvers pass that on."""
        self.unserved_zones.append(domain)
        if (self.dir / "zones").exists():
            self._write_zones()
            docker("restart", "-t", "2", f"{self.name}-dns")
            wait_for(lambda: self.query("ns.test", "A") == [self.ip(DNS_HOST)], 30, 0.3,
                     "NSD answers again")

    def _write_zones(self) -> int:
        self.serial += 1
        zones = dict(self.zones)
        zones.setdefault("test", [f"ns.test. 60 IN A {self.ip(DNS_HOST)}"])
        if not any(r.startswith("ns.test.") for r in zones["test"]):
            zones["test"] = [f"ns.test. 60 IN A {self.ip(DNS_HOST)}", *zones["test"]]
        conf = ["server:", "  ip-address: 0.0.0.0", "  do-ip6: no", '  username: ""',
                '  zonesdir: "/zones"', '  database: ""', '  pidfile: ""', "  verbosity: 1",
                "remote-control:", "  control-enable: no"]
        for domain, records in zones.items():
            conf += ["zone:", f'  name: "{domain}"', f'  zonefile: "{domain}.zone"']
            lines = ["$TTL 60",
                     f"{domain}. IN SOA ns.test. hostmaster.test. {self.serial} 60 60 600 60",
                     f"{domain}. IN NS ns.test.", *records]
            (self.dir / "zones" / f"{domain}.zone").write_text("\n".join(lines) + "\n")
        for domain in self.unserved_zones:
            conf += ["zone:", f'  name: "{domain}"', f"  request-xfr: {self.ip(254)} NOKEY",
                     f"  allow-notify: {self.ip(254)} NOKEY"]
        (self.dir / "zones" / "nsd.conf").write_text("\n".join(conf) + "\n")
        return self.serial

    def query(self, name: str, rtype: str, field: int | None = None) -> list[str]:
        import dns.resolver  # dnspython, from the test venv

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.ip(DNS_HOST)]
        resolver.lifetime = 2
        try:
            answer = resolver.resolve(name, rtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        texts = [r.to_text() for r in answer]
        return [t.split()[field] for t in texts] if field is not None else texts

    # --- ACME -------------------------------------------------------------------------

    def start_pebble(self) -> None:
        """Pebble on PEBBLE_HOST, validating HTTP-01 on port 80 through our DNS."""
        ca_dir = self.dir / "pebble"
        ca_dir.mkdir()
        ip = self.ip(PEBBLE_HOST)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=pebble test CA", "-keyout", str(ca_dir / "ca.key"),
             "-out", str(ca_dir / "ca.pem")], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pebble",
             "-keyout", str(ca_dir / "key.pem"), "-out", str(ca_dir / "csr.pem")],
            check=True, capture_output=True)
        (ca_dir / "ext.cnf").write_text(f"subjectAltName=DNS:pebble.test,IP:{ip}\n")
        subprocess.run(
            ["openssl", "x509", "-req", "-in", str(ca_dir / "csr.pem"), "-CA", str(ca_dir / "ca.pem"),
             "-CAkey", str(ca_dir / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(ca_dir / "ext.cnf"), "-out", str(ca_dir / "cert.pem")],
            check=True, capture_output=True)
        for f in ca_dir.iterdir():
            f.chmod(0o644)
        (ca_dir / "pebble.json").write_text(json.dumps({"pebble": {
            "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
            "certificate": "/pebble/cert.pem", "privateKey": "/pebble/key.pem",
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}))
        self.run("pebble", PEBBLE_HOST, "-v", f"{ca_dir}:/pebble:ro", "-e", "PEBBLE_VA_NOSLEEP=1",
                 command=("pebble", "-config", "/pebble/pebble.json",
                          "-dnsserver", f"{self.ip(DNS_HOST)}:53"))
        self.wait_pebble()

    @property
    def pebble_name(self) -> str:
        return f"{self.name}-pebble"

    @property
    def directory_url(self) -> str:
        return f"https://{self.ip(PEBBLE_HOST)}:14000/dir"

    @property
    def extra_ca_file(self) -> Path:
        """The CA of pebble's own HTTPS endpoint (relays get it as EXTRA_CA_FILE)."""
        return self.dir / "pebble" / "ca.pem"

    def _pebble_get(self, path: str, port: int = 15000) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.extra_ca_file))
        url = f"https://{self.ip(PEBBLE_HOST)}:{port}{path}"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
            return resp.read()

    def wait_pebble(self) -> None:
        wait_for(lambda: b"newOrder" in self._pebble_get("/dir", 14000), 60, 0.3, "pebble answers")

    def pebble_roots(self) -> str:
        """PEM of the root that signs what pebble issues now (new at every pebble start)."""
        return self._pebble_get("/roots/0").decode()

    # --- relays -----------------------------------------------------------------------

    def relay(self, domain: str, host: int, env: dict[str, str], zone_extra: list[str] = (),
              **kw) -> Relay:
        """A relay container on this network, with its A records and the pebble CA trusted."""
        ip = self.ip(host)
        self.set_zone(domain, [f"{domain}. IN A {ip}", f"mta-sts.{domain}. IN CNAME {domain}.",
                               f"www.{domain}. IN CNAME {domain}.", *zone_extra])
        full_env = {"MAIL_DOMAIN": domain, "PUBLIC_ADDRESSES": ip}
        args = ["--network", self.name, "--ip", ip, "--dns", self.ip(DNS_HOST)]
        if self.extra_ca_file.exists():  # pebble runs: trust its HTTPS endpoint
            full_env.update(EXTRA_CA_FILE=CA_IN_CONTAINER, ACME_DIRECTORY_URL=self.directory_url)
            args += ["-v", f"{self.extra_ca_file}:{CA_IN_CONTAINER}:ro"]
        r = Relay({**full_env, **env}, extra_args=tuple(args), **kw)
        self.relays.append(r)
        return r

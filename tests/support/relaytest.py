"""Helpers the tests share: run the real image, reach its ports, poll its state."""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import json
import os
import secrets
import shlex
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
IMAGE = os.environ.get("IMAGE", "chatmail-relay:latest")
PORTS = (25, 80, 443, 465, 587, 993)
ROOT = Path(__file__).resolve().parents[2]

# What compose.yaml grants the container (tests/image/test_compose.py checks that
# the two agree); every test container runs with the same restrictions.
CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID",
                "SYS_CHROOT")
TMPFS = ("/run", "/tmp")
HARDENING = ("--cap-drop", "ALL", *(a for cap in CAPABILITIES for a in ("--cap-add", cap)),
             "--security-opt", "no-new-privileges", "--read-only",
             *(a for path in TMPFS for a in ("--tmpfs", path)))


def docker(*args: str, check: bool = True, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=check,
                          timeout=timeout, input=input)


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the condition may raise while not yet true
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last error: {last_exc})")


def insecure_tls() -> ssl.SSLContext:
    """A client context that verifies nothing (the relays under test have self-signed or test-CA
    certificates). It loads no CA bundle: ``create_default_context`` spends about 30 ms on that
    at every call, which the bench measured as if it were the relay's time."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Relay:
    """One container of the real image, ports published on random 127.0.0.1 ports."""

    def __init__(self, env: dict[str, str], name: str | None = None, volume: str | None = None,
                 image: str = IMAGE, extra_args: tuple[str, ...] = (), hardened: bool = True,
                 data_tmpfs_size: str | None = None) -> None:
        """``data_tmpfs_size`` (e.g. "64m") puts /data on a tmpfs of that size instead of
        a volume (a small disk that can be filled)."""
        suffix = secrets.token_hex(3)
        self.name = name or f"relaytest-{suffix}"
        self.volume = volume or f"{self.name}-data"
        # The container sees the host's load average; a busy test machine must not
        # stop account creation in tests that are not about that limit.
        self.env = {"CREATE_MAX_LOAD": "1000", **env}
        self.image = image
        self.extra_args = (HARDENING if hardened else ()) + tuple(extra_args)
        self.data_tmpfs_size = data_tmpfs_size
        self._ports: dict[int, int] = {}

    @property
    def domain(self) -> str:
        return self.env["MAIL_DOMAIN"]

    def start(self) -> "Relay":
        args = ["run", "-d", "--name", self.name]
        if self.data_tmpfs_size:
            args += ["--mount", f"type=tmpfs,destination=/data,tmpfs-size={self.data_tmpfs_size}"]
        else:
            args += ["-v", f"{self.volume}:/data"]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        for port in PORTS:
            args += ["-p", f"127.0.0.1::{port}"]
        docker(*args, *self.extra_args, self.image)
        self._ports = {}
        return self

    def port(self, container_port: int) -> int:
        if container_port not in self._ports:
            out = docker("port", self.name, f"{container_port}/tcp").stdout
            self._ports[container_port] = int(out.split()[0].rsplit(":", 1)[1])
        return self._ports[container_port]

    def state(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]["State"]

    def health(self) -> str:
        state = self.state()
        if not state["Running"]:
            raise RuntimeError(f"container exited with {state['ExitCode']}:\n{self.logs()[-3000:]}")
        return state.get("Health", {}).get("Status", "none")

    def wait_healthy(self, timeout: float = 120) -> "Relay":
        wait_for(lambda: self.health() == "healthy", timeout, 0.5, f"{self.name} healthy")
        return self

    def exec(self, *cmd: str, check: bool = True, user: str | None = None) -> subprocess.CompletedProcess:
        args = ["exec"] + (["-u", user] if user else []) + [self.name, *cmd]
        return docker(*args, check=check)

    def logs(self) -> str:
        out = docker("logs", self.name, check=False)
        return out.stdout + out.stderr

    def restart(self) -> "Relay":
        docker("restart", "-t", "10", self.name, timeout=60)
        self._ports = {}
        return self

    def stop(self, grace: int = 30) -> None:
        """docker stop with compose.yaml's stop_grace_period: SIGKILL (exit 137) to
        whatever still runs after ``grace`` seconds."""
        docker("stop", "-t", str(grace), self.name, timeout=grace + 60)

    def kill(self) -> None:
        """SIGKILL to every process of the container at once, like a power cut of the
        container (the host's page cache survives, as on a crash of the relay only)."""
        docker("kill", self.name, timeout=60)

    def start_again(self) -> "Relay":
        """Start the stopped container again (same volume; published ports may change)."""
        docker("start", self.name, timeout=60)
        self._ports = {}
        return self

    def remove(self, keep_volume: bool = False) -> None:
        docker("rm", "-f", "-v", self.name, check=False)
        if not keep_volume:
            docker("volume", "rm", "-f", self.volume, check=False)

    # --- client-side conveniences ------------------------------------------------

    def new_account(self) -> dict:
        """POST /new, as Delta Chat does when it opens the DCACCOUNT link."""
        req = urllib.request.Request(f"https://127.0.0.1:{self.port(443)}/new", method="POST",
                                     headers={"Host": self.domain})
        with urllib.request.urlopen(req, context=insecure_tls(), timeout=10) as resp:
            return json.loads(resp.read())

    def dclogin_for_here(self, account: dict) -> str:
        """The /new answer's dclogin URL, pointed at the ports this test published."""
        return (account["dclogin"]
                + f"&ih=127.0.0.1&ip={self.port(993)}&is=ssl"
                + f"&sh=127.0.0.1&sp={self.port(465)}&ss=ssl")

    def mailbox_files(self, address: str) -> list[str]:
        out = self.exec("sh", "-c", f"ls /data/mail/{address}/Maildir/new "
                                    f"/data/mail/{address}/Maildir/cur 2>/dev/null", check=False)
        return [line for line in out.stdout.split() if line and not line.endswith(":")]

    def mailbox_grep(self, address: str, needle: str) -> list[str]:
        """Paths of the messages in ``address``'s mailbox that contain ``needle`` (a fixed
        string), read through zgrep: Dovecot stores mail gzip-compressed (zlib_save)."""
        home = f"/data/mail/{shlex.quote(address)}/Maildir"
        out = self.exec("sh", "-c", f"zgrep -lF -- {shlex.quote(needle)} {home}/new/* {home}/cur/* "
                                    "2>/dev/null; true", check=False)
        return out.stdout.split()


def container_pids(name: str) -> list[int]:
    """Host process ids of the container's processes (from its cgroup)."""
    cid = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    for path in (f"/sys/fs/cgroup/memory/docker/{cid}/cgroup.procs",
                 f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cgroup.procs",
                 f"/sys/fs/cgroup/docker/{cid}/cgroup.procs"):
        try:
            return [int(line) for line in open(path)]
        except OSError:
            continue
    return []


def inotify_usage(name: str) -> dict[str, int] | None:
    """inotify instances and watches held by the container's processes, read from the host's
    /proc (inside the container that needs CAP_SYS_PTRACE, which the relay does not have);
    None when this process may not read them."""
    instances = watches = 0
    pids = container_pids(name)
    if not pids:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue  # the process ended meanwhile (an imap process that hibernated, say)
        except OSError:
            return None
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    watches += sum(1 for line in info if line.startswith("inotify wd:"))
                instances += 1
            except OSError:
                continue  # the process or fd went away meanwhile
    return {"instances": instances, "watches": watches}


def served_der(relay, port: int, alpn: str | None = None, starttls: bool = False) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols([alpn])
    if starttls:
        with smtplib.SMTP("127.0.0.1", relay.port(port), timeout=10) as smtp:
            smtp.starttls(context=ctx)
            return smtp.sock.getpeercert(binary_form=True)
    with socket.create_connection(("127.0.0.1", relay.port(port)), 10) as raw:
        with ctx.wrap_socket(raw) as sock:
            return sock.getpeercert(binary_form=True)


def fingerprints(relay) -> dict[str, str]:
    """sha256 of the certificate each TLS endpoint serves."""
    return {
        "25": hashlib.sha256(served_der(relay, 25, starttls=True)).hexdigest(),
        "465": hashlib.sha256(served_der(relay, 465)).hexdigest(),
        "587": hashlib.sha256(served_der(relay, 587, starttls=True)).hexdigest(),
        "993": hashlib.sha256(served_der(relay, 993)).hexdigest(),
        "443": hashlib.sha256(served_der(relay, 443)).hexdigest(),
        "443-imap": hashlib.sha256(served_der(relay, 443, "imap")).hexdigest(),
        "443-smtp": hashlib.sha256(served_der(relay, 443, "smtp")).hexdigest(),
    }


def securejoin_request(sender: str, recipient: str, marker: str = "") -> bytes:
    """The one kind of unencrypted message the filter lets through both ways."""
    return (f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: Message from {sender}\r\n"
            f"Message-ID: <{secrets.token_hex(8)}{marker}@test>\r\n"
            "Secure-Join: vc-request\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            "--b\r\nContent-Type: text/plain\r\n\r\nSecure-Join: vc-request\r\n--b--\r\n").encode()


def submit(relay: Relay, account: dict, recipients: list[str], data: bytes, port: int = 465) -> dict:
    """Log in and submit; raises smtplib's exception on a refusal."""
    import smtplib
    if port == 465:
        smtp = smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(), timeout=30)
    else:
        smtp = smtplib.SMTP("127.0.0.1", relay.port(port), timeout=30)
        smtp.starttls(context=insecure_tls())
    with smtp:
        smtp.login(account["email"], account["password"])
        return smtp.sendmail(account["email"], recipients, data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- IMAP METADATA (RFC 5464), which imaplib does not know ---------------------------

def imap_accepts(relay: Relay, user: str, password: str) -> bool:
    """Whether an IMAP LOGIN with ``user`` and ``password`` succeeds (implicit TLS, 993)."""
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=20)
    try:
        im.login(user, password)
        return True
    except imaplib.IMAP4.error:
        return False
    finally:
        try:
            im.logout()
        except Exception:
            pass


def smtp_accepts(relay: Relay, user: str, password: str) -> bool:
    """Whether SMTP AUTH with ``user`` and ``password`` succeeds (implicit TLS, 465)."""
    with smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(), timeout=20) as s:
        try:
            s.login(user, password)
            return True
        except smtplib.SMTPAuthenticationError:
            return False


def imap_login(relay: Relay, account: dict):
    import imaplib
    for command in ("GETMETADATA", "SETMETADATA"):
        imaplib.Commands.setdefault(command, ("AUTH", "SELECTED"))
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    im.login(account["email"], account["password"])
    return im


def get_metadata(im, mailbox: str, *entries: str) -> dict[str, str | None]:
    """GETMETADATA: entry -> value (None for NIL)."""
    import re
    typ, data = im._simple_command("GETMETADATA", mailbox, "(" + " ".join(entries) + ")")
    assert typ == "OK", data
    parts = im.untagged_responses.pop("METADATA", [])
    # imaplib hands literals over as (text before, literal) tuples; NIL values stay in text.
    values: dict[str, str | None] = {}
    for part in parts:
        text = (part[0] if isinstance(part, tuple) else part).decode()
        for entry, quoted, nil in re.findall(r'(/[^\s()]+) (?:"([^"]*)"|(NIL))', text):
            values[entry] = None if nil else quoted
        if isinstance(part, tuple):
            values[re.findall(r"(/\S+) \{\d+\}$", text)[-1]] = part[1].decode()
    return values


def set_device_token(im, token: str, mailbox: str = "INBOX") -> tuple[str, list]:
    """SETMETADATA as Delta Chat sends it: the token as a non-synchronizing literal."""
    tag = im._new_tag().decode()
    im.send(f'{tag} SETMETADATA "{mailbox}" (/private/devicetoken {{{len(token)}+}}\r\n'
            f"{token})\r\n".encode())
    while True:
        line = im.readline().decode()
        if line.startswith(tag):
            status, _, text = line[len(tag) + 1:].partition(" ")
            return status, [text.strip()]


def rpc_server_path() -> str:
    """deltachat-rpc-server from the test venv (make venv), else from PATH."""
    candidate = Path(sys.executable).parent / "deltachat-rpc-server"
    return str(candidate) if candidate.exists() else (shutil.which("deltachat-rpc-server") or "")


@contextlib.contextmanager
def delta_chat(accounts_dir: Path):
    """A real Delta Chat core (deltachat-rpc-server) with its accounts in ``accounts_dir``,
    which must not exist yet."""
    from deltachat_rpc_client import DeltaChat, Rpc
    with Rpc(accounts_dir=str(accounts_dir), rpc_server_path=rpc_server_path()) as rpc:
        yield DeltaChat(rpc)


# --- the relay's log: what a healthy relay never writes --------------------------------

import re as _re  # noqa: E402

_DAEMON_ERRORS = _re.compile(
    r"^.*(?:: (?:Error|Fatal|Panic): "                       # Dovecot (any service)
    r"|postfix/[\w/.-]+\[\d+\]: (?:fatal|panic): ).*$", _re.MULTILINE)  # Postfix


def daemon_errors(log_text: str) -> list[str]:
    """Dovecot ``Error:``/``Fatal:``/``Panic:`` lines and Postfix ``fatal:``/``panic:``
    lines of a relay's log (issue 17 §4: none in a healthy relay's log)."""
    return [m.group(0).strip() for m in _DAEMON_ERRORS.finditer(log_text)]


def logs_since(relay: Relay, since: float) -> str:
    """The container's log lines from ``since`` (a Unix time) on."""
    out = docker("logs", "--since", f"{since:.3f}", relay.name, check=False)
    return out.stdout + out.stderr


# --- a signed copy of outgoing mail ---------------------------------------------------

@contextlib.contextmanager
def unreachable_recipient(container: str) -> Iterator[str]:
    """A recipient at an address where nothing answers, and from which no packet leaves
    this machine: an unused address of an internal docker network made for the test and
    connected to ``container`` (relay-mxsend's connections fail there, so the message
    stays in the queue for :func:`queued_message`). The network is removed afterwards."""
    name = f"chatmail-void-{secrets.token_hex(3)}"
    for _ in range(8):
        prefix = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
        if docker("network", "create", "--internal", "--subnet", f"{prefix}.0/24", name,
                  check=False).returncode == 0:
            break
    else:
        raise RuntimeError("cannot create an internal docker network for an unreachable address")
    docker("network", "connect", name, container)
    try:
        yield f"probe@[{prefix}.254]"
    finally:
        docker("network", "disconnect", "-f", name, container, check=False)
        docker("network", "rm", name, check=False)


def queued_message(container: str, recipient: str, timeout: float = 30) -> bytes:
    """The queued message for ``recipient`` as Postfix holds it (``postcat``), then removed
    from the queue. Mail our users send is DKIM-signed before it is queued; local
    delivery strips the signature (issue 17 §4), so this is where a test sees it."""
    def queue_id():
        out = docker("exec", container, "postqueue", "-j").stdout
        for line in out.splitlines():
            entry = json.loads(line)
            if any(r["address"] == recipient for r in entry["recipients"]):
                return entry["queue_id"]
        return None

    qid = wait_for(queue_id, timeout, what=f"a queued message for {recipient}")
    raw = subprocess.run([DOCKER, "exec", container, "postcat", "-bh", "-q", qid],
                         capture_output=True, check=True, timeout=60).stdout
    docker("exec", container, "postsuper", "-d", qid, check=False)
    return raw

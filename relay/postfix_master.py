"""Postfix's master under supervisord, stopped without cutting a delivery in half.

Postfix stops by passing SIGTERM to every process it runs, which ends a delivery
at any point: when Dovecot has stored a message but its 250 has not been recorded
in the queue yet, Postfix delivers the message a second time after the restart.

So this runs ``master`` in the foreground and, when supervisord asks it to stop,
drains Postfix instead (what ``postfix drain`` does): only the master is ended
(SIGKILL, which it cannot pass on); the other Postfix processes take no new
connections from it, finish the request they are serving (a delivery, a queue
file being written) and exit. The SMTP servers (smtpd) get SIGTERM at once: a
client may keep its session open for minutes, and whatever it has not had a 250
for it sends again (a repeat of a message already queued is dropped at delivery,
config/etc/dovecot/sieve/deliver-once.sieve). Whatever is still running after
DRAIN_SECONDS gets SIGTERM too; nothing accepted is lost.

Before the master starts, relay.deliveronce records the deliveries a crash cut
off (so Dovecot drops their repeats), and Dovecot's LMTP socket and relay.auth's mailbox map must
answer (for at most READY_SECONDS): mail left in the queue by a crash is delivered
at once, and a delivery attempted before Dovecot listens would be deferred for
minutes. Once it runs, the deferred queue is flushed: a crash can end Dovecot a
moment before Postfix, whose last deliveries are then deferred, not done.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

from . import paths

MASTER = "/usr/lib/postfix/sbin/master"
POSTQUEUE = "/usr/sbin/postqueue"
DRAIN_SECONDS = 4.0
AT_ONCE = ("smtpd",)  # ended at once on stop, see drain()
READY_SECONDS = 15.0
NEEDED = (Path("/run/dovecot/lmtp"), paths.ACCOUNTS_MAP_SOCKET)


def answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
        return True
    except OSError:
        return False


def wait_until_ready(needed=NEEDED, seconds: float = READY_SECONDS) -> list[Path]:
    """Wait for the sockets Postfix delivers and looks up through; return those that
    still do not answer (Postfix then starts anyway and retries later)."""
    deadline = time.monotonic() + seconds
    missing = list(needed)
    while missing and time.monotonic() < deadline:
        missing = [path for path in missing if not answers(path)]
        if missing:
            time.sleep(0.1)
    return missing


def group_members(pgid: int, exclude: int, names: Iterable[str] | None = None) -> list[int]:
    """Processes of the process group ``pgid`` (Postfix's children stay in it), only
    those whose program is one of ``names`` if given."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(")")
        fields = rest.split()
        if fields[0] != "Z" and int(fields[2]) == pgid and (names is None or name in names):
            pids.append(int(entry.name))
    return pids


def terminate(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def drain(master: subprocess.Popen, pgid: int, seconds: float = DRAIN_SECONDS,
          at_once: Iterable[str] = AT_ONCE) -> None:
    master.kill()
    master.wait()
    # An SMTP server holds a client's session, which may stay open for minutes; it has
    # acknowledged nothing it has not queued, so it ends now and its client sends again.
    terminate(group_members(pgid, os.getpid(), at_once))
    deadline = time.monotonic() + seconds
    while (left := group_members(pgid, os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.05)
    terminate(group_members(pgid, os.getpid()))
    if left:
        print(f"postfix: {len(left)} process(es) still busy after {seconds:.0f} s were ended",
              file=sys.stderr, flush=True)


def main() -> int:
    if os.getpgid(0) != os.getpid():
        os.setpgid(0, 0)  # a group of our own: Postfix's processes are found by it
    pgid = os.getpgid(0)
    stopping = False

    def stop(signum, frame) -> None:  # noqa: ANN001 (signal handler signature)
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # before anything is delivered: the deliveries a crash cut off get their record
    # (relay/deliveronce.py, in a process of its own so that this one stays small)
    try:
        repaired = subprocess.run([sys.executable, "-m", "relay.deliveronce"], timeout=300).returncode == 0
    except subprocess.TimeoutExpired:
        repaired = False
    if not repaired:
        print("postfix: relay.deliveronce failed; a delivery cut off by a crash may repeat",
              file=sys.stderr, flush=True)
    for path in wait_until_ready():
        print(f"postfix: {path} does not answer yet; starting anyway", file=sys.stderr, flush=True)
    # -d: the master stays in the foreground and in this process group; logs to stdout
    master = subprocess.Popen([MASTER, "-d"])
    # flush the deferred queue once the master listens (until then postqueue reports
    # "mail system is down")
    flush_deadline = time.monotonic() + READY_SECONDS
    while not stopping and master.poll() is None and time.monotonic() < flush_deadline:
        if subprocess.run([POSTQUEUE, "-f"], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    while not stopping:
        try:
            return master.wait(timeout=0.2) or 1  # ended on its own: supervisord restarts us
        except subprocess.TimeoutExpired:
            pass
    drain(master, pgid)
    return 0  # Postfix's last processes were handed to PID 1 (supervisord), which reaps them


if __name__ == "__main__":
    sys.exit(main())

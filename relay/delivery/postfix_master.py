"""Postfix's master under supervisord, stopped without cutting a delivery in half
(the steps of relay/delivery/postfix_master.sh, the resident wrapper).

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

Before the master starts, relay.delivery.deliveronce records the deliveries a crash cut
off (so Dovecot drops their repeats), and Dovecot's LMTP socket and relay.accounts.auth's mailbox map must
answer (for at most READY_SECONDS): mail left in the queue by a crash is delivered
at once, and a delivery attempted before Dovecot listens would be deferred for
minutes. Once it runs, the deferred queue is flushed: a crash can end Dovecot a
moment before Postfix, whose last deliveries are then deferred, not done; and for
the first minutes local deliveries deferred because Dovecot or relay-auth were not
ready yet (a busy start) are retried as soon as both answer, not after Postfix's
5-minute back-off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from relay import paths
from relay.delivery import deliveronce

MASTER = "/usr/lib/postfix/sbin/master"
POSTQUEUE = "/usr/sbin/postqueue"
DRAIN_SECONDS = 4.0
AT_ONCE = ("smtpd",)  # ended at once on stop, see drain()
READY_SECONDS = 15.0
LOCAL_RETRY_SECONDS = 180.0  # see retry_local()
LOCAL_QUIET_SECONDS = 20.0
LOCAL_RETRY_EVERY = 2.0
LOCAL_RETRIES = 3
NEEDED = (Path("/run/dovecot/lmtp"), paths.ACCOUNTS_MAP_SOCKET)


def answers(path: Path) -> bool:
    """True when something accepts a connection on the UNIX socket ``path`` within a second."""
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


def proc_stat(pid: int | str) -> tuple[str, str, int] | None:
    """(program name, state, process group) of a process from /proc, None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition(" (")[2].rpartition(")")
    fields = rest.split()
    return name, fields[0], int(fields[2])


def group_members(pgid: int, exclude: Iterable[int] = (), names: Iterable[str] | None = None
                  ) -> list[int]:
    """Processes of the process group ``pgid`` (Postfix's children stay in it) but
    ``exclude``, only those whose program is one of ``names`` if given."""
    excluded = set(exclude)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in excluded:
            continue
        info = proc_stat(entry.name)
        if info and info[1] != "Z" and info[2] == pgid and (names is None or info[0] in names):
            pids.append(int(entry.name))
    return pids


def terminate(pids: list[int]) -> None:
    """Send SIGTERM to each of ``pids``; a process already gone is skipped."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def drain(master: int, pgid: int, seconds: float = DRAIN_SECONDS,
          at_once: Iterable[str] = AT_ONCE, exclude: Iterable[int] = ()) -> None:
    """End the master (pid ``master``) and let the rest of the group ``pgid`` finish,
    leaving alone ``exclude`` (the wrapper that waits for the master) and ourselves."""
    exclude = {os.getpid(), *exclude}
    try:
        os.kill(master, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # An SMTP server holds a client's session, which may stay open for minutes; it has
    # acknowledged nothing it has not queued, so it ends now and its client sends again.
    terminate(group_members(pgid, exclude, at_once))
    deadline = time.monotonic() + seconds
    while (left := group_members(pgid, exclude)) and time.monotonic() < deadline:
        time.sleep(0.05)
    terminate(group_members(pgid, exclude))
    if left:
        print(f"postfix: {len(left)} process(es) still busy after {seconds:.0f} s were ended",
              file=sys.stderr, flush=True)


def prepare() -> None:
    # before anything is delivered: the deliveries a crash cut off get their record
    """The ``prepare`` step before Postfix's master starts: record the deliveries a crash cut off
    (:func:`relay.delivery.deliveronce.repair`; an OSError is reported, not raised) and wait up
    to READY_SECONDS for Dovecot's LMTP socket and relay-auth's mailbox map. Messages go to
    stdout/stderr, which supervisord logs.
    """
    try:
        added = deliveronce.repair(paths.MAIL)
        if added:
            print(f"postfix: recorded {added} deliver{'y' if added == 1 else 'ies'} that a crash "
                  "had cut off, so that their repeats are dropped", flush=True)
    except OSError as exc:
        print(f"postfix: the deliveries a crash cut off could not be recorded ({exc}); "
              "they may be delivered twice", file=sys.stderr, flush=True)
    for path in wait_until_ready():
        print(f"postfix: {path} does not answer yet; starting anyway", file=sys.stderr, flush=True)


def alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    info = proc_stat(pid)
    return info is not None and info[1] != "Z"


def flush(master: int) -> None:
    """Retry the deferred queue once the master listens (until then postqueue reports
    "mail system is down"), then keep retrying local deliveries for a while
    (:func:`retry_local`)."""
    deadline = time.monotonic() + READY_SECONDS
    while alive(master) and time.monotonic() < deadline:
        if subprocess.run([POSTQUEUE, "-f"], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    retry_local(master, local_domain())


def local_domain() -> str:
    """MAIL_DOMAIN, lower case (the domain whose mail Dovecot's LMTP takes)."""
    from relay import settings
    return settings.from_environment().mail_domain.lower()


def deferred_local(queue_json: str, domain: str) -> list[str]:
    """Queue ids in ``postqueue -j`` output (one JSON object a line) of deferred messages
    with a recipient of ``domain``."""
    ids = []
    for line in queue_json.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("queue_name") == "deferred" and any(
                r.get("address", "").lower().rpartition("@")[2] == domain
                for r in entry.get("recipients", [])):
            ids.append(entry["queue_id"])
    return ids


def retry_local(master: int, domain: str, seconds: float = LOCAL_RETRY_SECONDS,
                quiet: float = LOCAL_QUIET_SECONDS, every: float = LOCAL_RETRY_EVERY) -> int:
    """After a crash or a start on a busy machine, a delivery into a mailbox can be
    deferred because Dovecot or relay-auth did not answer yet; Postfix would try it
    again only after minimal_backoff_time (5 minutes). For up to ``seconds`` after the
    start this retries such messages (``postqueue -i``) once both answer again, every
    ``every`` seconds, each message at most LOCAL_RETRIES times (a full mailbox also
    defers, and waits for Postfix's back-off), and stops early once none has been
    deferred for ``quiet`` seconds. Mail for other domains keeps Postfix's own
    back-off. Returns how many retries it asked for."""
    started = last_seen = time.monotonic()
    tries: dict[str, int] = {}
    while alive(master) and time.monotonic() - started < seconds:
        out = subprocess.run([POSTQUEUE, "-j"], capture_output=True, text=True).stdout
        ids = [i for i in deferred_local(out, domain) if tries.get(i, 0) < LOCAL_RETRIES]
        now = time.monotonic()
        if ids:
            last_seen = now
            if all(answers(path) for path in NEEDED):
                for queue_id in ids:
                    subprocess.run([POSTQUEUE, "-i", queue_id], capture_output=True)
                    tries[queue_id] = tries.get(queue_id, 0) + 1
        elif now - last_seen > quiet:
            break
        time.sleep(every)
    retried = sum(tries.values())
    if retried:
        print(f"postfix: retried {retried} deferred local deliver{'y' if retried == 1 else 'ies'} "
              "at once", flush=True)
    return retried


def main(argv: list[str]) -> int:
    """Steps of relay/delivery/postfix_master.sh: ``prepare``, ``flush MASTER``, ``drain MASTER WRAPPER``."""
    if argv[:1] == ["prepare"]:
        prepare()
    elif argv[:1] == ["flush"] and len(argv) == 2:
        flush(int(argv[1]))
    elif argv[:1] == ["drain"] and len(argv) == 3:
        master, wrapper = int(argv[1]), int(argv[2])
        drain(master, os.getpgid(wrapper), exclude=[wrapper])
    else:
        print("usage: python3 -m relay.delivery.postfix_master prepare | flush MASTER | drain MASTER WRAPPER",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Postfix's master under supervisord, stopped without cutting a delivery in half.

Postfix stops by passing SIGTERM to every process it runs, which ends a delivery
at any point: when Dovecot has stored a message but its 250 has not been recorded
in the queue yet, Postfix delivers the message a second time after the restart.

So this runs ``master`` in the foreground and, when supervisord asks it to stop,
drains Postfix instead (what ``postfix drain`` does): only the master is ended
(SIGKILL, which it cannot pass on); the other Postfix processes take no new
connections from it, finish the request they are serving (a delivery, a queue
file being written) and exit. Whatever is still running after DRAIN_SECONDS (an
SMTP client that keeps its session open) gets SIGTERM: its client then has no
reply and sends again, nothing accepted is lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MASTER = "/usr/lib/postfix/sbin/master"
DRAIN_SECONDS = 4.0


def group_members(pgid: int, exclude: int) -> list[int]:
    """Processes of the process group ``pgid`` (Postfix's children stay in it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def drain(master: subprocess.Popen, pgid: int, seconds: float = DRAIN_SECONDS) -> None:
    master.kill()
    master.wait()
    deadline = time.monotonic() + seconds
    while (left := group_members(pgid, os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in group_members(pgid, os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
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
    # -d: the master stays in the foreground and in this process group; logs to stdout
    master = subprocess.Popen([MASTER, "-d"])
    while not stopping:
        try:
            return master.wait(timeout=0.2) or 1  # ended on its own: supervisord restarts us
        except subprocess.TimeoutExpired:
            pass
    drain(master, pgid)
    return 0  # Postfix's last processes were handed to PID 1 (supervisord), which reaps them


if __name__ == "__main__":
    sys.exit(main())

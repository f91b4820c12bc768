"""How many IMAP connections each Dovecot process may take, from the container's open-files
limit (RLIMIT_NOFILE, per process).

Every IMAP client holds, for as long as it is connected:

* 2 file descriptors in imap-login, which keeps the TLS connection and passes the plain text on
  over a socketpair (also while the client is hibernated);
* 2 in imap-hibernate while hibernated (the socketpair's other end, its subscription);
* 1 in mailbox-notify while in IDLE (its subscription; see
  image/dovecot/mailbox-notify.patch), and 1 more for a moment whenever a process announces
  a change there.

imap-login and imap-hibernate spread over as many processes as needed (also to stay below
Dovecot's per-process memory limit), so only mailbox-notify, which must stay one process, needs
the limit to cover MAX_IMAP_CONNECTIONS. No kernel setting
of the host matters for new-mail announcements (IDLE takes no inotify instance or watch).
"""

from __future__ import annotations

import math
import resource

# Descriptors a Dovecot process uses besides its clients (logs, master, listeners, config).
PROCESS_OVERHEAD_FDS = 64
# Connections one imap-login or imap-hibernate process takes at most: Dovecot stops a process
# whose address space passes its vsz_limit (256 MB by default), and an idle TLS connection
# holds about 33 KiB in imap-login (more during its handshake); one process with 7,660 of them
# was stopped there.
CLIENTS_PER_PROCESS_MAX = 4000
# Room in mailbox-notify for announcements arriving at once and IMAP NOTIFY sessions.
ANNOUNCEMENT_FDS = 1024


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE of this process, which every daemon started by supervisord
    inherits (``docker run --ulimit nofile=...``, compose ``ulimits``)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_files_needed(max_imap_connections: int) -> int:
    """Open files the one mailbox-notify process needs when ``max_imap_connections`` clients
    wait in IDLE at once."""
    return max_imap_connections + ANNOUNCEMENT_FDS + PROCESS_OVERHEAD_FDS


def raise_command(needed: int) -> str:
    """The one thing to change on the host for ``needed`` open files per process."""
    value = max(65536, 1 << math.ceil(math.log2(needed)))
    return (f"start the container with `--ulimit nofile={value}:{value}` (compose.yaml: "
            f"`ulimits: {{nofile: {value}}}`); if Docker refuses it, raise LimitNOFILE= of the "
            f"docker service first (`systemctl edit docker`)")


def dovecot_limits(max_imap_connections: int, open_files: int) -> dict[str, int]:
    """Template values for dovecot.conf: ``imap_login_client_limit`` and
    ``imap_hibernate_client_limit`` (connections per process: each takes 2 descriptors, and at
    most CLIENTS_PER_PROCESS_MAX) with the ``..._process_limit`` that lets all
    ``max_imap_connections`` in, and
    ``mailbox_notify_client_limit`` (what one process can hold, at most what is needed)."""
    usable = max(PROCESS_OVERHEAD_FDS, open_files - PROCESS_OVERHEAD_FDS)
    per_process = max(1, min(max_imap_connections, usable // 2, CLIENTS_PER_PROCESS_MAX))
    processes = math.ceil(max_imap_connections / per_process) + 1
    return {
        "imap_login_client_limit": per_process,
        "imap_login_process_limit": processes,
        "imap_hibernate_client_limit": per_process,
        "imap_hibernate_process_limit": processes,
        "mailbox_notify_client_limit": min(max_imap_connections + ANNOUNCEMENT_FDS, usable),
    }

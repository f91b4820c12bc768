"""Facts about the machine the container runs on."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def ipv6_available() -> bool:
    """True when this network namespace can bind an IPv6 socket.

    Docker hosts with IPv6 switched off (sysctl or kernel command line) make
    daemons that listen on ``[::]`` fail to start, so listeners are rendered
    for IPv4 only there.
    """
    if not Path("/proc/net/if_inet6").exists():
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def load_average() -> float:
    return os.getloadavg()[0]


def available_memory() -> int:
    """MemAvailable in bytes, or the cgroup's remaining headroom when that is smaller."""
    available = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text != "max" and int(limit_text) < 1 << 60:
            available = min(available, max(0, int(limit_text) - usage))
        break
    return available


def free_disk(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize

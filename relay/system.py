"""Facts about the machine the container runs on."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
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
    """The 1-minute load average of the host (os.getloadavg)."""
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
    """Bytes available to unprivileged users on the file system holding ``path`` (statvfs). Raises
    OSError when ``path`` does not exist.
    """
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# --- the container's own addresses (for DNS records and the doctor) -----------

IPV6_SKIP_FLAGS = 0x01 | 0x08 | 0x20 | 0x40  # temporary, DAD failed, deprecated, tentative


def parse_if_inet6(text: str) -> list[str]:
    """IPv6 addresses from /proc/net/if_inet6 that suit DNS (not temporary or tentative)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or len(fields[0]) != 32:
            continue
        if int(fields[4], 16) & IPV6_SKIP_FLAGS:
            continue
        out.append(str(ipaddress.IPv6Address(int(fields[0], 16))))
    return out


def parse_fib_trie(text: str) -> list[str]:
    """The local IPv4 addresses in /proc/net/fib_trie (leaves marked ``/32 host LOCAL``)."""
    out: list[str] = []
    leaf = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            leaf = stripped[4:].strip()
        elif stripped.startswith("+--") or stripped.endswith(":"):
            leaf = None
        elif leaf and stripped.startswith("/32 host LOCAL") and leaf not in out:
            out.append(leaf)
    return out


def global_addresses(candidates: Iterable[str]) -> list[str]:
    """Publicly routable addresses only, IPv4 first, without duplicates."""
    found = []
    for text in candidates:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        if addr.is_global and not addr.is_multicast and addr not in found:
            found.append(addr)
    return [str(a) for a in sorted(found, key=lambda a: (a.version, a))]


def local_addresses(proc: Path = Path("/proc/net")) -> list[str]:
    """The global (publicly routable) addresses of the container's interfaces, read from ``proc``
    (/proc/net: fib_trie for IPv4, if_inet6 for IPv6), IPv4 first; [] behind NAT.
    """
    texts = []
    for name, parse in (("fib_trie", parse_fib_trie), ("if_inet6", parse_if_inet6)):
        try:
            texts += parse((proc / name).read_text())
        except OSError:
            pass
    return global_addresses(texts)

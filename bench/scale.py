"""The bench's scale step: N IMAP clients in IDLE on one relay (issue 14).

    python3 bench/scale.py [N [IMAP_HIBERNATE_TIMEOUT]]
                                      (make bench runs N=2000, make bench-scale N=10000;
                                      the relay's default timeout unless one is given)

N clients connect over implicit TLS to the relay's address on a docker network made for
the run, log in (each login creates a new account), SELECT INBOX and IDLE, as Delta Chat
does; they stay connected to the end. Reported (JSON on stdout, merged into
bench/results.json by bench/run.py):

* the container's memory without page cache (cgroup: anonymous memory plus tmpfs) with no
  client, with all N connected, and after they were idle past IMAP_HIBERNATE_TIMEOUT; per
  client; the processes that hold it;
* the time to connect all N, and per client (p50/p90/max);
* SMTP submission -> IMAP IDLE EXISTS latency (p50/p90/max) to clients among all N, with
  the other N-1 connected: the last ones connected (not yet hibernated), the first ones
  and random others once all are hibernated;
* inotify instances and watches the container holds meanwhile (host-wide per user id);
* the peak container memory while they connect.

Per-hop timing of one message is bench/trace.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import smtplib
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from idle_clients import IdleClients, random_accounts  # noqa: E402
from relaytest import Relay, docker, inotify_usage, insecure_tls, securejoin_request, wait_for  # noqa: E402

from relay import settings as relay_settings  # noqa: E402

# How long the bench waits for every client to hibernate, beyond IMAP_HIBERNATE_TIMEOUT.
HIBERNATE_WAIT_S = 150
MiB = 1024 * 1024


def percentiles_ms(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))] * 1000, 1)

    return {"n": len(values), "p50_ms": pick(0.5), "p90_ms": pick(0.9),
            "max_ms": round(ordered[-1] * 1000, 1)}


def cgroup_memory(name: str) -> int:
    """Bytes the container's processes hold themselves: anonymous memory plus tmpfs (cgroup v1
    total_rss + total_shmem, v2 anon + shmem). Unlike docker stats it leaves out page cache,
    which depends on which container first read a shared file and which the kernel reclaims
    when needed. Raises RuntimeError when the container has no memory.stat."""
    cid = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    for path in (f"/sys/fs/cgroup/memory/docker/{cid}/memory.stat",
                 f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.stat",
                 f"/sys/fs/cgroup/docker/{cid}/memory.stat"):
        try:
            stat = dict(line.split() for line in open(path))
        except OSError:
            continue
        if "total_rss" in stat:
            return int(stat["total_rss"]) + int(stat.get("total_shmem", 0))
        return int(stat["anon"]) + int(stat.get("shmem", 0))
    raise RuntimeError(f"no memory.stat for container {name}")


def process_table(relay: Relay) -> dict[str, dict[str, int]]:
    """Per process name: how many, and their summed RssAnon in KiB."""
    out = relay.exec("sh", "-c", "for d in /proc/[0-9]*; do "
                     "n=$(cat $d/comm 2>/dev/null) && "
                     "a=$(sed -n 's/^RssAnon:\\s*\\([0-9]*\\).*/\\1/p' $d/status 2>/dev/null) && "
                     "echo \"$n ${a:-0}\"; done", check=False).stdout
    table: dict[str, dict[str, int]] = {}
    for line in out.splitlines():
        name, _, kib = line.rpartition(" ")
        entry = table.setdefault(name, {"count": 0, "rss_anon_kib": 0})
        entry["count"] += 1
        entry["rss_anon_kib"] += int(kib or 0)
    return table


class Sender:
    """One logged-in SMTP submission session (port 465) used for every measured message."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.account = relay.new_account()
        self.smtp = smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(),
                                     timeout=60)
        self.smtp.login(self.account["email"], self.account["password"])

    def send(self, recipient: str, marker: str = "") -> None:
        self.smtp.sendmail(self.account["email"], [recipient],
                           securejoin_request(self.account["email"], recipient, marker))

    def close(self) -> None:
        self.smtp.quit()


async def deliveries(clients: IdleClients, sender: Sender, targets, timeout: float = 30) -> dict:
    """Submit one message to each target in turn; SMTP submission (sendmail, on a session
    logged in already) until the target's EXISTS."""
    loop = asyncio.get_running_loop()
    latencies, missed = [], 0
    for client in targets:
        started = time.monotonic()
        await loop.run_in_executor(None, sender.send, client.address)
        arrived = await clients.wait_exists(client, started, timeout)
        if arrived is None:
            missed += 1
        else:
            latencies.append(arrived - started)
    result = percentiles_ms(latencies)
    result[f"missed_within_{timeout:g}s"] = missed
    return result


def imap_processes(relay: Relay) -> int:
    return process_table(relay).get("imap", {}).get("count", 0)


async def measure(relay: Relay, address: str, n: int, concurrency: int,
                  hibernate_timeout: int) -> dict:
    loop = asyncio.get_running_loop()
    result: dict = {"clients": n}
    result["memory_no_clients_bytes"] = cgroup_memory(relay.name)
    sender = await loop.run_in_executor(None, Sender, relay)
    async with IdleClients(address, 993, concurrency=concurrency) as clients:
        peak = [result["memory_no_clients_bytes"]]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], cgroup_memory(relay.name))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        await clients.open(random_accounts(relay.domain, n))
        result["connect_all_s"] = round(time.monotonic() - started, 1)
        done.set()
        sampler.join()
        result["memory_peak_while_connecting_bytes"] = peak[0]
        result["connect_each"] = percentiles_ms([c.connect_s for c in clients.clients])
        result["memory_all_connected_bytes"] = cgroup_memory(relay.name)
        result["processes_all_connected"] = await loop.run_in_executor(None, process_table, relay)
        result["inotify_all_connected"] = await loop.run_in_executor(None, inotify_usage, relay.name)
        last = clients.clients[-10:]
        result["latency_last_connected"] = await deliveries(clients, sender, last)

        # everyone idle past the timeout: in imap-hibernate, no imap process left
        await loop.run_in_executor(None, lambda: wait_for(
            lambda: imap_processes(relay) <= 2, hibernate_timeout + HIBERNATE_WAIT_S, 1, "hibernation"))
        # the auth-worker processes of the login burst end after a minute without work
        await loop.run_in_executor(None, lambda: wait_for(
            lambda: process_table(relay).get("auth", {}).get("count", 0) <= 2, 120, 2,
            "auth workers gone"))
        result["memory_hibernated_bytes"] = cgroup_memory(relay.name)
        result["processes_hibernated"] = await loop.run_in_executor(None, process_table, relay)
        result["inotify_hibernated"] = await loop.run_in_executor(None, inotify_usage, relay.name)
        rng = random.Random(14)
        picked = clients.clients[:10] + clients.clients[-10:] + rng.sample(clients.clients, 30)
        result["latency_hibernated"] = await deliveries(clients, sender, picked)
        result["still_connected"] = clients.open_count()
    await loop.run_in_executor(None, sender.close)
    base = result["memory_no_clients_bytes"]
    result["per_client_connected_kib"] = round((result["memory_all_connected_bytes"] - base) / n / 1024, 1)
    result["per_client_hibernated_kib"] = round((result["memory_hibernated_bytes"] - base) / n / 1024, 1)
    return result


def network_address(relay: Relay, network: str) -> str:
    """The relay container's address on the docker network ``network``."""
    fmt = "{{(index .NetworkSettings.Networks \"" + network + "\").IPAddress}}"
    return docker("inspect", "-f", fmt, relay.name).stdout.strip()


def stored_sizes(relay: Relay) -> dict[str, int]:
    """Bytes on disk of every stored message (files in new/ and cur/ below /data/mail), and what
    they hold uncompressed (S= in the Maildir file name, else the file size)."""
    script = ("import os,re\n"
              "d=u=n=0\n"
              "for root,dirs,files in os.walk('/data/mail'):\n"
              "  if os.path.basename(root) not in ('new','cur'): continue\n"
              "  for f in files:\n"
              "    st=os.stat(os.path.join(root,f)); m=re.search(r',S=(\\d+)',f.split(':')[0])\n"
              "    d+=st.st_size; u+=int(m.group(1)) if m else st.st_size; n+=1\n"
              "print(n,d,u)\n")
    n, on_disk, uncompressed = relay.exec("python3", "-c", script).stdout.split()
    return {"messages": int(n), "bytes_on_disk": int(on_disk),
            "bytes_uncompressed": int(uncompressed)}


def summary(result: dict) -> list[str]:
    """The scale step's lines for the bench's table."""
    n, mib = result["clients"], 1024 * 1024
    lines = [f"{'scale: clients connected':40} {result['still_connected']} of {n} "
             f"in {result['connect_all_s']} s (IMAP_HIBERNATE_TIMEOUT "
             f"{result.get('imap_hibernate_timeout_s', '?')} s)",
             f"{'scale: memory, no client':40} {result['memory_no_clients_bytes'] / mib:.0f} MiB",
             f"{'scale: memory, peak while connecting':40} "
             f"{result['memory_peak_while_connecting_bytes'] / mib:.0f} MiB",
             f"{'scale: memory, all connected':40} {result['memory_all_connected_bytes'] / mib:.0f} "
             f"MiB ({result['per_client_connected_kib']} KiB per client)",
             f"{'scale: memory, all hibernated':40} {result['memory_hibernated_bytes'] / mib:.0f} "
             f"MiB ({result['per_client_hibernated_kib']} KiB per client)"]
    for key in ("latency_last_connected", "latency_hibernated"):
        r = result[key]
        lines.append(f"{'scale: ' + key.replace('_', ' '):40} p50 {r.get('p50_ms')} ms, p90 "
                     f"{r.get('p90_ms')} ms, max {r.get('max_ms')} ms (n={r['n']})")
    ino = result.get("inotify_hibernated")
    if ino:
        lines.append(f"{'scale: inotify instances / watches':40} {ino['instances']} / {ino['watches']}")
    return lines


def run(n: int, image: str | None = None, concurrency: int = 32,
        hibernate_timeout: int | None = None) -> dict:
    """Start a relay on a network of its own, measure with ``n`` clients, remove it all.
    ``hibernate_timeout``: the relay's IMAP_HIBERNATE_TIMEOUT in seconds (None: its default)."""
    network = f"chatmail-bench-{secrets.token_hex(3)}"
    docker("network", "create", network)
    env = {"MAIL_DOMAIN": "_scale.example.test", "TLS_MODE": "self-signed",
           "NEW_ACCOUNTS_PER_MINUTE": "6000", "MAX_USER_SEND_PER_MINUTE": "100000",
           "MAX_USER_SEND_BURST": "100000", "PUSH_GATEWAY_URL": "https://127.0.0.1:9/notify",
           "MAX_IMAP_CONNECTIONS": str(max(10000, n + 100))}
    if hibernate_timeout is None:
        hibernate_timeout = relay_settings.load({"MAIL_DOMAIN": env["MAIL_DOMAIN"]}).imap_hibernate_timeout
    env["IMAP_HIBERNATE_TIMEOUT"] = str(hibernate_timeout)
    kwargs = {"image": image} if image else {}
    relay = Relay(env, name=f"relay-bench-scale-{secrets.token_hex(2)}",
                  extra_args=("--network", network), **kwargs)
    try:
        relay.start().wait_healthy(180)
        address = network_address(relay, network)
        time.sleep(20)  # settle: idle memory, not start-up peaks
        result = asyncio.run(measure(relay, address, n, concurrency, hibernate_timeout))
        result["imap_hibernate_timeout_s"] = hibernate_timeout
        return result
    finally:
        relay.remove()
        docker("network", "rm", network, check=False)


def main() -> int:
    """``bench/scale.py [N [IMAP_HIBERNATE_TIMEOUT]]``: the scale step alone (make bench-scale),
    its figures merged into bench/results.json under ``scale_<N>`` (``scale_<N>_hibernate_<T>s``
    with a timeout given)."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    timeout = int(sys.argv[2]) if len(sys.argv) > 2 else None
    result = run(n, hibernate_timeout=timeout)
    results_file = ROOT / "bench" / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results[f"scale_{n}" if timeout is None else f"scale_{n}_hibernate_{timeout}s"] = result
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(summary(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

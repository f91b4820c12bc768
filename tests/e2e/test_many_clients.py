"""More clients in IMAP IDLE than the kernel's default inotify limit allows processes of one
user id (128 instances, counted across the whole host): new mail still reaches any of them
through IDLE at once, also after they were moved to imap-hibernate (issue 14).

The relay runs on a docker network of its own; the clients reach its address there, as
/work/shared/TESTING.md ("Many clients") describes, and log in over implicit TLS, SELECT INBOX
and IDLE as Delta Chat does. Nothing on the host is raised but this process's own
RLIMIT_NOFILE.
"""

import asyncio
import secrets
import time

import pytest

from idle_clients import IdleClients, random_accounts
from relaytest import Relay, docker, inotify_usage, securejoin_request, submit, wait_for

CLIENTS = 200
HIBERNATE_AFTER_S = 2
# Far below the 30 s of mailbox_idle_check_interval, the polling IDLE falls back to.
ARRIVAL_BOUND_S = 10


@pytest.fixture(scope="module")
def crowded(image_exists):
    network = f"chatmail-many-{secrets.token_hex(3)}"
    docker("network", "create", network)
    relay = Relay({"MAIL_DOMAIN": "_many.example.test", "TLS_MODE": "self-signed",
                   "NEW_ACCOUNTS_PER_MINUTE": "6000",
                   "IMAP_HIBERNATE_TIMEOUT": str(HIBERNATE_AFTER_S),
                   "PUSH_GATEWAY_URL": "https://127.0.0.1:9/notify"},
                  extra_args=("--network", network))
    try:
        relay.start().wait_healthy()
        relay.address = docker("inspect", "-f",
                               "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % network,
                               relay.name).stdout.strip()
        yield relay
    finally:
        relay.remove()
        docker("network", "rm", network, check=False)


def imap_processes(relay) -> int:
    out = relay.exec("sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null").stdout.split()
    return out.count("imap")


def imap_gauges(relay) -> dict[str, float]:
    """chatmail_imap_connections by state, as `relayctl metrics` reports them (issue 16)."""
    out = relay.exec("relayctl", "metrics").stdout
    return {line.split('state="')[1].split('"')[0]: float(line.split()[-1])
            for line in out.splitlines() if line.startswith("chatmail_imap_connections{")}


def test_new_mail_reaches_every_one_of_200_idle_clients(crowded):
    sender = crowded.new_account()
    # the sender's own first login creates its mailbox
    submit(crowded, sender, [sender["email"]], securejoin_request(sender["email"], sender["email"]))

    async def deliver_to(clients, client) -> float | None:
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(
            None, submit, crowded, sender, [client.address],
            securejoin_request(sender["email"], client.address))
        arrived = await clients.wait_exists(client, started, ARRIVAL_BOUND_S)
        return None if arrived is None else arrived - started

    async def scenario() -> dict:
        async with IdleClients(crowded.address, 993) as clients:
            await clients.open(random_accounts(crowded.domain, CLIENTS))
            last = clients.clients[-1]
            result = {"last_connected": await deliver_to(clients, last)}
            # every client idle past the timeout has left its imap process
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_for(lambda: imap_processes(crowded) <= 2, 60, 0.5,
                                       "idle clients hibernated"))
            # read from the host's /proc: inside the container it takes CAP_SYS_PTRACE
            result["inotify"] = inotify_usage(crowded.name)
            result["metrics"] = imap_gauges(crowded)
            for name, client in (("first_hibernated", clients.clients[0]),
                                 ("middle_hibernated", clients.clients[CLIENTS // 2]),
                                 ("last_again", last)):
                result[name] = await deliver_to(clients, client)
            result["still_connected"] = clients.open_count()
            return result

    result = asyncio.run(scenario())
    for name in ("last_connected", "first_hibernated", "middle_hibernated", "last_again"):
        assert result[name] is not None, f"{name}: no EXISTS within {ARRIVAL_BOUND_S}s ({result})"
    assert result["still_connected"] == CLIENTS, result
    # IDLE takes no inotify instance or watch per client any more
    assert result["inotify"] is not None, "this test reads the host's /proc (run it as root)"
    assert result["inotify"]["instances"] < 10, result
    assert result["inotify"]["watches"] < 20, result
    assert "Inotify instance limit" not in crowded.logs()
    # the metrics tell hibernated from active connections
    gauges = result["metrics"]
    assert gauges["active"] <= 2 and CLIENTS - 2 <= gauges["hibernated"] <= CLIENTS, gauges

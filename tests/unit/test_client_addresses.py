"""relayctl doctor's client-address check reads the kernel's tables correctly, and
compose.host.yaml is compose.yaml with host networking (kept in step by make docs)."""

import ipaddress
import socket
import struct

from relay.ops import clientaddr
from relay.settings import docs
from relaytest import ROOT

ROUTE = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
         "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"      # default via 172.17.0.1
         "eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n")
IPV6_ROUTE = ("00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
              "fd000000000000000000000000000001 00000400 00000002 00000000 00000003 eth0\n"
              "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
              "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n")
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def v4(address: str, port: int) -> str:
    word = struct.unpack("<I", socket.inet_aton(address))[0]
    return f"{word:08X}:{port:04X}"


def v6(address: str, port: int) -> str:
    packed = ipaddress.IPv6Address(address).packed
    words = struct.unpack("<4I", packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def line(local: str, remote: str, state: str = "01") -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000     0\n"


def proc(tmp_path, tcp: list[str], tcp6: list[str]):
    (tmp_path / "route").write_text(ROUTE)
    (tmp_path / "ipv6_route").write_text(IPV6_ROUTE)
    (tmp_path / "tcp").write_text(HEADER + "".join(tcp))
    (tmp_path / "tcp6").write_text(HEADER + "".join(tcp6))
    return tmp_path


def test_gateways_of_both_families_are_found(tmp_path):
    assert clientaddr.gateways(proc(tmp_path, [], [])) == {"172.17.0.1", "fd00::1"}


def test_clients_behind_the_gateway_are_counted_and_flagged(tmp_path):
    me = "172.17.0.2"
    tcp = [line(v4(me, 993), v4("172.17.0.1", 40000 + i)) for i in range(5)]
    tcp += [line(v4(me, 465), v4("198.51.100.7", 50000))]
    tcp += [line(v4(me, 993), v4("172.17.0.1", 40100), state="06")]   # TIME_WAIT: not counted
    tcp += [line(v4("0.0.0.0", 993), v4("0.0.0.0", 0), state="0A")]   # the listener
    tcp += [line(v4("127.0.0.1", 8993), v4("127.0.0.1", 40200))]      # internal hop
    tcp += [line(v4(me, 44444), v4("203.0.113.9", 25))]               # outgoing SMTP
    tcp6 = [line(v6("::ffff:172.17.0.2", 443), v6("::ffff:172.17.0.1", 41000))]  # dual-stack socket
    now = clientaddr.census(proc(tmp_path, tcp, tcp6))
    assert (now.connections, now.addresses, now.from_gateway) == (7, 2, 6)
    assert now.collapsed and now.gateway == "172.17.0.1"


def test_clients_with_their_own_addresses_are_not_flagged(tmp_path):
    tcp = [line(v4("192.0.2.10", 993), v4(f"198.51.100.{i}", 40000)) for i in range(1, 6)]
    tcp6 = [line(v6("2001:db8::10", 465), v6("2001:db8:1::7", 40000)),
            line(v6("2001:db8::10", 993), v6("fd00::1", 40001))]             # one via the router
    now = clientaddr.census(proc(tmp_path, tcp, tcp6))
    assert (now.connections, now.addresses, now.from_gateway) == (7, 7, 1)
    assert not now.collapsed


def test_no_connections_is_no_verdict(tmp_path):
    now = clientaddr.census(proc(tmp_path, [], []))
    assert now.connections == 0 and not now.collapsed


def test_compose_host_yaml_is_compose_yaml_with_host_networking():
    compose = (ROOT / "compose.yaml").read_text()
    host = (ROOT / "compose.host.yaml").read_text()
    assert host == docs.compose_host(compose), "compose.host.yaml is stale: run `make docs`"
    assert "    network_mode: host\n" in host and "\n    ports:" not in host
    assert "${PUBLISH_ON" not in host
    assert not [line for line in host.splitlines() if line.startswith("name:")]  # compose 1.29

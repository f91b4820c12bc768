"""make bench: measure the relay and write bench/results.json plus a table on stdout.

Everything runs against a fresh container of the real image on loopback ports:

* time from `docker run` to healthy, on a fresh volume and again on the same
  volume (a restart with existing data);
* idle memory of the whole container (cgroup), image size and size above the base;
* the filter's own cost per message (relay.filter.policy on real corpus messages, in-process);
* SMTP submission -> IMAP IDLE "EXISTS" latency with plain protocol clients;
* Delta Chat end-to-end latency (send_text until the recipient's IncomingMsg event);
* account creation: POST /new plus the first login, p50;
* one expiry pass (relay.store.expire) over 100,000 stored messages, in-process on
  a temporary directory laid out like /data;
* throughput: encrypted messages a second accepted and delivered with 8
  concurrent senders, and the container's peak memory meanwhile;
* the Delta Chat end-to-end latency once more, in the same run, against the
  comparator image (same Dockerfile, Debian's stock Dovecot: `make image
  DOVECOT=stock IMAGE=chatmail-relay:stock`), so the ratio is read side by side;
* one message hop by hop (bench/hoptrace.py): submission, filter, re-injection, queue
  manager, Dovecot LMTP store through Sieve, Postfix's delivery record, IDLE EXISTS;
* the stored mail's size on disk (compressed) against its uncompressed size, over the real
  encrypted messages the runs above delivered;
* the scale step (bench/scale.py): 2,000 IMAP clients in IDLE over TLS, memory per client
  before and after hibernation, time to connect, delivery latency among all of them
  (``make bench-scale``: 10,000);
* federation: Delta Chat end to end from relay-a.test to relay-b.test (A sends, B's
  client receives) on the test network of tests/support/fednet.py (real DNS, ACME, DKIM), over
  HTTPS /mxdeliv and over SMTP with 443 down (`bench/run.py --federation-only`: just this).

Not part of `make test`: numbers are reported, never asserted.
"""

from __future__ import annotations

import imaplib
import json
import os
import platform
import queue
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

import hoptrace  # noqa: E402  (bench/: next to this script)
import scale  # noqa: E402
from relaytest import IMAGE, Relay, delta_chat, docker, insecure_tls, securejoin_request, submit  # noqa: E402

from relay import settings as relay_settings
from relay.filter import policy
from relay.store import expire

RESULTS = ROOT / "bench" / "results.json"
COMPARATOR = os.environ.get("COMPARATOR_IMAGE", "chatmail-relay:stock")
# Seconds after healthy when the idle relay has settled (Postfix's max_idle is 100 s).
SETTLED_AFTER_S = 130
BENCH_ENV = {"TLS_MODE": "self-signed", "NEW_ACCOUNTS_PER_MINUTE": "6000",
             "MAX_USER_SEND_PER_MINUTE": "100000", "MAX_USER_SEND_BURST": "100000",
             # never the real notification gateway: a closed port inside the container
             "PUSH_GATEWAY_URL": "https://127.0.0.1:9/notify"}
CORPUS = ROOT / "tests" / "corpus"


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]

    return {"n": len(values), "p50_ms": round(pick(0.5) * 1000, 1),
            "p90_ms": round(pick(0.9) * 1000, 1), "p99_ms": round(pick(0.99) * 1000, 1)}


def time_to_healthy(relay: Relay) -> float:
    started = time.monotonic()
    relay.start()
    relay.wait_healthy(180)
    return time.monotonic() - started


def container_memory(name: str) -> int:
    out = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).stdout.strip()
    value, unit = re.match(r"([\d.]+)\s*([KMG]i?B)", out).groups()
    scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    return int(float(value) * scale)


def image_sizes() -> dict[str, int]:
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    base = int(docker("image", "inspect", "-f", "{{.Size}}", "debian:bookworm-slim").stdout)
    return {"image_bytes": size, "base_bytes": base, "above_base_bytes": size - base}


def filter_cost() -> dict[str, float]:
    """Mean time of the outgoing check per message, for a chat-sized and a large message."""
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    result = {}
    for label, name in (("chat_message_us", "enc_one_pkesk.eml"),
                        ("large_message_us", "enc_large_partial.eml")):
        if name not in manifest and not (CORPUS / name).exists():
            continue
        data = (CORPUS / name).read_bytes().replace(b"{sender}", b"alice@chat.example.org") \
            .replace(b"{recipient}", b"bob@chat.example.org")
        rounds = 200
        started = time.perf_counter()
        for _ in range(rounds):
            verdict = policy.check_outgoing("alice@chat.example.org", ["bob@chat.example.org"], data)
        elapsed = time.perf_counter() - started
        assert verdict is None, f"{name} should be accepted"
        result[label] = round(elapsed / rounds * 1e6, 1)
        result[label.replace("_us", "_bytes")] = len(data)
    return result


def smtp_to_idle(relay: Relay, rounds: int = 30) -> dict[str, float]:
    sender, receiver = relay.new_account(), relay.new_account()
    submit(relay, receiver, [receiver["email"]], securejoin_request(receiver["email"], receiver["email"]))
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    im.login(receiver["email"], receiver["password"])
    im.select("INBOX")
    latencies = []
    for i in range(rounds):
        tag = im._new_tag().decode()
        im.send(f"{tag} IDLE\r\n".encode())
        assert im.readline().startswith(b"+")
        started = time.monotonic()
        submit(relay, sender, [receiver["email"]],
               securejoin_request(sender["email"], receiver["email"], str(i)))
        while b"EXISTS" not in im.readline():
            pass
        latencies.append(time.monotonic() - started)
        im.send(b"DONE\r\n")
        while not im.readline().startswith(tag.encode()):
            pass
    im.logout()
    return percentiles(latencies)


def account_creation(relay: Relay, rounds: int = 20) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        acct = relay.new_account()
        im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
        im.login(acct["email"], acct["password"])
        times.append(time.monotonic() - started)
        im.logout()
    return percentiles(times)


def incoming_texts(account) -> queue.Queue[tuple[str, float, float]]:
    """A thread that turns the account's IncomingMsg events into (text, monotonic time, Unix
    time) on a queue, timed when the event arrives, so that waiting for one can time out
    without losing the next."""
    texts: queue.Queue[tuple[str, float, float]] = queue.Queue()
    accepted: set[int] = set()

    def pump() -> None:
        while True:
            try:
                event = account.wait_for_event()
            except Exception:
                return  # the RPC server has stopped
            if event.kind == "IncomingMsg":
                arrived, arrived_unix = time.monotonic(), time.time()
                snapshot = account.get_message_by_id(event.msg_id).get_snapshot()
                if snapshot.chat_id not in accepted:
                    # Accept the chat, as a user does: later messages of a contact request
                    # only raise MsgsChanged, not IncomingMsg.
                    account.get_chat_by_id(snapshot.chat_id).accept()
                    accepted.add(snapshot.chat_id)
                texts.put((snapshot.text, arrived, arrived_unix))

    threading.Thread(target=pump, daemon=True).start()
    return texts


def chat_latency(alice, bob, rounds: int = 50, timeout: float = 10, pace: float = 1.0,
                 relay: Relay | None = None) -> dict:
    """send_text by alice until bob's IncomingMsg event, per message, messages `pace`
    seconds apart, as in a conversation. Sent back to back, the sending client's own rate
    limiter holds each message for up to a second before its SMTP submission (the core
    logs "smtp got rate limited"), which measures the client, not the relay.
    With ``relay`` (both accounts on it) the result also splits each message's time
    between the two clients and the relay (hoptrace.client_split)."""
    texts = incoming_texts(bob)
    chat = alice.create_chat(bob)
    latencies, missed, rounds_unix = [], 0, []
    for i in range(rounds + 1):  # the first message is a warm-up, not measured
        time.sleep(pace)
        started, started_unix = time.monotonic(), time.time()
        chat.send_text(f"message {i}")
        deadline = started + timeout
        while True:
            try:
                text, arrived, arrived_unix = texts.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                missed += 1
                break
            if text == f"message {i}":
                if i:
                    latencies.append(arrived - started)
                    rounds_unix.append((started_unix, arrived_unix))
                break
        if missed > 5:
            break  # something is wrong: report it rather than wait for ever
    result = percentiles(latencies) if latencies else {"n": 0}
    result["pace_s"] = pace
    result[f"missed_within_{timeout}s"] = missed
    if relay is not None and rounds_unix:
        sender, recipient = alice.get_config("configured_addr"), bob.get_config("configured_addr")
        deadline = time.monotonic() + 5  # the last log lines may still be on their way to docker
        while True:
            split = hoptrace.client_split(hoptrace.log_since(relay, rounds_unix[0][0]),
                                          sender, recipient, rounds_unix)
            if not split["unmatched"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        result["split_ms"] = split
    return result


def deltachat_latency(relay: Relay, rounds: int = 50, timeout: float = 10,
                      pace: float = 1.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp, delta_chat(Path(tmp) / "a") as dc:
        accounts = []
        for _ in range(2):
            acct = dc.add_account()
            acct.add_transport_from_qr(relay.dclogin_for_here(relay.new_account()))
            acct.bring_online()
            accounts.append(acct)
        result = chat_latency(*accounts, rounds=rounds, timeout=timeout, pace=pace, relay=relay)
        for acct in accounts:
            acct.stop_io()
    return result


def federation_latency(rounds: int = 30) -> dict:
    """Delta Chat end to end across the federation of tests/support/fednet.py (relay-a.test sends,
    relay-b.test's client receives; real DNS, ACME certificates, DKIM): over HTTPS
    /mxdeliv, and over SMTP with STARTTLS while both relays' port 443 is down."""
    from fednet import Federation, dc_account

    fed = Federation()
    try:
        started = time.monotonic()
        fed.start()
        result: dict = {"network_up_s": round(time.monotonic() - started, 1)}
        with tempfile.TemporaryDirectory() as tmp, delta_chat(Path(tmp) / "a") as dc:
            pairs = [(dc_account(dc, fed.a), dc_account(dc, fed.b)) for _ in range(2)]
            result["https"] = chat_latency(*pairs[0], rounds=rounds)
            with fed.https_down():
                result["smtp"] = chat_latency(*pairs[1], rounds=rounds)
            logs = fed.a.logs()
            result["https_deliveries_logged"] = logs.count("delivered via https to relay-b.test")
            result["smtp_deliveries_logged"] = logs.count("delivered via smtp to relay-b.test")
            for pair in pairs:
                for acct in pair:
                    acct.stop_io()
        return result
    except Exception as exc:  # report it, keep the other measurements
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        fed.close()


def expiry_pass(messages: int = 100_000, accounts: int = 100) -> dict:
    """Time relay.store.expire's pass over ``messages`` small files in ``accounts`` mailboxes:
    once with a tenth of them old enough to go, once more with nothing to delete."""
    settings = relay_settings.load({"MAIL_DOMAIN": "bench.example.org"})
    now = time.time()
    per_account = messages // accounts
    with tempfile.TemporaryDirectory(prefix="relay-bench-expire-") as tmp:
        accounts_root, mail_root = Path(tmp) / "accounts", Path(tmp) / "mail"
        accounts_root.mkdir()
        started = time.monotonic()
        for a in range(accounts):
            address = f"user{a:05d}@bench.example.org"
            (accounts_root / address).write_text("{SHA512-CRYPT}$6$x$y\n")
            maildir = mail_root / address / "Maildir"
            for sub in ("new", "cur", "tmp"):
                (maildir / sub).mkdir(parents=True)
            for i in range(per_account):
                path = maildir / ("cur" if i % 2 else "new") / f"{i}.bench:2,"
                path.write_bytes(b"x" * 200)
                if i % 10 == 0:  # a tenth is 21 days old
                    old = now - 21 * 86400
                    os.utime(path, (old, old))
        created = time.monotonic() - started
        started = time.monotonic()
        first = expire.run_once(settings, now, accounts_root, mail_root, Path(tmp) / "tokens")
        first_s = time.monotonic() - started
        started = time.monotonic()
        second = expire.run_once(settings, now, accounts_root, mail_root, Path(tmp) / "tokens")
        second_s = time.monotonic() - started
    total = per_account * accounts
    return {"messages": total, "accounts": accounts, "setup_s": round(created, 2),
            "pass_s": round(first_s, 3), "deleted": first.messages_deleted,
            "second_pass_s": round(second_s, 3), "kept": second.messages_kept,
            "us_per_message": round(second_s / total * 1e6, 2)}


def throughput(relay: Relay, senders: int = 8, per_sender: int = 50) -> dict:
    """Encrypted messages (a real gpg-made corpus message) from `senders` accounts at once."""
    template = (CORPUS / "enc_two_pkesk.eml").read_text()
    accounts = [relay.new_account() for _ in range(senders)]
    receiver = relay.new_account()
    # The receiver must exist (first login) before mail to it is accepted.
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    im.login(receiver["email"], receiver["password"])
    peak = [container_memory(relay.name)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], container_memory(relay.name))

    def send(account: dict) -> int:
        import smtplib
        sent = 0
        with smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(),
                              timeout=60) as smtp:
            smtp.login(account["email"], account["password"])
            data = template.replace("{sender}", account["email"]).replace(
                "{recipient}", receiver["email"])
            for n in range(per_sender):
                # each message its own Message-ID: the relay keeps one copy per Message-ID
                unique = re.sub(r"Message-ID: <[^>]*>",
                                f"Message-ID: <bench.{n}.{account['email'].split('@')[0]}@bench.test>",
                                data, count=1)
                smtp.sendmail(account["email"], [receiver["email"]], unique.encode())
                sent += 1
        return sent

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(senders) as pool:
        total = sum(pool.map(send, accounts))
    accepted_s = time.monotonic() - started

    def delivered() -> int:
        im.select("INBOX", readonly=True)
        return len(im.search(None, "ALL")[1][0].split())

    deadline = time.monotonic() + 120
    while delivered() < total and time.monotonic() < deadline:
        time.sleep(0.1)
    delivered_s = time.monotonic() - started
    count = delivered()
    done.set()
    sampler.join()
    im.logout()
    return {"messages": total, "delivered": count,
            "accepted_per_s": round(total / accepted_s, 1),
            "delivered_per_s": round(count / delivered_s, 1),
            "peak_memory_bytes": peak[0]}


def comparator_latency() -> dict:
    """The Delta Chat latency against Debian's stock Dovecot, same Dockerfile otherwise."""
    if docker("image", "inspect", COMPARATOR, check=False).returncode != 0:
        return {"n": 0, "error": f"{COMPARATOR} missing: make image DOVECOT=stock IMAGE={COMPARATOR}"}
    stock = Relay({"MAIL_DOMAIN": "_stock.example.test", **BENCH_ENV}, name="relay-bench-stock",
                  image=COMPARATOR)
    try:
        stock.start().wait_healthy(180)
        return deltachat_latency(stock)
    finally:
        stock.remove()


def print_latency(key: str, r: dict) -> None:
    if not r.get("n"):
        print(f"{key.replace('_', ' '):40} no measurement: {r}")
        return
    extra = "".join(f", {k} {v}" for k, v in r.items() if k.startswith("missed"))
    print(f"{key.replace('_', ' '):40} p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, "
          f"p99 {r['p99_ms']} ms (n={r['n']}{extra})")
    if "split_ms" in r:
        print(f"{'  of which (median ms)':40} " + ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in r["split_ms"].items()))


def print_federation(fed: dict) -> None:
    if "error" in fed:
        print(f"{'federation':40} no measurement: {fed['error']}")
        return
    for path in ("https", "smtp"):
        print_latency(f"federation A->B Delta Chat, {path}", fed[path])


def main() -> int:
    if sys.argv[1:] == ["--federation-only"]:
        # Only the federation figures, merged into an existing results.json.
        fed = federation_latency()
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        results["federation_end_to_end"] = fed
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print_federation(fed)
        return 0
    results: dict = {"image": IMAGE, "machine": {"arch": platform.machine(), "cpus": os.cpu_count()},
                     "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results["expiry_pass"] = expiry_pass()
    relay = Relay({"MAIL_DOMAIN": "_bench.example.test", **BENCH_ENV}, name="relay-bench")
    try:
        results["healthy_after_run_s"] = {"fresh_volume": round(time_to_healthy(relay), 2)}
        time.sleep(20)  # settle: idle memory, not start-up peaks
        results["idle_memory_bytes"] = container_memory(relay.name)
        results["idle_memory_anon_bytes"] = scale.cgroup_memory(relay.name)
        # Settled: the processes the start-up checks spawned (an smtpd per port for the
        # certificate check, showq) have passed Postfix's max_idle (100 s) and exited.
        time.sleep(SETTLED_AFTER_S - 20)
        results["idle_memory_settled_anon_bytes"] = scale.cgroup_memory(relay.name)
        docker("rm", "-f", relay.name)
        results["healthy_after_run_s"]["existing_volume"] = round(time_to_healthy(relay), 2)
        results.update(image_sizes())
        results["filter"] = filter_cost()
        results["account_creation"] = account_creation(relay)
        results["smtp_to_imap_idle"] = smtp_to_idle(relay)
        results["hop_trace"] = hoptrace.trace(relay)
        results["deltachat_end_to_end"] = deltachat_latency(relay)
        results["throughput"] = throughput(relay)
        # real encrypted messages: Delta Chat's and the gpg-made corpus's, stored compressed
        results["stored_mail"] = scale.stored_sizes(relay)
    finally:
        relay.remove()
    results["scale_2000"] = scale.run(2000)
    results["deltachat_end_to_end_stock_dovecot"] = comparator_latency()
    results["federation_end_to_end"] = federation_latency()
    ours = results["deltachat_end_to_end"].get("p50_ms")
    stock = results["deltachat_end_to_end_stock_dovecot"].get("p50_ms")
    if ours and stock:
        results["stock_over_ours_p50"] = round(stock / ours, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    mib = 1024 * 1024
    print(f"{'measure':40} value")
    print(f"{'image size / above base':40} {results['image_bytes'] / mib:.0f} MiB / "
          f"{results['above_base_bytes'] / mib:.0f} MiB")
    print(f"{'idle memory (whole container)':40} {results['idle_memory_bytes'] / mib:.0f} MiB")
    if results["idle_memory_anon_bytes"]:
        print(f"{'idle memory without page cache':40} {results['idle_memory_anon_bytes'] / mib:.0f} MiB "
              f"(20 s after healthy), {results['idle_memory_settled_anon_bytes'] / mib:.0f} MiB "
              f"({SETTLED_AFTER_S} s)")
    for key, value in results["healthy_after_run_s"].items():
        print(f"{'docker run -> healthy, ' + key.replace('_', ' '):40} {value} s")
    e = results["expiry_pass"]
    print(f"{'expiry pass over ' + str(e['messages']) + ' messages':40} {e['pass_s']} s "
          f"({e['deleted']} deleted); again {e['second_pass_s']} s, "
          f"{e['us_per_message']} us per message")
    for key, value in results["filter"].items():
        print(f"{'filter ' + key:40} {value}")
    t = results["throughput"]
    print(f"{'throughput, 8 senders (accepted/delivered)':40} {t['accepted_per_s']} / "
          f"{t['delivered_per_s']} msg/s ({t['delivered']} of {t['messages']} delivered)")
    print(f"{'peak memory under that load':40} {t['peak_memory_bytes'] / mib:.0f} MiB")
    for key in ("account_creation", "smtp_to_imap_idle", "deltachat_end_to_end",
                "deltachat_end_to_end_stock_dovecot"):
        print_latency(key, results[key])
    print_federation(results["federation_end_to_end"])
    hops = results["hop_trace"]
    print(f"{'one message, ms after DATA (median)':40} " + ", ".join(
        f"{name} {hops[name]}" for name in hoptrace.HOPS if name in hops))
    stored = results["stored_mail"]
    if stored["bytes_uncompressed"]:
        saved = 1 - stored["bytes_on_disk"] / stored["bytes_uncompressed"]
        print(f"{'stored mail, compressed':40} {stored['bytes_on_disk']} of "
              f"{stored['bytes_uncompressed']} bytes ({saved:.0%} saved, "
              f"{stored['messages']} messages)")
    print("\n".join(scale.summary(results["scale_2000"])))
    if "stock_over_ours_p50" in results:
        print(f"{'stock Dovecot p50 / ours p50':40} {results['stock_over_ours_p50']}x")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

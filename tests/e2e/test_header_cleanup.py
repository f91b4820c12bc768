"""What reaches a mailbox carries none of the headers SPEC §3 removes."""

import smtplib

from relaytest import insecure_tls, securejoin_request, submit, wait_for

REVEALING = (b"Received: from laptop.home (192-0-2-7.isp.example [192.0.2.7])\r\n"
             b"X-Originating-IP: [192.0.2.7]\r\n"
             b"X-Mailer: SomeMailer 1.2.3\r\n"
             b"User-Agent: SomeAgent/4.5\r\n")


def delivered(relay, address):
    wait_for(lambda: relay.mailbox_files(address), 30, what="delivery")
    name = relay.mailbox_files(address)[0]
    # stored gzip-compressed (zlib_save); zcat -f reads both forms
    out = relay.exec("sh", "-c", f"zcat -f /data/mail/{address}/Maildir/new/{name} "
                                 f"/data/mail/{address}/Maildir/cur/{name} 2>/dev/null; true")
    head = out.stdout.split("\n\n", 1)[0].replace("\r", "")
    return [line.split(":", 1)[0].lower() for line in head.split("\n") if line and line[0] not in " \t"], head


def test_submitted_mail_loses_revealing_headers_and_subject(relay):
    alice, bob = relay.new_account(), relay.new_account()
    submit(relay, bob, [bob["email"]], securejoin_request(bob["email"], bob["email"]))  # create bob
    wait_for(lambda: relay.mailbox_files(bob["email"]), 30, what="bob's mailbox")
    relay.exec("sh", "-c", f"rm -f /data/mail/{bob['email']}/Maildir/new/*")
    msg = securejoin_request(alice["email"], bob["email"])
    submit(relay, alice, [bob["email"]], REVEALING + msg)
    names, head = delivered(relay, bob["email"])
    for header in ("received", "x-originating-ip", "x-mailer", "user-agent"):
        assert header not in names, head
    assert "Subject: [...]" in head and "Message from" not in head
    # OpenDKIM signed it on the way out; the local delivery path removes the signature
    # (issue 17 §4), the federation path keeps it (tests/federation: the peer verifies it)
    assert "dkim-signature" not in names, head
    assert "authentication-results" not in names, head
    assert "192.0.2.7" not in head


def test_incoming_mail_loses_trace_and_authentication_headers(relay):
    bob = relay.new_account()
    submit(relay, bob, [bob["email"]], securejoin_request(bob["email"], bob["email"]))
    wait_for(lambda: relay.mailbox_files(bob["email"]), 30, what="bob's mailbox")
    relay.exec("sh", "-c", f"rm -f /data/mail/{bob['email']}/Maildir/new/*")
    sender = "carol@[192.0.2.1]"  # an IP-literal relay: exempt from the DKIM rule
    extra = (b"Received: from mx.sender.example by mx.sender.example\r\n"
             b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=x; h=from; bh=AA; b=AA\r\n"
             b"Authentication-Results: mx.sender.example; dkim=pass\r\n")
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=30) as s:
        s.ehlo("mx.sender.example")
        s.starttls(context=insecure_tls())  # required on port 25
        s.ehlo("mx.sender.example")
        s.sendmail(sender, [bob["email"]], extra + securejoin_request(sender, bob["email"]))
    names, head = delivered(relay, bob["email"])
    for header in ("received", "dkim-signature", "authentication-results"):
        assert header not in names, head

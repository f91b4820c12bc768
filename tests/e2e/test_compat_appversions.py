"""The operator's app-version index as IMAP METADATA (issue 17 §4): served on one line
when given, NIL when not; a bad file stops the container with one line."""

import json

from conftest import APPVERSIONS
from relaytest import IMAGE, Relay, get_metadata, imap_login, wait_for

KEY = "/shared/vendor/deltachat/appversions"


def test_served_on_one_line(literal_relays):
    relay = literal_relays["ipv4"]  # started with APPVERSIONS_FILE (tests/e2e/conftest.py)
    im = imap_login(relay, relay.new_account())  # also: a login as user@[192.0.2.1]
    value = get_metadata(im, '""', KEY)[KEY]
    im.logout()
    assert value is not None and "\n" not in value and ": " not in value
    assert json.loads(value) == APPVERSIONS


def test_nil_without_a_file(relay):
    im = imap_login(relay, relay.new_account())
    assert get_metadata(im, '""', KEY)[KEY] is None
    im.logout()


def test_bad_file_stops_the_container_with_one_line(tmp_path):
    bad = tmp_path / "appversions.json"
    bad.write_text(json.dumps({"clients": [{"clientId": "deltachat", "sources": [
        {"sourceId": "gplay", "versionInteger": "754", "versionString": "2.57.0",
         "downloadUrl": "https://download.delta.chat/x.apk"}]}]}))
    bad.chmod(0o644)
    r = Relay({"MAIL_DOMAIN": "_bad.example.test", "TLS_MODE": "self-signed",
               "APPVERSIONS_FILE": "/etc/appversions.json"},
              extra_args=("-v", f"{bad}:/etc/appversions.json:ro"), image=IMAGE)
    try:
        r.start()
        wait_for(lambda: not r.state()["Running"], 60, 0.5, "the container stopped")
        assert r.state()["ExitCode"] != 0
        lines = [line for line in r.logs().splitlines() if "APPVERSIONS_FILE" in line]
        assert len(lines) == 1, r.logs()[-2000:]
        assert "versionInteger" in lines[0] and "/etc/appversions.json" in lines[0], lines
    finally:
        r.remove()

"""Certificate logic that needs no daemon: pair validation, the ACME back-off,
the renewal window."""

import subprocess
import time

import pytest

from relay.certs import acme
from relay.certs import files as certs


def make_cert(tmp_path, name="chat.example.org", days=30, key=None, stem="c"):
    key = key or tmp_path / f"{stem}.key"
    cert = tmp_path / f"{stem}.pem"
    args = ["openssl", "req", "-x509", "-nodes", "-days", str(days), "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name}", "-out", str(cert)]
    if key.exists():
        args += ["-key", str(key)]
    else:
        args += ["-newkey", "rsa:2048", "-keyout", str(key)]
    subprocess.run(args, check=True, capture_output=True)
    return cert, key


def test_a_matching_pair_is_valid(tmp_path):
    cert, key = make_cert(tmp_path)
    assert certs.validate_pair(cert, key, ["DNS:chat.example.org"]) is None


def test_a_foreign_key_is_refused(tmp_path):
    cert, _ = make_cert(tmp_path, stem="a")
    _, other = make_cert(tmp_path, stem="b")
    assert "does not belong to the key" in certs.validate_pair(cert, other)


def test_missing_names_are_reported(tmp_path):
    cert, key = make_cert(tmp_path)
    problem = certs.validate_pair(cert, key, ["DNS:chat.example.org", "DNS:mta-sts.chat.example.org"])
    assert problem.endswith("does not name DNS:mta-sts.chat.example.org")


def test_garbage_is_refused_not_raised(tmp_path):
    cert, key = make_cert(tmp_path)
    cert.write_text("not a certificate")
    assert certs.validate_pair(cert, key).startswith("unreadable certificate or key")


def test_openssls_complaint_is_one_line(tmp_path):
    cert, key = make_cert(tmp_path)
    cert.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert "\n" not in certs.validate_pair(cert, key)


def test_an_extra_ca_file_without_a_certificate_stops_the_start(tmp_path, monkeypatch):
    monkeypatch.setattr(certs.paths, "CA_BUNDLE", tmp_path / "ca.pem")
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ValueError, match="EXTRA_CA_FILE=.*holds no PEM certificate"):
        certs.write_ca_bundle(str(tmp_path / "passwd"))
    assert not (tmp_path / "ca.pem").exists()
    cert, _ = make_cert(tmp_path)
    certs.write_ca_bundle(str(cert))
    assert (tmp_path / "ca.pem").read_text().endswith(cert.read_text())


def test_dates_and_fingerprint(tmp_path):
    cert, _ = make_cert(tmp_path, days=30)
    lifetime = certs.not_after(cert) - certs.not_before(cert)
    assert abs(lifetime - 30 * 86400) < 5
    assert abs(certs.not_before(cert) - time.time()) < 120
    assert len(certs.fingerprint(cert)) == 64
    cert2, _ = make_cert(tmp_path, stem="d")
    assert certs.fingerprint(cert) != certs.fingerprint(cert2)


@pytest.mark.parametrize("failures,cheap,delay", [
    (1, True, 30), (2, True, 60), (3, True, 120), (10, True, 900),
    (1, False, 600), (2, False, 1200), (6, False, 19200), (7, False, 6 * 3600), (30, False, 6 * 3600),
])
def test_backoff_grows_and_is_capped(failures, cheap, delay):
    assert acme.backoff(failures, cheap) == delay


def test_failures_are_remembered_on_the_volume(tmp_path, monkeypatch):
    monkeypatch.setattr(acme, "STATE", tmp_path / "state.json")
    state = acme.State.load()
    assert state.failures == 0
    acme.record_failure(state, acme.AcmeError("ca down", cheap=True), now=1000.0)
    again = acme.State.load()
    assert (again.failures, again.next_attempt, again.last_error) == (1, 1030.0, "ca down")
    acme.record_failure(again, acme.AcmeError("order failed", cheap=False), now=2000.0)
    assert acme.State.load().next_attempt == 2000.0 + 1200
    acme.record_success()
    assert acme.State.load().failures == 0


def test_the_first_failure_on_a_fresh_volume_is_remembered(tmp_path, monkeypatch):
    # A fresh volume has no /data/tls/acme yet when the name checks fail (DNS not ready), the
    # usual state of a new relay: the failure must still be saved, so the back-off holds.
    monkeypatch.setattr(acme, "STATE", tmp_path / "acme" / "state.json")
    acme.record_failure(acme.State.load(), acme.AcmeError("no A record", cheap=True), now=1000.0)
    assert acme.State.load().next_attempt == 1030.0
    assert (tmp_path / "acme").stat().st_mode & 0o777 == 0o700


def test_a_corrupt_state_file_means_no_back_off(tmp_path, monkeypatch):
    monkeypatch.setattr(acme, "STATE", tmp_path / "state.json")
    (tmp_path / "state.json").write_text("{not json")
    assert acme.State.load().next_attempt == 0.0

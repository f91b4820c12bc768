"""relay.certs.watch, the state machine of relay-certs, with fakes for the files, the
daemons' reloads and the ports: when ACME is due, how a changed external pair is taken,
and how a switch proves (or fails to prove) that every port serves the new certificate.
Time is a fake clock: nothing here waits."""

import logging
import os
from types import SimpleNamespace

import pytest

from relay.certs import acme
from relay.certs import files as certs
from relay.certs import watch

DAY = 86400.0


class FakeTime:
    """The parts of the time module watch uses; sleep() moves the clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(watch, "time", fake)
    return fake


class Daemons:
    """Postfix, Dovecot and nginx as the ports see them: each reload makes the served
    certificate the installed one, ``lag`` seconds later, from reload number ``works_from``
    on (0: never)."""

    def __init__(self, clock, lag=0.0, works_from=1, stuck=()):
        self.clock, self.lag, self.works_from, self.stuck = clock, lag, works_from, set(stuck)
        self.installed = "old"
        self.serving = {name: "old" for name in watch.ENDPOINTS}
        self.reloads = 0
        self.changed_at = None

    def install(self, cert, key):
        self.installed = f"fp-of-{cert.name}"

    def reload(self):
        self.reloads += 1
        if self.works_from and self.reloads >= self.works_from:
            self.changed_at = self.clock.now + self.lag

    def served(self):
        if self.changed_at is not None and self.clock.now >= self.changed_at:
            for name in self.serving:
                if name not in self.stuck:
                    self.serving[name] = self.installed
        return dict(self.serving)


@pytest.fixture
def daemons(monkeypatch, clock):
    def make(**kwargs):
        d = Daemons(clock, **kwargs)
        monkeypatch.setattr(certs, "install", d.install)
        monkeypatch.setattr(certs, "fingerprint", lambda path: d.installed)
        monkeypatch.setattr(watch, "reload_daemons", d.reload)
        monkeypatch.setattr(watch, "served", d.served)
        return d
    return make


# --- switch_to and make_served ----------------------------------------------------------

def test_a_switch_that_takes_at_once(daemons, tmp_path):
    d = daemons()
    assert watch.switch_to(tmp_path / "new.pem", tmp_path / "new.key", "test") is True
    assert d.reloads == 1
    assert set(d.serving.values()) == {"fp-of-new.pem"}


def test_a_certificate_that_shows_late_is_waited_for(daemons, tmp_path):
    d = daemons(lag=watch.SERVE_WAIT / 2)
    assert watch.switch_to(tmp_path / "new.pem", tmp_path / "new.key", "test") is True
    assert d.reloads == 1  # polled, not reloaded again


def test_a_reload_that_did_not_take_is_retried(daemons, tmp_path, caplog):
    d = daemons(works_from=2)
    with caplog.at_level(logging.WARNING, logger="relay-certs"):
        assert watch.switch_to(tmp_path / "new.pem", tmp_path / "new.key", "test") is True
    assert d.reloads == 2
    assert [r.getMessage()[:19] for r in caplog.records] == ["after reload 1 of 3"]


def test_a_port_that_never_takes_it_is_reported(daemons, tmp_path, caplog):
    stuck = sorted(watch.ENDPOINTS)[0]
    d = daemons(stuck=[stuck])
    with caplog.at_level(logging.WARNING, logger="relay-certs"):
        assert watch.switch_to(tmp_path / "new.pem", tmp_path / "new.key", "test") is False
    assert d.reloads == watch.RELOAD_TRIES
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f"CERTIFICATE NOT SERVED: {stuck}")
    assert watch.make_served("fp-of-new.pem") == {stuck: "old"}


def test_verify_reloads_only_when_a_port_serves_another_certificate(daemons, monkeypatch):
    d = daemons()
    d.installed = "old"
    watch.verify()
    assert d.reloads == 0
    d.installed = "new"  # e.g. relayctl installed one while a daemon was down
    watch.verify()
    assert d.reloads == 1 and set(d.serving.values()) == {"new"}
    monkeypatch.setattr(watch, "installed_fingerprint", lambda: None)
    watch.verify(force_reload=True)  # nothing installed: nothing to compare with
    assert d.reloads == 1


# --- ACME ---------------------------------------------------------------------------------

@pytest.fixture
def acme_dir(monkeypatch, tmp_path):
    """certs.ACME in tmp_path, and a chain whose dates are given by ``issued``."""
    monkeypatch.setattr(certs, "ACME", tmp_path)
    monkeypatch.setattr(watch, "_renew_at", (-1.0, 0.0))
    dates = {}
    monkeypatch.setattr(certs, "acme_ready", lambda: (tmp_path / "fullchain.pem").exists())
    monkeypatch.setattr(certs, "not_before", lambda path: dates["start"])
    monkeypatch.setattr(certs, "not_after", lambda path: dates["end"])

    def issued(start, days, mtime):
        dates.update(start=start, end=start + days * DAY)
        chain = tmp_path / "fullchain.pem"
        chain.write_text("chain")
        os.utime(chain, (mtime, mtime))
        return chain
    return issued


def test_acme_is_due_without_a_certificate(acme_dir):
    assert watch.acme_due(now=0.0) is True


def test_acme_is_due_when_a_third_of_the_lifetime_is_left(acme_dir):
    acme_dir(start=0.0, days=90, mtime=100)
    assert watch.acme_due(now=59 * DAY) is False
    assert watch.acme_due(now=60 * DAY) is True  # 30 of 90 days left (Let's Encrypt)
    assert watch.acme_due(now=61 * DAY) is True


def test_a_new_chain_moves_the_renewal_date(acme_dir):
    acme_dir(start=0.0, days=90, mtime=100)
    assert watch.acme_due(now=70 * DAY) is True
    acme_dir(start=69 * DAY, days=90, mtime=200)  # renewed: a new file
    assert watch.acme_due(now=70 * DAY) is False
    assert watch.acme_due(now=129 * DAY) is True


def test_an_unusable_chain_is_due(acme_dir, monkeypatch):
    acme_dir(start=0.0, days=90, mtime=100)
    monkeypatch.setattr(certs, "acme_ready", lambda: False)  # e.g. the key does not match
    assert watch.acme_due(now=1 * DAY) is True


def test_acme_step_obtains_when_due_and_installs_what_is_new(monkeypatch, tmp_path):
    monkeypatch.setattr(certs, "ACME", tmp_path)
    state = SimpleNamespace(due=True, ready=False, chain_fp="a", installed="b",
                            attempts=[], switches=[])
    monkeypatch.setattr(watch, "acme_due", lambda: state.due)
    monkeypatch.setattr(acme, "attempt", lambda values, force=False: state.attempts.append(force))
    monkeypatch.setattr(certs, "acme_ready", lambda: state.ready)
    monkeypatch.setattr(certs, "fingerprint", lambda path: state.chain_fp)
    monkeypatch.setattr(watch, "installed_fingerprint", lambda: state.installed)
    monkeypatch.setattr(watch, "switch_to", lambda c, k, why: state.switches.append((c.name, k.name)))
    watch.acme_step(None)  # due, but the attempt brought nothing
    assert state.attempts == [False] and state.switches == []
    state.ready = True
    watch.acme_step(None)
    assert state.switches == [("fullchain.pem", "privkey.pem")]
    state.due, state.installed = False, "a"  # installed and not due: nothing to do
    watch.acme_step(None)
    assert len(state.attempts) == 2 and len(state.switches) == 1
    watch.acme_step(None, force=True)  # relayctl certs renew --force
    assert state.attempts[-1] is True


# --- external files -------------------------------------------------------------------------

@pytest.fixture
def external(monkeypatch, tmp_path):
    """An ExternalWatch on real files; validation says a pair is bad when the key file
    says so, and switch_to records what it was asked to install."""
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_text("cert 1")
    key.write_text("key 1")
    switched = []
    monkeypatch.setattr(certs, "validate_pair", lambda c, k: "bad pair" if "bad" in k.read_text() else None)
    monkeypatch.setattr(watch, "switch_to", lambda c, k, why: switched.append(c.read_text()))
    w = watch.ExternalWatch(SimpleNamespace(tls_cert_file=str(cert), tls_key_file=str(key)))
    return SimpleNamespace(watch=w, cert=cert, key=key, switched=switched)


def test_unchanged_files_are_not_installed_again(external):
    for _ in range(3):
        external.watch.step()
    assert external.switched == []  # installed at start by certs.prepare


def test_a_changed_valid_pair_is_installed_once(external):
    external.cert.write_text("cert 2")
    external.key.write_text("key 2")
    external.watch.step()
    external.watch.step()
    assert external.switched == ["cert 2"]


def test_a_half_written_pair_waits_for_its_key(external, caplog):
    external.cert.write_text("cert 2")
    external.key.write_text("bad: still the old key")
    with caplog.at_level(logging.ERROR, logger="relay-certs"):
        external.watch.step()
        external.watch.step()  # the same bad pair: said once
    assert external.switched == []
    assert [r.getMessage() for r in caplog.records] == [
        "not installing the changed external certificate: bad pair"]
    external.key.write_text("key 2")
    external.watch.step()
    assert external.switched == ["cert 2"]


def test_unreadable_files_keep_the_installed_certificate(external, caplog):
    external.key.unlink()
    with caplog.at_level(logging.ERROR, logger="relay-certs"):
        external.watch.step()
        external.watch.step()
    assert external.switched == []
    assert len(caplog.records) == 1 and "cannot read TLS_CERT_FILE/TLS_KEY_FILE" in \
        caplog.records[0].getMessage()
    external.key.write_text("key 2")
    external.watch.step()  # readable again: validated and installed
    assert external.switched == ["cert 1"]


def test_a_watch_started_on_unreadable_files_installs_them_once_readable(monkeypatch, tmp_path):
    switched = []
    monkeypatch.setattr(certs, "validate_pair", lambda c, k: None)
    monkeypatch.setattr(watch, "switch_to", lambda c, k, why: switched.append(why))
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    w = watch.ExternalWatch(SimpleNamespace(tls_cert_file=str(cert), tls_key_file=str(key)))
    w.step()
    cert.write_text("c")
    key.write_text("k")
    w.step()
    assert switched == [f"{cert} changed"]


# --- relayctl certs: what the operator reads ---------------------------------------

def test_relayctl_certs_renew_json_is_json_when_there_is_nothing_to_renew(monkeypatch, capsys):
    import json

    from relay.ops import relayctl
    monkeypatch.setenv("MAIL_DOMAIN", "localhost")
    monkeypatch.setenv("TLS_MODE", "self-signed")
    assert relayctl.main(["certs", "renew", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "ok": False, "message": "TLS_MODE=self-signed: nothing to renew"}
    assert relayctl.main(["certs", "renew"]) == 1
    assert capsys.readouterr().out == "TLS_MODE=self-signed: nothing to renew\n"


def test_relayctl_certs_prints_names_and_ports_in_words(monkeypatch, capsys):
    from relay.ops import relayctl
    monkeypatch.setenv("MAIL_DOMAIN", "localhost")
    monkeypatch.setattr(watch, "status", lambda values: {
        "mode": "self-signed", "names": ["DNS:localhost", "IP:127.0.0.1"],
        "served": {"25 (SMTP STARTTLS)": "ok", "443 (HTTPS)": "an older certificate"}})
    assert relayctl.main(["certs"]) == 0
    assert capsys.readouterr().out == (
        "mode: self-signed\nnames: DNS:localhost, IP:127.0.0.1\nserved:\n"
        "  25 (SMTP STARTTLS): ok\n  443 (HTTPS): an older certificate\n")

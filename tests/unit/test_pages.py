"""The web pages as rendered for each registration mode and with the operator's
details, relayctl status's text, and the doctor's privacy check."""

import pytest

from relay import paths
from relay import settings as settings_mod
from relay.boot import pages
from relay.ops import doctor, status


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REGISTRATION_OVERRIDE", tmp_path / "registration")
    monkeypatch.setattr(paths, "NOCREATE_FLAG", tmp_path / "account-creation-off")
    monkeypatch.setattr(pages, "qr_png", lambda text: b"\x89PNG" + text.encode())
    return tmp_path


def rendered(tmp_path, **env):
    values = settings_mod.load({"MAIL_DOMAIN": "chat.example.org", **env})
    written = pages.render(values, root=tmp_path / "out")
    assert all(str(p.relative_to(tmp_path / "out")).startswith("var/www/") for p in written)
    www = tmp_path / "out/var/www/chatmail"
    return (www / "index.html").read_text(), (www / "privacy.html").read_text()


@pytest.mark.parametrize("mode,qr,text", [
    ("open", True, "an account in seconds"),
    ("closed", False, "does not accept new accounts"),
    ("invite", False, "ask the operator for an invite"),
])
def test_home_page_shows_the_mode(state, mode, qr, text):
    index, _ = rendered(state, REGISTRATION=mode)
    assert ("data:image/png;base64," in index) == qr
    assert ("dcaccount:https://chat.example.org/new" in index) == qr
    assert text in index


def test_operator_details_on_both_pages_escaped(state):
    index, privacy = rendered(
        state, PRIVACY_POSTAL=r"Jane <Doe> & Co\nMain Street 1\n12345 Town",
        PRIVACY_MAIL="privacy@example.org", PRIVACY_PDO=r"Dr. Data\nOffice 2",
        PRIVACY_SUPERVISOR="The Commissioner, Capital City", ADMIN_EMAIL="admin@example.org")
    for page in (index, privacy):
        assert "Jane &lt;Doe&gt; &amp; Co<br>" in page and "Main Street 1<br>" in page
        assert "privacy@example.org" in page and "admin@example.org" not in page
    assert "Dr. Data<br>" in privacy and "The Commissioner, Capital City" in privacy


def test_admin_email_is_the_privacy_contact_when_no_privacy_mail(state):
    index, privacy = rendered(state, ADMIN_EMAIL="admin@example.org")
    assert 'href="mailto:admin@example.org"' in privacy and "admin@example.org" in index
    _, bare = rendered(state)
    assert "has not published contact details" in bare


def test_privacy_check_in_doctor():
    load = settings_mod.load
    public = doctor.check_privacy_contact(load({"MAIL_DOMAIN": "chat.example.org"}))
    assert public.verdict == "warn" and "names no one" in public.detail
    assert doctor.check_privacy_contact(load({"MAIL_DOMAIN": "_chat.example.test"})).verdict == "skip"
    full = load({"MAIL_DOMAIN": "chat.example.org", "PRIVACY_POSTAL": "Jane, Town",
                 "ADMIN_EMAIL": "a@example.org"})
    assert doctor.check_privacy_contact(full).verdict == "ok"


@pytest.mark.parametrize("text", ["a\x07b", "x" * 501])
def test_free_text_refused(text):
    with pytest.raises(settings_mod.SettingError, match="PRIVACY_PDO"):
        settings_mod.load({"MAIL_DOMAIN": "chat.example.org", "PRIVACY_PDO": text})


def test_status_text_has_a_line_per_service_and_no_python_reprs():
    data = {"domain": "chat.example.org", "services": {"dovecot": "RUNNING", "nginx": "FATAL"},
            "accounts": 3, "account_creation": "on", "registration": "open",
            "registration_source": "REGISTRATION=open", "invites_valid": 0,
            "disabled_accounts": 1, "queue": 2, "push_accounts": 1, "push_pending": 0,
            "disk_free_bytes": 5 * 1024**3, "dkim_record_published": "ok",
            "certificate": {"mode": "acme", "names": ["chat.example.org"], "days_left": 60,
                            "not_after": "2027-01-30 00:00 UTC", "source": "acme",
                            "served_everywhere": True, "acme": {"failures": 0}},
            "health": {"smtp": None, "imap": "TimeoutError: timed out", "https": None}}
    text = status.summary(data)
    lines = text.splitlines()
    assert "  dovecot       running" in lines and "  nginx         fatal" in lines
    assert "  smtp          ok" in lines and "  imap          FAILED: TimeoutError: timed out" in lines
    assert "Services: 1 of 2 running" in lines
    assert "Disk free:    5.0 GiB on /data" in lines
    assert "None" not in text and "{" not in text and "'" not in text

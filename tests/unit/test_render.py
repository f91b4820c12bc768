"""Every template renders with StrictUndefined from the real start-up context."""

import pytest

from relay.boot import render
from relay import settings
from relay.boot import startup


@pytest.fixture
def context(monkeypatch):
    monkeypatch.setattr(startup.pwd, "getpwnam", lambda name: type("pw", (), {"pw_uid": 205}))
    monkeypatch.setattr(startup, "qr_png", lambda text: b"\x89PNG")
    values = settings.load({"MAIL_DOMAIN": "chat.example.org", "MAX_MESSAGE_SIZE": "12M"})
    return startup.context(values, ipv6=False)


def test_all_templates_render(tmp_path, context):
    written = render.render_all(context, root=tmp_path)
    names = {str(p.relative_to(tmp_path)) for p in written}
    for expected in ("etc/postfix/main.cf", "etc/postfix/master.cf", "etc/dovecot/dovecot.conf",
                     "etc/nginx/nginx.conf", "etc/supervisor/supervisord.conf",
                     "etc/opendkim.conf", "var/www/chatmail/index.html"):
        assert expected in names
    main_cf = (tmp_path / "etc/postfix/main.cf").read_text()
    assert "message_size_limit = 12582912" in main_cf
    assert "inet_protocols = ipv4" in main_cf
    assert "172.16" not in main_cf and "10.0.0.0" not in main_cf


def test_ipv6_listeners_only_when_available(tmp_path, context):
    render.render_all(context, root=tmp_path)
    assert "[::]" not in (tmp_path / "etc/nginx/nginx.conf").read_text()
    render.render_all({**context, "ipv6": True}, root=tmp_path)
    assert "listen [::]:443" in (tmp_path / "etc/nginx/nginx.conf").read_text()
    assert "inet_protocols = all" in (tmp_path / "etc/postfix/main.cf").read_text()


def test_undefined_variable_is_an_error(tmp_path, context):
    del context["mail_domain"]
    with pytest.raises(Exception, match="mail_domain"):
        render.render_all(context, root=tmp_path)


def test_turn_config_has_one_external_address_and_the_relay_range(tmp_path, monkeypatch):
    monkeypatch.setattr(startup.pwd, "getpwnam", lambda name: type("pw", (), {"pw_uid": 205}))
    monkeypatch.setattr(startup, "qr_png", lambda text: b"\x89PNG")
    values = settings.load({"MAIL_DOMAIN": "chat.example.org", "TURN_RELAY_PORTS": "50000-50009",
                            "PUBLIC_ADDRESSES": "2001:db8::5, 203.0.113.5, 203.0.113.6"})
    render.render_all(startup.context(values, ipv6=False, turn_secret="s3cret"), root=tmp_path)
    conf = (tmp_path / "etc/turnserver.conf").read_text().splitlines()
    assert [line for line in conf if line.startswith("external-ip")] == ["external-ip=203.0.113.5"]
    assert {"min-port=50000", "max-port=50009", "total-quota=10", "realm=chat.example.org",
            "static-auth-secret=s3cret", "use-auth-secret"} <= set(conf)
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in conf
    dovecot = (tmp_path / "etc/dovecot/dovecot.conf").read_text()
    assert "imap_capability = +XCHATMAIL XDELTAPUSH" in dovecot
    assert "mail_server_admin" not in dovecot  # no ADMIN_EMAIL
    supervisor = (tmp_path / "etc/supervisor/supervisord.conf").read_text()
    assert "[program:coturn]" in supervisor and "[program:relay-metadata]" in supervisor
    off = settings.load({"MAIL_DOMAIN": "chat.example.org", "TURN": "off"})
    render.render_all(startup.context(off, ipv6=False), root=tmp_path)
    assert "[program:coturn]" not in (tmp_path / "etc/supervisor/supervisord.conf").read_text()


def test_image_links_every_rendered_path_into_run(tmp_path, context):
    """At build time each mirrored path becomes a link to the file start-up renders."""
    root, rendered = tmp_path / "root", tmp_path / "run"
    (root / "etc/postfix").mkdir(parents=True)
    (root / "etc/postfix/master.cf").write_text("from the package\n")
    links = render.link_all(rendered=rendered, root=root)
    render.render_all(context, root=rendered)
    assert root / "etc/postfix/master.cf" in links
    for link in links:
        assert link.is_symlink() and link.resolve().is_file(), link
    assert "message_size_limit" in (root / "etc/postfix/main.cf").read_text()
    assert "from the package" not in (root / "etc/postfix/master.cf").read_text()


def test_mailbox_notify_service_only_where_dovecot_has_it(tmp_path, context):
    """The comparator image (Debian's Dovecot as is) has no mailbox-notify binary: its
    configuration must not name one (Dovecot would refuse to start)."""
    render.render_all({**context, "mailbox_notify": True}, root=tmp_path)
    assert "service mailbox-notify {" in (tmp_path / "etc/dovecot/dovecot.conf").read_text()
    render.render_all({**context, "mailbox_notify": False}, root=tmp_path)
    conf = (tmp_path / "etc/dovecot/dovecot.conf").read_text()
    assert "service mailbox-notify" not in conf and "executable = mailbox-notify" not in conf

"""Every template renders with StrictUndefined from the real start-up context."""

import pytest

from relay import render, settings, startup


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

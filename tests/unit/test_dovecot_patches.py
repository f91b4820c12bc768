"""image/dovecot/: every patch is applied, in the order of ``series``, and carries its DEP-3
description; mailbox-notify.patch comes after the patch it builds on."""

from relaytest import ROOT

PATCHES = ROOT / "image" / "dovecot"


def series() -> list[str]:
    return [line.strip() for line in (PATCHES / "series").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_series_names_every_patch_once():
    listed = series()
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(p.name for p in PATCHES.glob("*.patch"))


def test_mailbox_notify_after_the_delay_patch_it_builds_on():
    listed = series()
    assert listed.index("no-idle-notify-delay.patch") < listed.index("mailbox-notify.patch")


def test_every_patch_has_a_description_and_is_not_forwarded_silently():
    for name in series():
        head = (PATCHES / name).read_text().split("\n---\n", 1)[0]
        assert head.startswith("Description: "), name
        assert "Forwarded:" in head, name

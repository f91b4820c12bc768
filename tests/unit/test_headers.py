from relay.filter.headers import replace_header


def test_replaces_folded_subject_in_place():
    raw = b"From: a@x\r\nSubject: secret\r\n  more secret\r\nTo: b@y\r\n\r\nSubject: body stays\r\n"
    assert replace_header(raw, b"Subject", b"[...]") == \
        b"From: a@x\r\nSubject: [...]\r\nTo: b@y\r\n\r\nSubject: body stays\r\n"


def test_case_insensitive_and_duplicates_collapse():
    raw = b"subject: one\nFrom: a@x\nSUBJECT: two\n\nbody\n"
    assert replace_header(raw, b"Subject", b"[...]") == b"Subject: [...]\nFrom: a@x\n\nbody\n"


def test_without_subject_unchanged():
    raw = b"From: a@x\r\n\r\nbody"
    assert replace_header(raw, b"Subject", b"[...]") == raw


def test_does_not_touch_similar_names():
    raw = b"Subject-Extra: keep\r\nSubject: x\r\n\r\n"
    assert replace_header(raw, b"Subject", b"[...]") == b"Subject-Extra: keep\r\nSubject: [...]\r\n\r\n"

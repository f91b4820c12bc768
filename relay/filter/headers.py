"""Byte-level header edits on a raw message, leaving everything else untouched."""

from __future__ import annotations

import re

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def replace_header(data: bytes, name: bytes, value: bytes) -> bytes:
    """Replace every ``name:`` header (with its folded lines) by one ``name: value``
    at the place of the first; a message without such a header is returned as is."""
    match = _HEADER_END.search(data)
    head, rest = (data[:match.start()], data[match.start():]) if match else (data, b"")
    lines = head.split(b"\n")
    out: list[bytes] = []
    prefix = name.lower() + b":"
    replaced = skipping = False
    for line in lines:
        if skipping and line[:1] in (b" ", b"\t"):
            continue  # a folded continuation of the header we drop
        skipping = line.lower().startswith(prefix)
        if skipping:
            if not replaced:
                eol = b"\r" if line.endswith(b"\r") else b""
                out.append(name + b": " + value + eol)
                replaced = True
            continue
        out.append(line)
    return b"\n".join(out) + rest

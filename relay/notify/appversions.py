"""The app-version index: an operator's JSON file, served as IMAP METADATA.

Delta Chat reads ``/shared/vendor/deltachat/appversions`` to tell its users
that a newer version exists (chatmail/core PR #8557). The reference relay ships
the file in its package (chatmaild ``defaults/appversions.json``) and serves it
re-serialised on one line, NIL when there is none. Here the operator provides
it: ``APPVERSIONS_FILE`` (default ``/data/appversions.json``; a missing file at
the default path means "none"). It is checked once at start, with the rules the
reference's own test holds its file to (``test_appversions.py``), because
Delta Chat "drops the whole payload of a relay if a single value has an
unexpected type". A bad file stops the container with one line saying where::

    {"clients": [{"clientId": "deltachat",
                  "sources": [{"sourceId": "gplay", "versionInteger": 754,
                               "versionString": "2.57.0",
                               "downloadUrl": "https://download.delta.chat/..."}]}]}

The checked index is written compact (one line) to ``paths.APPVERSIONS_SERVED``,
where relay.notify.metadata reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay import paths

DEFAULT = "/data/appversions.json"
CLIENT_KEYS = {"clientId", "sources"}
SOURCE_KEYS = {"sourceId", "versionInteger", "versionString", "downloadUrl"}
U32 = 2**32


class AppVersionsError(ValueError):
    """The file is not an app-version index; the message says where and why."""


def _nonempty_string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AppVersionsError(f"{where} must be a non-empty string")
    return value


def _keys(obj: Any, want: set[str], where: str) -> dict:
    if not isinstance(obj, dict):
        raise AppVersionsError(f"{where} must be an object")
    if set(obj) != want:
        missing, extra = sorted(want - set(obj)), sorted(set(obj) - want)
        detail = "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                           + ([f"unknown {', '.join(extra)}"] if extra else []))
        raise AppVersionsError(f"{where} must have exactly {', '.join(sorted(want))} ({detail})")
    return obj


def _source(source: Any, where: str) -> str:
    _keys(source, SOURCE_KEYS, where)
    number = source["versionInteger"]
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < U32:
        raise AppVersionsError(f"{where}.versionInteger must be a whole number from 0 to "
                               f"{U32 - 1} (Delta Chat reads it as u32)")
    _nonempty_string(source["versionString"], f"{where}.versionString")
    url = _nonempty_string(source["downloadUrl"], f"{where}.downloadUrl")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise AppVersionsError(f"{where}.downloadUrl must be an https:// URL")
    return _nonempty_string(source["sourceId"], f"{where}.sourceId")


def validate(index: Any) -> None:
    """Raise AppVersionsError unless ``index`` (parsed JSON) has the reference's shape:
    ``{"clients": [...]}``, each client exactly ``clientId``, ``sources`` (non-empty),
    each source exactly ``sourceId``, ``versionInteger`` (0 <= n < 2**32, not a
    boolean), ``versionString``, ``downloadUrl``; ids unique."""
    _keys(index, {"clients"}, "the top level")
    clients = index["clients"]
    if not isinstance(clients, list) or not clients:
        raise AppVersionsError("clients must be a non-empty list")
    seen_clients: set[str] = set()
    for i, client in enumerate(clients):
        where = f"clients[{i}]"
        _keys(client, CLIENT_KEYS, where)
        client_id = _nonempty_string(client["clientId"], f"{where}.clientId")
        if client_id in seen_clients:
            raise AppVersionsError(f"{where}.clientId {client_id!r} appears twice")
        seen_clients.add(client_id)
        sources = client["sources"]
        if not isinstance(sources, list) or not sources:
            raise AppVersionsError(f"{where}.sources must be a non-empty list")
        seen_sources: set[str] = set()
        for j, source in enumerate(sources):
            source_id = _source(source, f"{where}.sources[{j}]")
            if source_id in seen_sources:
                raise AppVersionsError(f"{where}.sources[{j}].sourceId {source_id!r} appears "
                                       "twice")
            seen_sources.add(source_id)


def load(path: str) -> str | None:
    """The index at ``path`` as one line of compact JSON, or None when there is none
    (only the default path may be missing). Raises AppVersionsError naming
    APPVERSIONS_FILE and the fault."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        if path == DEFAULT:
            return None
        raise AppVersionsError(f"APPVERSIONS_FILE={path}: no such file") from None
    except OSError as exc:
        raise AppVersionsError(f"APPVERSIONS_FILE={path}: {exc.strerror}") from None
    try:
        index = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AppVersionsError(f"APPVERSIONS_FILE={path} is not JSON: {exc}") from None
    try:
        validate(index)
    except AppVersionsError as exc:
        raise AppVersionsError(f"APPVERSIONS_FILE={path}: {exc}") from None
    return json.dumps(index, separators=(",", ":"), ensure_ascii=False)


def install(line: str | None, served: Path | None = None) -> bool:
    """Write the checked index ``line`` (from :func:`load`) where relay.notify.metadata
    reads it (``paths.APPVERSIONS_SERVED``), or remove a stale one when ``line`` is None;
    True when one is served."""
    served = served or paths.APPVERSIONS_SERVED
    if line is None:
        served.unlink(missing_ok=True)
        return False
    tmp = served.with_name(served.name + ".tmp")
    tmp.write_text(line + "\n", encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, served)
    return True


def served_value(served: Path | None = None) -> str | None:
    """The one-line index to answer with, None (NIL) when none is served."""
    served = served or paths.APPVERSIONS_SERVED
    try:
        return served.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None

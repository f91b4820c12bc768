"""Logging for our helpers: one line per event on stderr, prefixed by the helper's name."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonLines(logging.Formatter):
    """One JSON object per line: time, service, level, message."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """``record`` as one JSON object: ``{"ts": "2026-01-02T03:04:05.678Z", "service": ...,
        "level": "info", "msg": ...}``, plus ``"exc"`` (the exception's last line, no traceback)
        when the record carries one.
        """
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
                 "service": self.service, "level": record.levelname.lower(),
                 "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, ensure_ascii=False)


def setup(name: str, level: str = "info", fmt: str = "text") -> logging.Logger:
    """Send every log record of this process to stderr as one line, prefixed by the
    helper's ``name`` (its supervisord program), and return the logger ``name``.

    ``level``: debug, info, warning or error (LOG_LEVEL); ``fmt``: ``text``
    (``name: LEVEL message``) or ``json`` (one object per line; LOG_FORMAT)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLines(name))
    else:
        handler.setFormatter(logging.Formatter(f"{name}: %(levelname)s %(message)s"))
    logging.basicConfig(force=True, level=getattr(logging, level.upper(), logging.INFO),
                        handlers=[handler])
    return logging.getLogger(name)

"""Logging for our helpers: one line per event on stderr, prefixed by the helper's name."""

from __future__ import annotations

import logging
import os
import sys


def setup(name: str) -> logging.Logger:
    level = os.environ.get("LOG_LEVEL", "info").upper()
    logging.basicConfig(
        force=True,
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format=f"{name}: %(levelname)s %(message)s",
    )
    return logging.getLogger(name)

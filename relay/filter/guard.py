"""Catch-alls in the filter path: safe in production, loud under test.

A message the filter cannot judge is refused (523 or 554), never a crash of
relay-filter: the sender sees a reply during the transaction. The same
``except Exception`` would also hide a programming error in our own parsers
(a TypeError in relay.filter.openpgp) from the fuzzers, which would then only
see one more refusal. So every such catch-all calls :func:`unexpected`, which
tells two cases apart by where the exception was raised:

* inside Python's ``email`` package: hostile input tripped the standard
  library's parser (``From: user@`` raises IndexError in
  ``_header_value_parser.get_domain`` on Python 3.11). That is the message's
  fault: it is refused, in tests too;
* anywhere else (our code): a programming error. In production (``STRICT``
  false, the default) it is logged and the message refused; under test
  (``STRICT`` true: tests/unit/conftest.py sets it for every unit test and
  fuzzer) it is raised again, so the test fails with the real traceback.

Log lines name the exception type and the file:line it came from, never
``str(exc)``, which may quote the message (GUIDE: no message content in logs).
The switch is a module attribute, not an environment variable: settings are
read from the environment only in relay/settings.
"""

from __future__ import annotations

import email
import logging
import os
import traceback

log = logging.getLogger("relay-filter")

STRICT = False
"""True under test: :func:`unexpected` re-raises a programming error instead of logging it."""

_EMAIL_PACKAGE = os.path.dirname(email.__file__) + os.sep


def origin(exc: BaseException) -> str:
    """``path:line`` of the innermost frame of ``exc``'s traceback ("?" without one)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def raised_by_email_package(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` lies in the standard library's email package."""
    return origin(exc).startswith(_EMAIL_PACKAGE)


def unexpected(exc: Exception, where: str) -> None:
    """Account for ``exc``, caught by a catch-all in ``where`` (a short label for the log).

    Returns (the caller then refuses the message) when the email package raised
    it, or when ``STRICT`` is false (logged at ERROR). Raises ``exc`` again when
    ``STRICT`` is true and the exception came from anywhere else.
    """
    if raised_by_email_package(exc):
        log.info("%s: the email package raised %s at %s; the message is refused",
                 where, type(exc).__name__, origin(exc))
        return
    if STRICT:
        raise exc
    log.error("%s: unexpected %s at %s; the message is refused",
              where, type(exc).__name__, origin(exc))

#!/usr/bin/env python3
"""Container entrypoint: read settings, prepare /data, render configs, exec supervisord.

A bad setting stops the container at once with one line naming the variable.
With arguments (``docker run IMAGE relayctl dns``) it runs those instead.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from relay import settings
from relay.boot import startup


def main() -> int:
    if len(sys.argv) > 1:
        os.execvp(sys.argv[1], sys.argv[1:])
    try:
        values = settings.from_environment()
    except settings.SettingError as exc:
        print(f"chatmail: {exc}", file=sys.stderr, flush=True)
        return 2
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s: %(message)s")
    try:
        startup.prepare(values)
    except Exception as exc:  # one clear line, not a traceback, for operator errors
        print(f"chatmail: start-up failed: {exc}", file=sys.stderr, flush=True)
        return 1
    sys.stdout.flush()
    os.execv("/usr/local/sbin/supervisord", ["supervisord", "-c", "/etc/supervisor/supervisord.conf"])


if __name__ == "__main__":
    sys.exit(main())

"""relay-certs: ``python3 -m relay.certs`` (supervisord program relay-certs, root)."""

import sys

from relay.certs.watch import main

sys.exit(main())

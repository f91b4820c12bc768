"""relayctl: ``python3 -m relay.ops`` (the operator's command; image/relayctl runs it)."""

import sys

from relay.ops.relayctl import main

sys.exit(main())

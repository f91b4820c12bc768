"""relay-filter: ``python3 -m relay.filter`` (supervisord program relay-filter, user relayfilter)."""

import asyncio

from relay.filter.server import main

asyncio.run(main())

"""supervisord, started without setuptools' ``pkg_resources``.

Debian's supervisor 4.2.5 imports ``pkg_resources`` at start-up (``supervisor/options.py``)
for a single purpose: turning a ``module:attribute`` spec of the configuration (the
``supervisor.rpcinterface_factory`` of ``[rpcinterface:supervisor]``, an event
listener's ``result_handler``) into the object it names. Importing ``pkg_resources``
scans every installed distribution; in the running image supervisord held 20.6 MiB of
anonymous memory with it and 12.7 MiB without it.
This module puts a stand-in under that name which resolves specs with the
standard library's ``pkgutil.resolve_name`` and then runs supervisord's own ``main``.
Only the long-lived daemon uses it; ``supervisorctl`` stays Debian's.
"""

from __future__ import annotations

import pkgutil
import sys
import types
from typing import Any


class EntryPoint:
    """The one part of ``pkg_resources.EntryPoint`` supervisor uses:
    ``EntryPoint.parse("x=" + spec).resolve()``."""

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @classmethod
    def parse(cls, text: str) -> EntryPoint:
        """``"name = module:attr"`` -> an entry point for ``module:attr``. Raises ValueError
        when there is no ``=`` or no module."""
        name, equals, spec = text.partition("=")
        if not equals or not spec.strip():
            raise ValueError(f"not an entry point: {text!r}")
        return cls(spec.strip())

    def resolve(self) -> Any:
        """The object the spec names (``module:attr`` or ``module.attr``); raises
        ImportError or AttributeError when it does not exist."""
        return pkgutil.resolve_name(self.spec)


def stand_in() -> types.ModuleType:
    """A module object to be registered as ``pkg_resources`` before supervisor is imported."""
    module = types.ModuleType("pkg_resources", "stand-in: relay.boot.supervisord")
    module.EntryPoint = EntryPoint  # type: ignore[attr-defined]
    return module


def main() -> None:
    """Run supervisord with ``sys.argv`` (exits the way supervisord does)."""
    sys.modules.setdefault("pkg_resources", stand_in())
    from supervisor.supervisord import main as supervisord_main

    supervisord_main()


if __name__ == "__main__":
    main()

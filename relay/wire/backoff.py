"""Growing delays between attempts (ACME orders, push notifications)."""

from __future__ import annotations


def exponential(failures: int, first: float, cap: float, factor: float = 2.0) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...):
    ``first``, then ``factor`` times longer each time, never more than ``cap``.
    ``failures`` below 1 counts as 1."""
    return min(cap, first * factor ** (max(failures, 1) - 1))

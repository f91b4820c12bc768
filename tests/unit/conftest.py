"""What every unit test shares: the filter's catch-alls re-raise (relay.filter.guard).

In production a message the filter cannot judge is refused; under test an
unexpected exception is a programming error and must fail the test (and the
fuzzers in test_filter_fuzz.py, which would otherwise see one more refusal).
A test of the production behaviour turns it off with monkeypatch.
"""

import pytest

from relay.filter import guard


@pytest.fixture(autouse=True)
def strict_filter(monkeypatch):
    """relay.filter.guard.STRICT is true for the duration of each unit test."""
    monkeypatch.setattr(guard, "STRICT", True)

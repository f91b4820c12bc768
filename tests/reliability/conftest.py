"""Fixtures of the reliability suite (helpers: reliability_tools.py)."""

import pytest

from reliability_tools import SUMMARY, start_relay


@pytest.fixture(scope="module")
def sturdy(image_exists):
    """One relay for a test module that is not supposed to harm it."""
    relay = start_relay()
    try:
        yield relay
    finally:
        relay.remove()


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("reliability figures")
        for line in SUMMARY:
            terminalreporter.write_line(line)

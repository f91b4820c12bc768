import pytest

from testnet import TestNet, build_tools_image


@pytest.fixture(scope="module")
def make_net(image_exists):
    """A test network for the module: make_net(pebble=True) adds the ACME CA."""
    nets = []

    def make(pebble: bool = False) -> TestNet:
        build_tools_image()
        n = TestNet()
        nets.append(n)
        n.start_dns()
        if pebble:
            n.start_pebble()
        return n

    try:
        yield make
    finally:
        for n in nets:
            n.close()

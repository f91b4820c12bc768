import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# testinfra's docker backend calls `docker` from PATH; use Debian's client,
# which matches the 20.10 engine.
if os.path.exists("/usr/bin/docker"):
    os.environ["PATH"] = "/usr/bin:" + os.environ.get("PATH", "")

from relaytest import Relay, docker  # noqa: E402

# Non-default values, so the tests can see that settings reach the rendered configs.
RELAY_ENV = {
    "MAIL_DOMAIN": "_chat.example.test",
    "TLS_MODE": "self-signed",
    "MAX_MESSAGE_SIZE": "20M",
    "MAX_RECIPIENTS": "500",
    "MAX_SMTP_CONNECTIONS": "500",
    "MAILBOX_QUOTA": "300M",
    # Many tests create accounts from one address; the limit itself is tested
    # on a relay of its own (tests/e2e/test_limits.py).
    "NEW_ACCOUNTS_PER_MINUTE": "6000",
    # The send rate limit counts every transaction at MAIL FROM, refused ones too (it
    # answers before the body is sent): suites send many from one account. The limit
    # itself is tested on the limits relay.
    "MAX_USER_SEND_BURST": "1000",
    # Tests never reach the real notification gateway: a closed port inside the container.
    "PUSH_GATEWAY_URL": "https://127.0.0.1:9/notify",
}


@pytest.fixture(scope="session")
def image_exists():
    if docker("image", "inspect", os.environ.get("IMAGE", "chatmail-relay:latest"),
              check=False).returncode != 0:
        pytest.fail("the image is missing: run the tests through `make test`, which builds it")


@pytest.fixture(scope="session")
def relay(image_exists):
    """One relay for the whole session (started once: the suite stays fast)."""
    r = Relay(dict(RELAY_ENV)).start()
    try:
        r.wait_healthy()
        yield r
    finally:
        if os.environ.get("KEEP_RELAY") != "1":
            r.remove()

"""compose.yaml with the docker-compose on this machine (1.29; users also run Compose v2)."""

import os
import secrets
import shutil
import subprocess

import pytest

from relaytest import DOCKER, IMAGE, ROOT, docker, wait_for

COMPOSE = shutil.which("docker-compose")


@pytest.fixture
def compose_project(image_exists, tmp_path):
    if COMPOSE is None:
        pytest.fail("docker-compose is not installed (bash .ci/run installs it)")
    name = f"relaytest{secrets.token_hex(3)}"
    env_file = tmp_path / "test.env"
    # Like examples/local.env, on another loopback address so that a relay that a
    # developer started with `make up` (on 127.0.0.1) does not collide.
    env_file.write_text("MAIL_DOMAIN=localhost\nTLS_MODE=self-signed\nPUBLISH_ON=127.0.0.77:\n"
                        f"RELAY_VOLUME={name}-data\nRELAY_IMAGE={IMAGE}\n")
    env = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}

    def compose(*args, check=True):
        return subprocess.run([COMPOSE, "--env-file", str(env_file), "-p", name,
                               "-f", str(ROOT / "compose.yaml"), *args],
                              capture_output=True, text=True, check=check, timeout=180, env=env)

    try:
        yield compose, name
    finally:
        compose("down", "-v", "--timeout", "10", check=False)
        docker("volume", "rm", "-f", f"{name}-data", check=False)


def test_compose_up_is_healthy_and_logs_each_service(compose_project):
    compose, name = compose_project
    compose("up", "-d", "--no-build")
    container = compose("ps", "-q", "relay").stdout.strip()

    def healthy():
        return docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip() == "healthy"

    wait_for(healthy, 60, 0.5, "relay healthy after compose up")
    programs = ("syslog", "relay-auth", "relay-web", "relay-filter", "relay-expire", "relay-certs",
                "relay-metadata", "opendkim", "coturn", "dovecot", "postfix", "nginx")

    def all_running_logged():
        logs = compose("logs", "--no-color").stdout
        missing = [p for p in programs if f"success: {p} entered RUNNING state" not in logs]
        return logs if not missing else None

    logs = wait_for(all_running_logged, 30, 0.5, "every program's RUNNING line in the log")
    assert "daemon started -- version 3.7" in logs          # Postfix
    assert "Dovecot v2.3" in logs
    assert "OpenDKIM Filter" in logs
    # the volume has the pinned name, not one derived from the project name
    mounts = docker("inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", container).stdout.split()
    assert mounts == [f"{name}-data"]
    ports = docker("port", container).stdout
    assert "0.0.0.0" not in ports and "127.0.0.77:25" in ports
    assert "3478/udp -> 127.0.0.77:3478" in ports and "3478/tcp -> 127.0.0.77:3478" in ports
    assert "49152/udp -> 127.0.0.77:49152" in ports and "49171/udp -> 127.0.0.77:49171" in ports

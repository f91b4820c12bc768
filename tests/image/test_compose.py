"""compose.yaml with the docker-compose on this machine (1.29; users also run Compose v2).

The relay is started once for this module exactly as an operator starts it, with
the least privileges compose.yaml grants, and is then checked from outside
(docker inspect) and inside (processes, files) and used (account, delivery).
"""

import json
import os
import secrets
import shutil
import smtplib
import subprocess
import urllib.request

import pytest

from relaytest import CAPABILITIES, IMAGE, ROOT, TMPFS, docker, insecure_tls, securejoin_request, wait_for

COMPOSE = shutil.which("docker-compose")
# A loopback address of its own: neither a relay from `make up` (127.0.0.1) nor a
# compose test running at the same time on this machine collides.
ADDRESS = f"127.0.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 2}"


@pytest.fixture(scope="module")
def compose_up(image_exists, tmp_path_factory):
    if COMPOSE is None:
        pytest.fail("docker-compose is not installed (bash .ci/run installs it)")
    name = f"relaytest{secrets.token_hex(3)}"
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    # Like examples/local.env, published on ADDRESS only.
    # CREATE_MAX_LOAD: the container sees the host's load average (see relaytest.Relay).
    env_file.write_text(f"MAIL_DOMAIN=localhost\nTLS_MODE=self-signed\nPUBLISH_ON={ADDRESS}:\n"
                        "CREATE_MAX_LOAD=1000\n"
                        f"RELAY_VOLUME={name}-data\nRELAY_IMAGE={IMAGE}\n")
    env = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}

    def compose(*args, check=True):
        return subprocess.run([COMPOSE, "--env-file", str(env_file), "-p", name,
                               "-f", str(ROOT / "compose.yaml"), *args],
                              capture_output=True, text=True, check=check, timeout=180, env=env)

    try:
        up = compose("up", "-d", "--no-build", check=False)
        assert up.returncode == 0, up.stderr
        container = compose("ps", "-q", "relay").stdout.strip()

        def healthy():
            status = docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip()
            return status == "healthy"

        wait_for(healthy, 90, 0.5, "relay healthy after compose up")
        yield compose, name, container
    finally:
        compose("down", "-v", "--timeout", "10", check=False)
        docker("volume", "rm", "-f", f"{name}-data", check=False)


def test_compose_up_is_healthy_and_logs_each_service(compose_up):
    compose, name, container = compose_up
    programs = ("syslog", "relay-auth", "relay-signup", "relay-filter", "relay-expire", "relay-certs",
                "relay-metadata", "relay-mxdeliv", "relay-mxsend", "opendkim", "coturn", "dovecot",
                "postfix", "nginx")

    def all_running():  # supervisord says so once a program has run for a second
        logs = compose("logs", "--no-color").stdout
        return all(f"success: {p} entered RUNNING state" in logs for p in programs) and logs

    logs = wait_for(all_running, 30, 0.5, "every program RUNNING in the logs")
    assert "daemon started -- version 3.7" in logs          # Postfix
    assert "Dovecot v2.3" in logs
    assert "OpenDKIM Filter" in logs
    # the volume has the pinned name, not one derived from the project name
    mounts = docker("inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", container).stdout.split()
    assert mounts == [f"{name}-data"]
    ports = docker("port", container).stdout
    assert "0.0.0.0" not in ports and f"{ADDRESS}:25" in ports
    assert f"3478/udp -> {ADDRESS}:3478" in ports and f"3478/tcp -> {ADDRESS}:3478" in ports
    assert f"49152/udp -> {ADDRESS}:49152" in ports and f"49171/udp -> {ADDRESS}:49171" in ports


def test_compose_grants_least_privilege(compose_up):
    _, _, container = compose_up
    info = json.loads(docker("inspect", container).stdout)[0]
    host = info["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == sorted(CAPABILITIES)   # relaytest runs every test with these
    assert host["SecurityOpt"] in (["no-new-privileges:true"], ["no-new-privileges"])
    assert host["ReadonlyRootfs"] is True
    assert sorted(host["Tmpfs"]) == sorted(TMPFS)
    for mode in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode"):
        assert host.get(mode) != "host", mode
    assert not host.get("Devices")
    # one mount: the data volume; no Docker socket, no host directory
    assert [(m["Type"], m["Destination"]) for m in info["Mounts"]] == [("volume", "/data")]
    assert not any("docker.sock" in (m.get("Source") or "") for m in info["Mounts"])


def test_compose_container_cannot_do_what_it_does_not_need(compose_up):
    _, _, container = compose_up
    status = docker("exec", container, "grep", "-E", "^Cap(Eff|Bnd)|^NoNewPrivs", "/proc/1/status").stdout
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    assert fields["NoNewPrivs"] == "1"
    # eight capabilities: bits 0 CHOWN, 1 DAC_OVERRIDE, 3 FOWNER, 5 KILL, 6 SETGID, 7 SETUID,
    # 10 NET_BIND_SERVICE, 18 SYS_CHROOT
    want = sum(1 << bit for bit in (0, 1, 3, 5, 6, 7, 10, 18))
    assert int(fields["CapBnd"], 16) == want
    assert int(fields["CapEff"], 16) == want
    for path in ("/etc/postfix/x", "/usr/local/bin/x", "/var/lib/x", "/opt/chatmail/relay/x"):
        touch = docker("exec", container, "touch", path, check=False)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr, path
    for path in ("/run/x", "/tmp/x", "/data/x"):
        assert docker("exec", container, "sh", "-c", f"touch {path} && rm {path}", check=False).returncode == 0
    # the cgroup tree is the container's own view, read-only (compose 1.29 cannot set a
    # cgroup namespace; Docker makes it private by default on cgroup v2 hosts)
    mounts = docker("exec", container, "cat", "/proc/mounts").stdout.splitlines()
    cgroups = [line.split() for line in mounts if line.split()[2] in ("cgroup", "cgroup2")]
    assert cgroups and all("ro" in fields[3].split(",") for fields in cgroups), cgroups
    # a privileged operation that none of the eight capabilities allows
    assert docker("exec", container, "mount", "-t", "tmpfs", "none", "/mnt", check=False).returncode != 0
    # nothing in the image is set-user-id or set-group-id but Postfix's two (root uses them)
    setid = docker("exec", container, "find", "/", "-xdev", "-type", "f", "-perm", "/6000").stdout.split()
    assert sorted(setid) == ["/usr/sbin/postdrop", "/usr/sbin/postqueue"]


def test_compose_relay_works_with_those_privileges(compose_up):
    """An account is made and mail is submitted, filtered, signed and delivered."""
    _, _, container = compose_up
    port = {p: int(docker("port", container, f"{p}/tcp").stdout.split()[0].rsplit(":", 1)[1])
            for p in (443, 465)}
    req = urllib.request.Request(f"https://{ADDRESS}:{port[443]}/new", method="POST")
    with urllib.request.urlopen(req, context=insecure_tls(), timeout=10) as resp:
        acct = json.loads(resp.read())
    with smtplib.SMTP_SSL(ADDRESS, port[465], context=insecure_tls(), timeout=30) as smtp:
        smtp.login(acct["email"], acct["password"])
        smtp.sendmail(acct["email"], [acct["email"]], securejoin_request(acct["email"], acct["email"]))

    def delivered():
        out = docker("exec", container, "sh", "-c",
                     f"zgrep -l '^DKIM-Signature:' /data/mail/{acct['email']}/Maildir/new/*",
                     check=False)
        return out.returncode == 0
    wait_for(delivered, 30, what="signed delivery in the compose relay")

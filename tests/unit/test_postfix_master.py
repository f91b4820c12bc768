"""relay.delivery.postfix_master's drain, with real processes standing in for Postfix's."""

import os
import subprocess
import sys
import time

from relay.delivery import postfix_master


def spawn_group(script: str) -> subprocess.Popen:
    """A process group like Postfix's: a "master" whose children stay in its group."""
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True)


CHILDREN = """
import subprocess, sys, time
for seconds in {durations}:
    subprocess.Popen(["sleep", str(seconds)])
time.sleep(60)
"""


def wait_members(pgid, count):
    deadline = time.monotonic() + 10
    while len(postfix_master.group_members(pgid, exclude=[])) < count:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_drain_ends_the_master_and_lets_busy_children_finish():
    master = spawn_group(CHILDREN.format(durations=[0.5, 0.7]))
    pgid = master.pid
    wait_members(pgid, 3)
    start = time.monotonic()
    postfix_master.drain(master.pid, pgid, seconds=5)
    master.wait()
    took = time.monotonic() - start
    assert master.returncode == -9
    assert postfix_master.group_members(pgid, exclude=[]) == []
    assert took >= 0.4, "the children were waited for, not killed"


def test_drain_ends_what_is_still_busy_after_the_limit():
    master = spawn_group(CHILDREN.format(durations=[30]))
    pgid = master.pid
    wait_members(pgid, 2)
    start = time.monotonic()
    postfix_master.drain(master.pid, pgid, seconds=0.3)
    master.wait()
    deadline = time.monotonic() + 5
    while postfix_master.group_members(pgid, exclude=[]):
        assert time.monotonic() < deadline, "SIGTERM ended the busy child"
        time.sleep(0.02)
    assert time.monotonic() - start < 5


def test_drain_ends_smtp_servers_at_once(tmp_path):
    """An smtpd holds a client's session open: it is not waited for."""
    smtpd = tmp_path / "smtpd"
    smtpd.symlink_to("/bin/sleep")
    master = spawn_group(f"""
import subprocess, time
subprocess.Popen([{str(smtpd)!r}, "30"])
subprocess.Popen(["sleep", "0.5"])
time.sleep(60)
""")
    pgid = master.pid
    wait_members(pgid, 3)
    assert len(postfix_master.group_members(pgid, exclude=[], names=["smtpd"])) == 1
    start = time.monotonic()
    postfix_master.drain(master.pid, pgid, seconds=20)
    master.wait()
    took = time.monotonic() - start
    assert 0.4 <= took < 5, took  # the other child was waited for, the smtpd was not
    assert postfix_master.group_members(pgid, exclude=[]) == []


def test_group_members_excludes_the_caller():
    assert os.getpid() not in postfix_master.group_members(os.getpgid(0), exclude=[os.getpid()])


def test_waits_for_the_sockets_it_needs(tmp_path):
    import socket
    import threading
    path = tmp_path / "lmtp"
    missing = postfix_master.wait_until_ready([path], seconds=0.3)
    assert missing == [path]

    def listen_later():
        time.sleep(0.3)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen()
        listening.append(server)

    listening = []
    threading.Thread(target=listen_later).start()
    start = time.monotonic()
    assert postfix_master.wait_until_ready([path], seconds=10) == []
    assert time.monotonic() - start >= 0.25
    listening[0].close()

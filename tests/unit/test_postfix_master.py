"""relay.delivery.postfix_master's drain, with real processes standing in for Postfix's.

No assertion reads the clock: a child that finished writes a marker file before it
exits (one ended by SIGTERM never does), and drain() says on stderr when it had to end
processes still busy at its limit. Bounded polls only keep a broken run from hanging."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

from relay.delivery import postfix_master


def spawn_group(script: str) -> subprocess.Popen:
    """A process group like Postfix's: a "master" whose children stay in its group."""
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True)


def worker(seconds: float, marker) -> str:
    """Python source of a child that works ``seconds`` and then writes ``marker``."""
    code = f"import time; time.sleep({seconds}); open({str(marker)!r}, 'w').close()"
    return f"subprocess.Popen([sys.executable, '-c', {code!r}])\n"


def master_script(*children: str) -> str:
    return "import subprocess, sys, time\n" + "".join(children) + "time.sleep(60)\n"


def wait_members(pgid, count):
    deadline = time.monotonic() + 10
    while len(postfix_master.group_members(pgid, exclude=[])) < count:
        assert time.monotonic() < deadline, "the process group did not start"
        time.sleep(0.02)


def test_drain_ends_the_master_and_lets_busy_children_finish(tmp_path, capsys):
    done = [tmp_path / "done1", tmp_path / "done2"]
    master = spawn_group(master_script(worker(0.5, done[0]), worker(0.7, done[1])))
    pgid = master.pid
    wait_members(pgid, 3)
    postfix_master.drain(master.pid, pgid, seconds=30)
    master.wait()
    assert master.returncode == -9
    assert postfix_master.group_members(pgid, exclude=[]) == []
    assert all(m.exists() for m in done), "the children were waited for, not killed"
    assert "still busy" not in capsys.readouterr().err


def test_drain_ends_what_is_still_busy_after_the_limit(tmp_path, capsys):
    done = tmp_path / "done"
    master = spawn_group(master_script(worker(30, done)))
    pgid = master.pid
    wait_members(pgid, 2)
    postfix_master.drain(master.pid, pgid, seconds=0.3)
    master.wait()
    deadline = time.monotonic() + 10
    while postfix_master.group_members(pgid, exclude=[]):
        assert time.monotonic() < deadline, "SIGTERM did not end the busy child"
        time.sleep(0.02)
    assert not done.exists(), "the busy child was ended, not waited for"
    assert "1 process(es) still busy after 0 s were ended" in capsys.readouterr().err


def test_drain_ends_smtp_servers_at_once(tmp_path, capsys):
    """An smtpd holds a client's session open: it is not waited for."""
    smtpd = tmp_path / "smtpd"
    smtpd.symlink_to("/bin/sleep")
    done = tmp_path / "done"
    master = spawn_group(master_script(f"subprocess.Popen([{str(smtpd)!r}, '600'])\n",
                                       worker(0.5, done)))
    pgid = master.pid
    wait_members(pgid, 3)
    assert len(postfix_master.group_members(pgid, exclude=[], names=["smtpd"])) == 1
    postfix_master.drain(master.pid, pgid, seconds=60)
    master.wait()
    assert postfix_master.group_members(pgid, exclude=[]) == []
    assert done.exists(), "the other child was waited for"
    # had the smtpd been waited for, drain would have ended it at its limit and said so
    assert "still busy" not in capsys.readouterr().err


def test_group_members_excludes_the_caller():
    assert os.getpid() not in postfix_master.group_members(os.getpgid(0), exclude=[os.getpid()])


def test_waits_for_the_sockets_it_needs(tmp_path, monkeypatch):
    path = tmp_path / "lmtp"
    assert postfix_master.wait_until_ready([path], seconds=0.3) == [path]

    probes = []
    refused = threading.Event()
    real_answers = postfix_master.answers

    def answers(p):
        ok = real_answers(p)
        probes.append(ok)
        if not ok:
            refused.set()
        return ok

    def listen_after_a_refusal():
        refused.wait(10)
        server.bind(str(path))
        server.listen()

    monkeypatch.setattr(postfix_master, "answers", answers)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    thread = threading.Thread(target=listen_after_a_refusal)
    thread.start()
    assert postfix_master.wait_until_ready([path], seconds=30) == []
    thread.join()
    server.close()
    assert probes[0] is False and probes[-1] is True  # it asked again until the socket answered


def test_deferred_local_picks_deferred_messages_for_our_domain():
    lines = "\n".join(json.dumps(e) for e in [
        {"queue_name": "deferred", "queue_id": "A1",
         "recipients": [{"address": "Bob@Chat.Example.ORG", "delay_reason": "lost connection"}]},
        {"queue_name": "deferred", "queue_id": "B2",
         "recipients": [{"address": "x@other.example", "delay_reason": "timeout"}]},
        {"queue_name": "active", "queue_id": "C3", "recipients": [{"address": "c@chat.example.org"}]},
    ]) + "\nnot json\n"
    assert postfix_master.deferred_local(lines, "chat.example.org") == ["A1"]


def test_retry_local_retries_each_message_a_few_times_while_the_daemons_answer(monkeypatch):
    """A message deferred after a busy start is retried at once (postqueue -i), at most
    LOCAL_RETRIES times; the loop ends when nothing local stays deferred."""
    queue = {"A1": True}
    calls = []

    def run(argv, **kwargs):
        calls.append(argv[1:])
        out = ""
        if argv[1:] == ["-j"] and queue["A1"]:
            out = json.dumps({"queue_name": "deferred", "queue_id": "A1",
                              "recipients": [{"address": "bob@chat.example.org"}]})
        return subprocess.CompletedProcess(argv, 0, stdout=out, stderr="")

    monkeypatch.setattr(postfix_master.subprocess, "run", run)
    monkeypatch.setattr(postfix_master, "alive", lambda pid: True)
    monkeypatch.setattr(postfix_master, "answers", lambda path: True)
    retried = postfix_master.retry_local(1, "chat.example.org", seconds=60, quiet=0, every=0)
    assert retried == postfix_master.LOCAL_RETRIES
    assert calls.count(["-i", "A1"]) == postfix_master.LOCAL_RETRIES
    # with the daemons not answering, nothing is retried
    calls.clear()
    monkeypatch.setattr(postfix_master, "answers", lambda path: False)
    queue["A1"] = True
    assert postfix_master.retry_local(1, "chat.example.org", seconds=0.05, quiet=10, every=0) == 0
    assert ["-i", "A1"] not in calls

"""bench/hoptrace.client_split: a Delta Chat message's time split between the clients and
the relay, from log lines (pure logic; the bench itself is not a test)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import hoptrace  # noqa: E402

A, B = "alice@x.test", "bob@x.test"


def submitted(user):
    return f"postfix/submissions/smtpd[9]: NOQUEUE: client=unknown[10.0.0.1], sasl_method=PLAIN, sasl_username={user}"


def stored(user):
    return f"lmtp({user})<1><s>: Info: sieve: msgid=<m@x>: stored mail into mailbox 'INBOX'"


def test_each_round_split_at_the_submission_and_the_store():
    lines = [(100.010, submitted(A)), (100.030, stored(A)),   # a copy to the sender itself
             (100.040, stored(B)),
             (200.020, submitted(A)), (200.050, stored(B))]
    split = hoptrace.client_split(lines, A, B, [(100.0, 100.100), (200.0, 200.120)])
    assert split["unmatched"] == 0
    assert split["sender_client"] == 15.0        # median of 10 and 20
    assert split["relay_to_stored"] == 30.0      # of 30 and 30, not the sender's own copy
    assert split["stored_to_incoming"] == 65.0   # of 60 and 70


def test_a_round_without_its_log_lines_is_counted_not_guessed():
    lines = [(100.010, submitted(A)), (100.040, stored(B)),
             (200.020, submitted("someone@x.test")), (200.050, stored(B))]
    split = hoptrace.client_split(lines, A, B, [(100.0, 100.100), (200.0, 200.120)])
    assert split["unmatched"] == 1
    assert split["relay_to_stored"] == 30.0

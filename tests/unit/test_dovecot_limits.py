"""relay.limits: Dovecot's per-process connection limits from the open-files limit."""

import pytest

from relay import limits


@pytest.mark.parametrize("max_conn,open_files", [(10, 1024), (10000, 20000), (10000, 1024),
                                                 (1000000, 1048576), (50000, 20000)])
def test_every_connection_fits_in_login_and_hibernate_processes(max_conn, open_files):
    got = limits.dovecot_limits(max_conn, open_files)
    for service in ("imap_login", "imap_hibernate"):
        per_process = got[f"{service}_client_limit"]
        # two descriptors per connection, and the process's own, within the limit
        assert 2 * per_process + limits.PROCESS_OVERHEAD_FDS <= max(open_files, 2 * 64 + 2)
        assert per_process * (got[f"{service}_process_limit"] - 1) >= max_conn
        assert per_process <= limits.CLIENTS_PER_PROCESS_MAX
    assert got["mailbox_notify_client_limit"] <= open_files - limits.PROCESS_OVERHEAD_FDS


def test_one_login_process_when_few_connections():
    got = limits.dovecot_limits(3000, 1048576)
    assert got["imap_login_client_limit"] == 3000
    assert got["mailbox_notify_client_limit"] == 3000 + limits.ANNOUNCEMENT_FDS


def test_10000_connections_spread_over_processes_below_dovecots_memory_limit():
    got = limits.dovecot_limits(10000, 20000)
    assert got["imap_login_client_limit"] == limits.CLIENTS_PER_PROCESS_MAX
    assert got["imap_login_process_limit"] == 4
    assert limits.open_files_needed(10000) <= 20000
    # with few open files per process the descriptors decide
    assert limits.dovecot_limits(10000, 4096)["imap_login_client_limit"] == (4096 - 64) // 2


def test_raise_command_covers_the_need():
    assert "nofile=65536:65536" in limits.raise_command(11088)
    assert "nofile=1048576:1048576" in limits.raise_command(1001088)

"""Without METRICS_LISTEN no exporter runs and nothing listens for it; relayctl
metrics and relayctl queue still answer (the session relay)."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families


def test_no_exporter_without_metrics_listen(relay):
    status = relay.exec("supervisorctl", "-c", "/etc/supervisor/supervisord.conf", "status",
                        check=False).stdout
    assert "relay-metrics" not in status and "relay-filter" in status
    listening = relay.exec("python3", "-c", "from relay.ops import health; "
                                            "print(sorted(health.listening_ports()))").stdout
    assert "9100" not in listening


def test_relayctl_metrics_and_queue_work_without_an_exporter(relay):
    text = relay.exec("relayctl", "metrics").stdout
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"chatmail_messages", "chatmail_queue_messages", "chatmail_accounts_created"} <= names
    data = json.loads(relay.exec("relayctl", "queue", "--json").stdout)
    assert set(data) == {"messages", "queues", "oldest_age_seconds", "deferred"}
    assert relay.exec("relayctl", "queue").stdout.startswith("queue: ")

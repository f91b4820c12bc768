#!/bin/sh
# Postfix's master under supervisord (config/etc/supervisor/supervisord.conf.j2).
# This shell stays resident instead of a Python process (a few hundred KiB
# instead of about 6 MiB); the steps are short-lived runs of relay/delivery/postfix_master.py.
# supervisord made this shell the leader of a process group of its own, and the
# master and every Postfix process stay in it: that is how the drain finds them.
set -u
cd /opt/chatmail
python3 -m relay.delivery.postfix_master prepare
/usr/lib/postfix/sbin/master -d &
master=$!
trap 'python3 -m relay.delivery.postfix_master drain "$master" "$$"; exit 0' TERM INT
python3 -m relay.delivery.postfix_master flush "$master" &
wait "$master"
status=$?
# the master ended on its own (or a signal interrupted wait: the trap has run and exited)
exit $(( status == 0 ? 1 : status ))

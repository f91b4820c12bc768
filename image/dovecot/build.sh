#!/bin/sh
# Rebuild Debian's own Dovecot source package with our patches (image/dovecot/*.patch, in the order of image/dovecot/series) and leave the
# binary packages the relay needs in /debs. Runs in the builder stage of
# image/Dockerfile.
set -eu
mkdir -p /build && cd /build
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential dpkg-dev fakeroot >/dev/null
# Newest source first (security suite); some mirrors carry only the binaries
# of the security suite, then the main suite's source is used.
if ! apt-get source -qq dovecot >/dev/null 2>&1; then
    echo "dovecot: security source not available here, using the main suite's"
    mv /etc/apt/sources.list.d/chatmail-src.list /tmp/chatmail-src.list
    grep -v -- "-security" /tmp/chatmail-src.list > /etc/apt/sources.list.d/chatmail-src.list
    apt-get update -qq
    rm -rf /build/*
    apt-get source -qq dovecot >/dev/null
fi
apt-get build-dep -y -qq dovecot >/dev/null
src=$(find /build -maxdepth 1 -type d -name 'dovecot-*' | head -n1)
cd "$src"
# image/dovecot/series gives the order (mailbox-notify.patch builds on no-idle-notify-delay.patch).
grep -v '^#' /tmp/dovecot-patches/series | while read -r patch; do
    [ -n "$patch" ] || continue
    cp "/tmp/dovecot-patches/$patch" debian/patches/
    echo "$patch" >> debian/patches/series
done
version=$(dpkg-parsechangelog -S Version)
{
    printf 'dovecot (%s+chatmail1) bookworm; urgency=medium\n\n' "$version"
    printf '  * Announce new mail to IDLE clients without the 500 ms delay.\n'
    printf '  * Keep every record of the duplicate database on concurrent commits.\n'
    printf '  * Wake IDLE clients through a mailbox-notify service, not inotify.\n'
    printf '  * Keep an idle TLS connection in imap-login small.\n\n'
    printf ' -- chatmail relay appliance <root@localhost>  %s\n\n' "$(dpkg-parsechangelog -S Date)"
    cat debian/changelog
} > debian/changelog.new
mv debian/changelog.new debian/changelog
echo "dovecot: building $version+chatmail1"
DEB_BUILD_OPTIONS="nocheck nodoc parallel=$(nproc)" dpkg-buildpackage -B -uc -us -j"$(nproc)" >/build/build.log 2>&1 \
    || { tail -50 /build/build.log; exit 1; }
mkdir -p /debs
# dovecot-sieve: its duplicate test keeps a delivery repeated after a crash out of the mailbox
cp /build/dovecot-core_*.deb /build/dovecot-imapd_*.deb /build/dovecot-lmtpd_*.deb /build/dovecot-sieve_*.deb /debs/
ls -l /debs

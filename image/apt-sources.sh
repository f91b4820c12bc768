#!/bin/sh
# Make sure apt sees Debian's security and stable-updates suites (a debootstrapped
# base only knows the main suite; Debian's official images already have them).
#   apt-sources.sh          binary packages
#   apt-sources.sh src      also source packages (for the Dovecot builder)
set -eu
suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
mirror=$(sed -n 's|^deb \(http[^ ]*/debian\) .*|\1|p' /etc/apt/sources.list 2>/dev/null | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
list=/etc/apt/sources.list.d/chatmail-updates.list
if ! grep -rqs -- "-security" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    {
        echo "deb $mirror $suite-updates main"
        echo "deb $mirror-security $suite-security main"
    } > "$list"
fi
if [ "${1:-}" = src ]; then
    echo "deb-src $mirror $suite main" > /etc/apt/sources.list.d/chatmail-src.list
    echo "deb-src $mirror-security $suite-security main" >> /etc/apt/sources.list.d/chatmail-src.list
fi

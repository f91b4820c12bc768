#!/bin/sh
# Make a minimal Debian base image with debootstrap and `docker import` it,
# for machines that cannot pull from a registry (air-gapped hosts, our CI).
#
#   build-base.sh IMAGE_NAME [ARCH]      e.g. build-base.sh debian:bookworm-slim arm64
#
# Does nothing when IMAGE_NAME already exists locally or can be pulled.
# The result is trimmed like Debian's official "slim" images: no documentation,
# man pages, locales or apt lists, and a dpkg filter so later installs stay slim.
set -eu

image=${1:?usage: build-base.sh IMAGE [ARCH]}
arch=${2:-$(dpkg --print-architecture)}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
platform="linux/$arch"

# Present already? An imported image may be labelled with the host's architecture
# (docker import without experimental features ignores --platform), so a foreign
# one is recognised by what its programs report under emulation.
case "$arch" in
    amd64) machine=x86_64 ;;
    arm64) machine=aarch64 ;;
    *) machine=$arch ;;
esac
if [ "$($docker image inspect --format '{{.Architecture}}' "$image" 2>/dev/null)" = "$arch" ] ||
   { $docker image inspect "$image" >/dev/null 2>&1 &&
     [ "$($docker run --rm --network none --entrypoint uname "$image" -m 2>/dev/null)" = "$machine" ]; }; then
    echo "base image $image ($arch) is present"
    exit 0
fi
# PULL_FROM: the registry name when IMAGE is a local alias (e.g. the arm64 base
# next to the native one: PULL_FROM=debian:bookworm-slim).
pull=${PULL_FROM:-$image}
if $docker pull --platform "$platform" "$pull" >/dev/null 2>&1; then
    [ "$pull" = "$image" ] || $docker tag "$pull" "$image"
    echo "base image $image ($arch) pulled"
    exit 0
fi

echo "building base image $image ($arch) with debootstrap from $mirror"
root=$(mktemp -d /tmp/chatmail-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --arch="$arch" "$suite" "$root" "$mirror" >/dev/null

# Keep later package installs free of docs, man pages and locales.
cat > "$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
cat > "$root/etc/apt/apt.conf.d/docker-slim" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
CFG
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
       "$root"/usr/share/lintian "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
       "$root"/var/cache/debconf/*-old "$root"/var/log/* "$root"/tmp/* 2>/dev/null || true

tar -C "$root" -c . | $docker import --platform "$platform" \
    --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
echo "base image $image ($arch): $($docker image inspect --format '{{.Size}}' "$image") bytes"

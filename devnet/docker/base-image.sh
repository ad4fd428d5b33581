#!/bin/sh
# Build the Docker base image motus-base:bookworm from Debian packages alone, for machines
# that reach Debian's archive but no image registry (docs/docker.md, "Base image").
# Needs root and debootstrap. Does nothing when the tag exists (--rebuild: make it again).
#   devnet/docker/base-image.sh [--rebuild]
# Environment: MOTUS_BASE_IMAGE (tag, default motus-base:bookworm),
#              MOTUS_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -eu
tag=${MOTUS_BASE_IMAGE:-motus-base:bookworm}
mirror=${MOTUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "${1:-}" != "--rebuild" ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag exists"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    echo "base-image.sh: needs debootstrap (as root: apt-get install debootstrap)" >&2
    exit 2
fi
root=$(mktemp -d /tmp/motus-base.XXXXXX)
trap 'rm -rf "$root"' EXIT INT TERM
# minbase: dpkg, apt and the Essential set; python3 is Debian's 3.11 (the ABI of the
# wheels built by wheels.sh); python3-venv for the image's virtualenv; libgmp10 for fastecdsa.
debootstrap --variant=minbase --include=python3,python3-venv,libgmp10 bookworm "$root" "$mirror"
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag"
echo "base image $tag built from $mirror"

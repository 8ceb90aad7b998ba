#!/usr/bin/env bash
# The Debian base image, made from Debian's packages (no image registry needed): debootstrap
# minbase bookworm, imported into podman. Kept between runs: an existing image is reused.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_machine
if podman image exists "$HP_CT_BASE_IMAGE"; then
    say "base image $HP_CT_BASE_IMAGE: cached"; exit 0
fi
mirror="${HP_CT_DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}"
mirror="${mirror:-http://deb.debian.org/debian}"
root="$(mktemp -d "${TMPDIR:-/tmp}/hp-debootstrap.XXXXXX")"
trap 'rm -rf "$root"' EXIT
t0=$(date +%s.%N)
say "debootstrap --variant=minbase bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; die "debootstrap failed (log above): is $mirror reachable?"; }
rm -f "$root.log"
# apt inside the builds uses the same mirror; no caches or docs in the image.
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# mktemp made the root folder 0700: as the image's / it would lock out every non-root user.
chmod 0755 "$root"
tar -C "$root" -c . | podman import -q --change 'CMD ["/bin/bash"]' - "$HP_CT_BASE_IMAGE" >/dev/null
say "base image $HP_CT_BASE_IMAGE made in $(since "$t0")s"

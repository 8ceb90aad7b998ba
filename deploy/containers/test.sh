#!/usr/bin/env bash
# make containers-test: the image built here, the stack up in containers, the container tests
# (hybrid_pipelines_tests/containers: image, stack, a container per run, kube play), then
# everything down; fails naming the missing piece where the machine cannot run containers, and
# fails when anything of ours is left running.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
PY="${HP_CT_HOST_PYTHON:-$REPO/.venv/bin/python}"
t0=$(date +%s.%N)
declare -a timings=()
phase() { timings+=("$(printf '%-8s %6ss' "$1" "$2")"); }

require_machine
# Installed is not enough: the kernel and runtime must start a container.
if podman image exists "$HP_CT_BASE_IMAGE"; then
    err="$(podman run --rm "$HP_CT_BASE_IMAGE" true 2>&1)" \
        || die "podman cannot start a container on this machine (runc, cgroups or namespaces): $err"
fi

leftovers() {
    podman ps -a --format '{{.Names}}' | grep -E "^${COMPOSE_PROJECT_NAME}_|hybrid-pipelines-user-code" || true
    run_containers
    podman pod ls -q --filter "name=hybrid-pipelines" || true
    pidfile="$HP_CT_RUN_DIR/podman-service.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && echo "podman system service (pid $(cat "$pidfile"))"
    [ -S "$HP_CT_SOCKET" ] && echo "socket $HP_CT_SOCKET"
    return 0
}
finish() {
    local rc=$? t
    t=$(date +%s.%N)
    bash "$HERE/down.sh" || rc=1
    phase down "$(since "$t")"
    left="$(leftovers)"
    if [ -n "$left" ]; then
        echo "[containers] ERROR: left behind after containers-down:" >&2; echo "$left" >&2; rc=1
    fi
    say "summary:"; printf '  %s\n' "${timings[@]}"
    say "$(podman image inspect --format '{{.Size}}' "$HYBRID_PIPELINES_IMAGE" 2>/dev/null \
        | awk -v n="$HYBRID_PIPELINES_IMAGE" '{printf "IMAGE SIZE %s: %.0f MB", n, $1/1e6}')"
    say "containers-test $([ "$rc" = 0 ] && echo PASSED || echo FAILED) in $(since "$t0")s"
    exit "$rc"
}
trap finish EXIT

t=$(date +%s.%N)
bash "$HERE/build-images.sh" || exit 1
phase images "$(since "$t")"
if ! err="$(podman run --rm "$HP_CT_BASE_IMAGE" true 2>&1)"; then
    die "podman cannot start a container on this machine (runc, cgroups or namespaces): $err"
fi

t=$(date +%s.%N)
HP_CT_SKIP_BUILD=1 bash "$HERE/up.sh" || exit 1
phase up "$(since "$t")"

t=$(date +%s.%N)
CI="${CI:-true}" "$PY" -m pytest "$REPO/hybrid_pipelines_tests/containers" -p no:cacheprovider \
    -q -rA ${PYTEST_ARGS:-}
rc=$?
phase tests "$(since "$t")"
exit "$rc"

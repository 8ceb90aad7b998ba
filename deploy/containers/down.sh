#!/usr/bin/env bash
# Stop the container flavour: the services' containers, any run container left behind and the
# engine API service. Volumes (and the secrets protecting them) stay.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v podman >/dev/null || die "podman is not installed: nothing of the container flavour can be running"
if [ -s "$HP_CT_ENV_FILE" ]; then export_env; fi
if command -v podman-compose >/dev/null && [ -s "$HP_CT_ENV_FILE" ]; then
    (cd "$HERE" && "${COMPOSE[@]}" down) >"$HP_CT_RUN_DIR/compose-down.log" 2>&1 || true
fi
# Whatever compose did not remove (no env file, an interrupted up).
for svc in "${SERVICES[@]}"; do
    podman rm -f -t 5 "$(container_name "$svc")" >/dev/null 2>&1 || true
done
left="$(run_containers)"
[ -z "$left" ] || { podman rm -f -t 5 $left >/dev/null; say "removed run containers: $left"; }
pidfile="$HP_CT_RUN_DIR/podman-service.pid"
if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"; for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile" "$HP_CT_SOCKET"
fi
say "containers down (volumes kept: $(podman volume ls -q --filter name=hybrid-pipelines-ct | tr '\n' ' '))"

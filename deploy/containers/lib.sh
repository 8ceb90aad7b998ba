# Shared by the deploy/containers scripts (sourced): podman's settings, ports, paths, checks.
# Every setting can be overridden from the environment.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"

# Storage: overlay (storage.conf) where the kernel mounts overlayfs on the store's file system,
# else vfs (storage-vfs.conf, much slower). Probed once per shell (a mount and an unmount, ms).
overlay_problem() {
    local parent=/var/lib d err
    mkdir -p "$parent/hybrid-pipelines-containers" 2>/dev/null && parent="$parent/hybrid-pipelines-containers"
    d="$(mktemp -d "$parent/.overlay-probe.XXXXXX" 2>&1)" || { echo "$d"; return; }
    mkdir -p "$d/lower" "$d/upper" "$d/work" "$d/merged"
    if err="$(mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" \
            "$d/merged" 2>&1)"; then
        umount "$d/merged" || err="umount $d/merged failed"
    else
        err="${err:-mount -t overlay failed}"
    fi
    mountpoint -q "$d/merged" || rm -rf "$d"
    echo "$err"
}
if [ -z "${CONTAINERS_STORAGE_CONF:-}" ] && [ "$(id -u)" != 0 ]; then
    export CONTAINERS_STORAGE_CONF="$HERE/storage.conf"  # no probe: require_machine wants root
elif [ -z "${CONTAINERS_STORAGE_CONF:-}" ]; then
    if probe="$(overlay_problem)" && [ -z "$probe" ]; then
        export CONTAINERS_STORAGE_CONF="$HERE/storage.conf"
    else
        printf '[containers] NOTE: overlay storage unavailable (mount -t overlay under /var/lib: %s); falling back to vfs storage (storage-vfs.conf): every build step and container start copies the whole root filesystem, expect builds of tens of minutes\n' "$probe" >&2
        export CONTAINERS_STORAGE_CONF="$HERE/storage-vfs.conf"
    fi
    unset probe
fi
# The catalog's mount check (HP_SQLITE_CATALOG_REQUIRE_MOUNT, compose.yaml): on vfs a volume is
# a bind mount from the container root's own device, which os.path.ismount cannot tell from a
# folder, so every run would fail it; on overlay the root is a device of its own and it holds.
case "$CONTAINERS_STORAGE_CONF" in *vfs*) req=false ;; *) req=true ;; esac
export HP_CT_CATALOG_REQUIRE_MOUNT="${HP_CT_CATALOG_REQUIRE_MOUNT:-$req}"
unset req

# Images: the Debian base (debootstrap), the project image, the backend servers' image.
# The tag changes when build-base.sh changes what it makes (r2: / is 0755, not 0700).
export HP_CT_BASE_IMAGE="${HP_CT_BASE_IMAGE:-localhost/hybrid-pipelines/debian:bookworm-r2}"
export HYBRID_PIPELINES_IMAGE="${HYBRID_PIPELINES_IMAGE:-localhost/hybrid-pipelines:latest}"
export HP_CT_SERVICES_IMAGE="${HP_CT_SERVICES_IMAGE:-localhost/hybrid-pipelines-services:latest}"

# Loopback ports: a dedicated range below the kernel's ephemeral ports (32768+, where the
# tests' and `make dev`'s free ports come from) and below 20000 also for SeaweedFS's gRPC
# twins (+10000). HP_CT_PORT_BASE moves them all.
base="${HP_CT_PORT_BASE:-9400}"
export HP_CT_WEBSERVER_PORT="${HP_CT_WEBSERVER_PORT:-$((base + 0))}"
export HP_CT_CODE_PORT="${HP_CT_CODE_PORT:-$((base + 1))}"
export HP_CT_PG_PORT="${HP_CT_PG_PORT:-$((base + 2))}"
export HP_CT_SMB_PORT="${HP_CT_SMB_PORT:-$((base + 3))}"
export HP_CT_FIRESTORE_PORT="${HP_CT_FIRESTORE_PORT:-$((base + 4))}"
export HP_CT_KUBE_CODE_PORT="${HP_CT_KUBE_CODE_PORT:-$((base + 5))}"
export HP_CT_SW_MASTER_PORT="${HP_CT_SW_MASTER_PORT:-$((base + 10))}"
export HP_CT_SW_VOLUME_PORT="${HP_CT_SW_VOLUME_PORT:-$((base + 11))}"
export HP_CT_SW_FILER_PORT="${HP_CT_SW_FILER_PORT:-$((base + 12))}"
export HP_CT_SW_S3_PORT="${HP_CT_SW_S3_PORT:-$((base + 13))}"
unset base

# State (secrets, the API socket) and caches live outside the repository: CI runs from a fresh
# clone each time, and the debootstrap base and the wheelhouse are slow to make.
# The secrets live as long as the volumes they protect (PostgreSQL keeps its password).
export HP_CT_STATE_DIR="${HP_CT_STATE_DIR:-/var/lib/hybrid-pipelines-containers}"
export HP_CT_CACHE_DIR="${HP_CT_CACHE_DIR:-/var/cache/hybrid-pipelines-containers}"
export HP_CT_RUN_DIR="${HP_CT_RUN_DIR:-/run/hybrid-pipelines-containers}"
export HP_CT_SOCKET="${HP_CT_SOCKET:-$HP_CT_RUN_DIR/podman.sock}"
export HP_CT_ENV_FILE="${HP_CT_ENV_FILE:-$HP_CT_STATE_DIR/stack.env}"
export COMPOSE_PROJECT_NAME=hybrid-pipelines-ct
# podman-compose via a shim for its host-network bug (podman_compose_host.py).
COMPOSE=(/usr/bin/python3 "$HERE/podman_compose_host.py" -p "$COMPOSE_PROJECT_NAME" -f "$HERE/compose.yaml")
# Containers of the stack, and of the runs it launched (label from DockerRunLauncher).
SERVICES=(postgres seaweedfs samba firestore code-location webserver daemon)
VOLUMES=(pg-data seaweedfs nas catalog shared hot dagster-storage)
container_name() { echo "${COMPOSE_PROJECT_NAME}_$1_1"; }
run_containers() { podman ps -a -q --filter label=dagster/run_id --filter "ancestor=$HYBRID_PIPELINES_IMAGE"; }
export_env() { set -a; # shellcheck disable=SC1090
    source "$HP_CT_ENV_FILE"; set +a; }

say() { printf '[containers %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[containers] ERROR: %s\n' "$*" >&2; exit 1; }

# What this machine lacks to run the container flavour, one line each (empty: nothing).
missing_pieces() {
    local tool pkg
    for tool in podman:podman runc:runc debootstrap:debootstrap podman-compose:podman-compose; do
        pkg="${tool#*:}"; tool="${tool%%:*}"
        command -v "$tool" >/dev/null 2>&1 || echo "$tool (apt-get install $pkg; make containers-packages)"
    done
    [ "$(id -u)" = 0 ] || echo "root (podman runs rootful here: vfs storage, runc, host network)"
}

require_machine() {
    local missing
    missing="$(missing_pieces)"
    [ -z "$missing" ] || die "this machine cannot run the containers; missing:
$missing"
}

# Seconds since $1 (an epoch), one decimal.
since() { awk -v s="$1" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-s}'; }

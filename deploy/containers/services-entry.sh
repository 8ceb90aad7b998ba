#!/bin/bash
# One backend server per container of the services image, on host networking: each listens on
# 127.0.0.1 at the port its *_PORT variable names. Secrets arrive as environment variables
# (from the env file generated at run time), never baked into the image.
#   services-entry postgres | samba | seaweedfs | firestore | health <server>
set -euo pipefail
role="${1:?usage: services-entry postgres|samba|seaweedfs|firestore|health <server>}"
need() { [ -n "${!1:-}" ] || { echo "services-entry $role: set $1" >&2; exit 2; }; }

postgres() {
    need PG_PORT; need POSTGRES_PASSWORD
    local bin=/usr/lib/postgresql/15/bin data=/var/lib/postgresql/data
    mkdir -p "$data" /run/postgresql
    chown -R postgres:postgres "$data" /run/postgresql
    chmod 0700 "$data"
    if [ ! -s "$data/PG_VERSION" ]; then
        local pw; pw="$(mktemp)"; chown postgres "$pw"
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
        runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --pwfile="$pw" \
            --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
        rm -f "$pw"
        # First start: the databases of postgres-init/*.sql, on a socket only.
        runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w -o "-c listen_addresses=''" start >/dev/null
        for f in /docker-entrypoint-initdb.d/*.sql; do
            [ -f "$f" ] && PGPASSWORD="$POSTGRES_PASSWORD" runuser -u postgres -- \
                psql -v ON_ERROR_STOP=1 -q -h /run/postgresql -U postgres -d postgres -f "$f"
        done
        PGPASSWORD="$POSTGRES_PASSWORD" runuser -u postgres -- psql -q -h /run/postgresql \
            -U postgres -d postgres -c "CREATE DATABASE ${POSTGRES_DB:-dagster}"
        runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w stop >/dev/null
    fi
    exec runuser -u postgres -- "$bin/postgres" -D "$data" -c listen_addresses=127.0.0.1 \
        -c port="$PG_PORT" -c unix_socket_directories=/run/postgresql -c max_connections=200
}

samba() {
    need SMB_PORT; need HP_NAS_USERNAME; need HP_NAS_PASSWORD
    local share=/srv/nas/"${HP_NAS_SHARE:-media}" d=/var/lib/hp-samba
    id "$HP_NAS_USERNAME" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$HP_NAS_USERNAME"
    mkdir -p "$share" "$d"/{private,lock,state,cache,pid,ncalrpc}
    chown "$HP_NAS_USERNAME": "$share"
    # The same server settings as the local stack's NAS (hybrid_pipelines/dev/stack/samba.py).
    cat >"$d/smb.conf" <<CONF
[global]
  interfaces = 127.0.0.1/8
  bind interfaces only = yes
  smb ports = $SMB_PORT
  disable netbios = yes
  server min protocol = SMB3
  server signing = mandatory
  server role = standalone server
  map to guest = never
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  private dir = $d/private
  lock directory = $d/lock
  state directory = $d/state
  cache directory = $d/cache
  pid directory = $d/pid
  ncalrpc dir = $d/ncalrpc
  passdb backend = tdbsam:$d/private/passdb.tdb
  log level = 0

[${HP_NAS_SHARE:-media}]
  path = $share
  valid users = $HP_NAS_USERNAME
  force user = $HP_NAS_USERNAME
  read only = no
  create mask = 0644
  directory mask = 0755
CONF
    printf '%s\n%s\n' "$HP_NAS_PASSWORD" "$HP_NAS_PASSWORD" \
        | smbpasswd -c "$d/smb.conf" -s -a "$HP_NAS_USERNAME" >/dev/null
    exec smbd -F --no-process-group --debug-stdout -s "$d/smb.conf"
}

seaweedfs() {
    need SW_MASTER_PORT; need SW_VOLUME_PORT; need SW_FILER_PORT; need SW_S3_PORT
    need HP_SEAWEEDFS_ACCESS_KEY; need HP_SEAWEEDFS_SECRET_KEY
    mkdir -p /data/weed
    umask 077
    printf '{"identities":[{"name":"hybrid","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
        "$HP_SEAWEEDFS_ACCESS_KEY" "$HP_SEAWEEDFS_SECRET_KEY" >/tmp/s3.json
    # The buckets every resource expects, once the filer answers (an existing one stays).
    (
        for _ in $(seq 1 60); do
            sleep 2
            have="$(echo s3.bucket.list | weed shell -master="127.0.0.1:$SW_MASTER_PORT" \
                -filer="127.0.0.1:$SW_FILER_PORT" 2>/dev/null)" || continue
            missing=0
            for b in ${SW_BUCKETS:-media-cache cold-models generated-outputs jfs models}; do
                grep -qw "$b" <<<"$have" && continue
                missing=1
                echo "s3.bucket.create -name $b" | weed shell -master="127.0.0.1:$SW_MASTER_PORT" \
                    -filer="127.0.0.1:$SW_FILER_PORT" >/dev/null 2>&1 || true
            done
            [ "$missing" = 0 ] && { touch /tmp/buckets-ready; exit 0; }
        done
        echo "seaweedfs: buckets still missing after 120 s" >&2
    ) &
    exec weed server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir=/data/weed \
        -master.port="$SW_MASTER_PORT" -master.telemetry=false -master.volumeSizeLimitMB=256 \
        -volume.port="$SW_VOLUME_PORT" -volume.max=100 -volume.preStopSeconds=0 \
        -filer -filer.port="$SW_FILER_PORT" \
        -s3 -s3.port="$SW_S3_PORT" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config=/tmp/s3.json
}

firestore() {
    need FIRESTORE_PORT
    exec java -Duser.language=en -Xmx512m -cp /opt/firestore/cloud-firestore-emulator.jar \
        com.google.cloud.datastore.emulator.firestore.CloudFirestore start \
        --host=127.0.0.1 --port="$FIRESTORE_PORT" --project_id="${HP_FIRESTORE_PROJECT:-demo-hybrid}"
}

health() {
    case "${1:?health of which server}" in
        postgres) runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_isready -q \
                      -h 127.0.0.1 -p "$PG_PORT" ;;
        samba) timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SMB_PORT" ;;
        seaweedfs) curl -fsS -o /dev/null "http://127.0.0.1:$SW_S3_PORT/healthz" \
                       && [ -f /tmp/buckets-ready ] ;;
        firestore) curl -fsS -o /dev/null "http://127.0.0.1:$FIRESTORE_PORT/" ;;
        *) echo "no health check for $1" >&2; exit 2 ;;
    esac
}

case "$role" in
    postgres|samba|seaweedfs|firestore) "$role" ;;
    health) shift; health "$@" ;;
    *) echo "services-entry: unknown server $role" >&2; exit 2 ;;
esac

"""NAS polling sensor: adds a partition per new top-level folder and requests runs only for
the partitions whose files changed (new, changed, renamed, deleted, still being written) or
whose catalog has unfinished work. Cheap: see change_detection.detect_changes.

Pending sensor: the second look at files still being written, every few seconds, so a
finished upload is probed as soon as the stability rule allows rather than a whole NAS
sensor interval later. It reads the catalog's pending rows (an indexed query) and touches
the NAS only when one of them is due, listing just their directories."""

import json
import time

import dagster as dg

from hybrid_pipelines.defs.media_catalog.assets import media_catalog_folders, media_catalog_job
from hybrid_pipelines.defs.pools import CATALOG_TAGS, TRIGGER_TAG
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore, apply_schema, has_schema
from hybrid_pipelines.media_catalog.change_detection import (
    detect_changes,
    known_paths,
    list_pending_dirs,
    pending_files,
)
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.rules.catalog_paths import (
    folder_for,
    is_ignored,
    is_ignored_dir_name,
    name_problem,
    partition_key_for,
)
from hybrid_pipelines.media_catalog.rules.upload_stability import (
    dirs_to_list,
    judge,
    parse_seen,
    split_due,
)
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME, CatalogSettings
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource

SENSOR_INTERVAL_S = 60
PENDING_INTERVAL_S = 5


def _partitions_with_active_runs(instance: dg.DagsterInstance) -> set[str]:
    runs = instance.get_runs(filters=dg.RunsFilter(
        job_name=media_catalog_job.name,
        statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                  dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
    return {r.tags["dagster/partition"] for r in runs if "dagster/partition" in r.tags}


@dg.sensor(
    job=media_catalog_job, minimum_interval_seconds=SENSOR_INTERVAL_S,
    # Running by default, like every schedule and sensor here: a fresh deployment starts
    # scanning the NAS with the daemon. Stop it from the UI or `dagster sensor stop`.
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls the NAS every 60 s; one run per changed top-level folder.",
)
def media_catalog_nas_sensor(context: dg.SensorEvaluationContext, nas: NASResource,
                             sqlite_catalog: SQLiteCatalogResource) -> dg.SensorResult:
    settings = CatalogSettings.from_env()
    access = NASAccess(nas, settings.retry_delays_s, log=context.log.warning)
    root = access.list_dir(settings.nas_root)
    if root is None:
        raise RuntimeError(f"the catalogued root {settings.nas_root or '/'!r} does not exist on "
                           f"{nas.address}; check HP_CATALOG_NAS_ROOT and HP_NAS_SHARE")
    folders = {e.name: e for e in root
               if e.is_dir and not is_ignored_dir_name(e.name, settings.rules)}
    for name in sorted(folders):
        why = name_problem(name)
        if why is not None:
            # No path check accepts it, so it can never be scanned: report it and carry on
            # with the other folders rather than failing every tick.
            del folders[name]
            context.log.warning(f"skipped top-level folder {name!r}: {why}")
    loose = sum(1 for e in root if not e.is_dir)
    if loose:
        context.log.debug(f"{loose} file(s) at the catalogued root belong to no catalog")
    known = set(context.instance.get_dynamic_partitions(PARTITIONS_NAME))
    new_keys = sorted({partition_key_for(name) for name in folders} - known)
    try:
        last: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    except json.JSONDecodeError:
        last = {}
    cursor: dict[str, str] = {}
    requests = []
    active = _partitions_with_active_runs(context.instance)
    with sqlite_catalog.connect() as conn:
        if not has_schema(conn):  # read-only otherwise: never wait on a scan's write lock
            apply_schema(conn)
        store = CatalogStore(conn)
        for pk in sorted(known | set(new_keys)):
            if pk in active:
                if pk in last:
                    cursor[pk] = last[pk]
                continue  # its queued or running run will see the same changes
            name = folder_for(pk)
            if name_problem(name) is not None:
                continue  # a partition added by hand for a folder that cannot be scanned
            entry = folders.get(name)
            changes = detect_changes(store, access, settings, pk, settings.folder_path(name),
                                     entry.mtime if entry else None)
            if changes.busy and pk in last:
                cursor[pk] = last[pk]
            if not changes.reasons:
                continue
            fp = changes.fingerprint
            cursor[pk] = fp
            if last.get(pk) == fp:
                continue  # already requested for this very state (it failed: see the run)
            context.log.info(f"{pk}: {changes.summary()}")
            requests.append(dg.RunRequest(
                partition_key=pk, run_key=f"{pk}:{fp}",
                tags={**CATALOG_TAGS, TRIGGER_TAG: "nas_sensor"}))
    skipped = sum(1 for e in root if e.is_dir and e.name not in folders
                  and not is_ignored_dir_name(e.name, settings.rules))
    context.log.info(f"{len(folders)} folder(s), {len(new_keys)} new, {len(requests)} run(s) "
                     f"requested, {skipped} skipped for their names, {access.listings} "
                     "directories listed")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[media_catalog_folders.build_add_request(new_keys)]
        if new_keys else [],
        cursor=json.dumps(cursor, sort_keys=True, ensure_ascii=False))


def _load_cursor(raw: str | None) -> dict:
    try:
        got = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return got if isinstance(got, dict) else {}


@dg.sensor(
    job=media_catalog_job, minimum_interval_seconds=PENDING_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 5 s: second look at files still being written (only those due, only "
                "their directories); a run when one became stable. No NAS I/O otherwise.",
)
def media_catalog_pending_sensor(context: dg.SensorEvaluationContext, nas: NASResource,
                                 sqlite_catalog: SQLiteCatalogResource
                                 ) -> dg.SensorResult | dg.SkipReason:
    settings = CatalogSettings.from_env()
    rule, now = settings.stability, time.time()
    known = context.instance.get_dynamic_partitions(PARTITIONS_NAME)
    if not known:
        return dg.SkipReason("no catalog folders yet")
    with sqlite_catalog.connect() as conn:
        if not has_schema(conn):
            return dg.SkipReason("no catalog yet: the NAS sensor's first run creates it")
        pending = pending_files(CatalogStore(conn), known)
    if not pending:
        return dg.SkipReason("no file is being written")
    active = _partitions_with_active_runs(context.instance)
    # A queued or running run takes its second look itself; a scan in progress may rewrite
    # the rows under us.
    due, next_at = split_due((f for f in pending if f.partition_key not in active), now, rule)
    if not due:
        wait = f"next due in {next_at - now:.0f} s" if next_at is not None else \
            "their folders have a run in flight"
        return dg.SkipReason(f"{len(pending)} file(s) being written, none due ({wait})")
    access = NASAccess(nas, settings.retry_delays_s, log=context.log.warning)
    dirs = dirs_to_list(due)
    listed = list_pending_dirs(access, dirs)
    with sqlite_catalog.connect() as conn:
        known_here = known_paths(CatalogStore(conn), dirs)
    last_seen = parse_seen(_load_cursor(context.cursor).get("seen"))
    verdicts = judge(due, listed, last_seen, now, rule, known_here,
                     lambda p: is_ignored(settings.relative(p), settings.rules))
    requests = []
    for pk in verdicts.partitions():
        reasons = verdicts.reasons(pk)
        context.log.info(f"{pk}: {'; '.join(reasons[:3])}"
                         + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else ""))
        requests.append(dg.RunRequest(
            partition_key=pk, run_key=f"{pk}:pending:{verdicts.fingerprint(pk)}",
            tags={**CATALOG_TAGS, TRIGGER_TAG: "pending_sensor"}))
    cursor = json.dumps({"seen": {p: list(v) if v else None
                                  for p, v in sorted(verdicts.seen.items())}},
                        sort_keys=True, ensure_ascii=False)
    if not requests:
        context.update_cursor(cursor)
        return dg.SkipReason(f"{len(due)} due file(s) in {len(dirs)} folder(s) listed: "
                             f"{len(verdicts.moving)} still changing")
    return dg.SensorResult(run_requests=requests, cursor=cursor)

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

from hybrid_pipelines.defs.media_catalog.assets import (
    ScanConfig,
    media_catalog_folders,
    media_catalog_job,
)
from hybrid_pipelines.defs.pools import CATALOG_TAGS, TRIGGER_TAG
from hybrid_pipelines.defs.sensor_cadence import EVERY_WAKE_S
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore, apply_schema, has_schema
from hybrid_pipelines.media_catalog.change_detection import (
    catalog_rows,
    detect_changes,
    list_pending_dirs,
    pending_files,
)
from hybrid_pipelines.media_catalog.change_notify import Drained, ShareWatcher, watcher_of
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.rules.catalog_paths import (
    folder_for,
    is_ignored,
    is_ignored_dir_name,
    name_problem,
    partition_key_for,
)
from hybrid_pipelines.media_catalog.rules.first_look import (
    Look,
    dir_of,
    dump_looks,
    forget_old,
    observe,
    parse_looks,
    split_due_looks,
)
from hybrid_pipelines.media_catalog.rules.first_look import fingerprint as look_fingerprint
from hybrid_pipelines.media_catalog.rules.notify_events import (
    covers,
    to_catalog_dirs,
    top_folder,
)
from hybrid_pipelines.media_catalog.rules.upload_stability import (
    dirs_to_list,
    judge,
    parse_seen,
    split_due,
)
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME, CatalogSettings
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource
from hybrid_pipelines.shared.sensor_cursor import load_cursor

SENSOR_INTERVAL_S = 60
PENDING_INTERVAL_S = EVERY_WAKE_S  # every 5 s, on each wake of the daemon
# The run for an upload is requested this long before its second look is due, so the run's
# queue and launch overlap the wait; its scan takes the second look (assets.ScanConfig).
RUN_LEAD_S = 10.0
# The NAS sensor leaves a directory to the pending sensor this long after its last change
# notification (plus min_stable_s); then the poll takes over whatever is left.
DEFER_MARGIN_S = 60.0


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
    watcher = watcher_of(nas, settings.nas_root, settings.change_notify)
    got = watcher.recent_dirs(settings.stability.min_stable_s + DEFER_MARGIN_S) \
        if watcher is not None else None
    recent = to_catalog_dirs(got, settings.nas_root) if got is not None else None
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
            if recent is not None and changes.only_writes_in(lambda d: covers(recent, d)):
                # Uploads the pending sensor was notified of and runs for (one run each,
                # after their second look); a run here would take the slot it waits for.
                context.log.info(f"{pk}: {changes.summary()}: left to the pending sensor")
                if pk in last:
                    cursor[pk] = last[pk]
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


@dg.sensor(
    job=media_catalog_job, minimum_interval_seconds=PENDING_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 5 s: first look at what the NAS's change notifications name and second "
                "look at files still being written (only their directories); one run per "
                "upload once its second look is due. No NAS I/O otherwise.",
)
def media_catalog_pending_sensor(context: dg.SensorEvaluationContext, nas: NASResource,
                                 sqlite_catalog: SQLiteCatalogResource
                                 ) -> dg.SensorResult | dg.SkipReason:
    settings = CatalogSettings.from_env()
    rule, now = settings.stability, time.time()
    known = context.instance.get_dynamic_partitions(PARTITIONS_NAME)
    if not known:
        return dg.SkipReason("no catalog folders yet")
    watcher = watcher_of(nas, settings.nas_root, settings.change_notify)
    drained = watcher.drain() if watcher is not None else None
    with sqlite_catalog.connect() as conn:
        if not has_schema(conn):
            return dg.SkipReason("no catalog yet: the NAS sensor's first run creates it")
        pending = pending_files(CatalogStore(conn), known)
    state = load_cursor(context.cursor)
    first = parse_looks(state.get("first"))
    vouched = forget_old(parse_looks(state.get("vouched")), now)
    active = _partitions_with_active_runs(context.instance)
    notified = notified_dirs(drained, settings, known) if drained else {}
    # A queued or running run takes its second look itself; a scan in progress may rewrite
    # the rows under us. Files the sensor tracks itself are due by their first look.
    due, next_at = split_due((f for f in pending if f.partition_key not in active
                              and f.path not in first), now, rule, RUN_LEAD_S)
    looks_due, next_look = split_due_looks(
        {p: v for p, v in first.items() if _partition_of(p, settings) not in active},
        now, rule, RUN_LEAD_S)
    dirs = sorted(set(dirs_to_list(due)) | set(notified) | {dir_of(p) for p in looks_due})
    if not dirs:
        nxt = min((t for t in (next_at, next_look) if t is not None), default=None)
        why = ("no file is being written" if not pending and not first else
               f"{len(pending) + len(first)} file(s) being written, none due ("
               + (f"next due in {nxt - now:.0f} s)" if nxt is not None
                  else "their folders have a run in flight)"))
        _keep_cursor(context, state, first, vouched)
        _watch_note(context, watcher, drained)
        return dg.SkipReason(why)
    access = NASAccess(nas, settings.retry_delays_s, log=context.log.warning)
    listed = list_pending_dirs(access, dirs)
    with sqlite_catalog.connect() as conn:
        rows = catalog_rows(CatalogStore(conn), dirs)

    def ignored(p: str) -> bool:
        return is_ignored(settings.relative(p), settings.rules)

    first = observe(listed, rows, first, vouched, now, ignored)
    looks_due, _ = split_due_looks({p: v for p, v in first.items() if dir_of(p) in listed
                                    and _partition_of(p, settings) not in active},
                                   now, rule, RUN_LEAD_S)
    last_seen = parse_seen(state.get("seen"))
    verdicts = judge(due, listed, last_seen, now, rule, lead_s=RUN_LEAD_S)
    requests = []
    by_pk: dict[str, dict] = {}
    for path, look in looks_due.items():
        pk = _partition_of(path, settings)
        if pk is not None:
            by_pk.setdefault(pk, {})[path] = look
    for pk in sorted(set(verdicts.partitions()) | set(by_pk)):
        reasons = verdicts.reasons(pk) + [f"file {p!r} first seen {now - v.at:.0f} s ago"
                                          for p, v in sorted(by_pk.get(pk, {}).items())]
        context.log.info(f"{pk}: {'; '.join(reasons[:3])}"
                         + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else ""))
        # The run waits for the due looks (first looks, and pending rows confirmed ahead);
        # the partition's other first looks go along so its scan, which lists their
        # directories anyway, records them pending from the sensor's look, not its own.
        looks = {**by_pk.get(pk, {}), **{p: Look(*v) for p, v in verdicts.ahead.get(pk,
                                                                                   {}).items()}}
        early = {p: v for p, v in first.items()
                 if p not in looks and _partition_of(p, settings) == pk}
        requests.append(dg.RunRequest(
            partition_key=pk,
            run_key=f"{pk}:pending:{verdicts.fingerprint(pk)}:{look_fingerprint(looks)}",
            run_config=dg.RunConfig(ops={"nas_media_files": ScanConfig(
                vouched=dump_looks(looks), first_looks=dump_looks(early))})
            if looks or early else None,
            tags={**CATALOG_TAGS, TRIGGER_TAG: "pending_sensor"}))
        for p, v in {**looks, **early}.items():
            vouched[p] = v
            first.pop(p, None)
    cursor = _cursor(verdicts.seen, first, vouched)
    if not requests:
        context.update_cursor(cursor)
        _watch_note(context, watcher, drained)
        return dg.SkipReason(f"{len(due)} due file(s) in {len(dirs)} folder(s) listed: "
                             f"{len(verdicts.moving)} still changing; {len(first)} first "
                             "look(s) not due yet")
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def _partition_of(path: str, settings: CatalogSettings) -> str | None:
    folder = top_folder(dir_of(path), settings.nas_root)
    return partition_key_for(folder) if folder else None


def notified_dirs(drained: Drained, settings: CatalogSettings, known: list[str]
                  ) -> dict[str, str]:
    """Notified directories (share-relative) in a known partition -> its key."""
    keys = set(known)
    out: dict[str, str] = {}
    for d in to_catalog_dirs(drained.dirs, settings.nas_root):
        folder = top_folder(d, settings.nas_root)
        if folder is None or name_problem(folder) is not None:
            continue
        pk = partition_key_for(folder)
        if pk in keys and not any(is_ignored_dir_name(part, settings.rules)
                                  for part in settings.relative(d).split("/") if part):
            out[d] = pk
    return out


def _cursor(seen: dict, first: dict, vouched: dict) -> str:
    return json.dumps({"seen": {p: list(v) if v else None for p, v in sorted(seen.items())},
                       "first": dump_looks(first), "vouched": dump_looks(vouched)},
                      sort_keys=True, ensure_ascii=False)


def _keep_cursor(context: dg.SensorEvaluationContext, state: dict, first: dict,
                 vouched: dict) -> None:
    cursor = _cursor(parse_seen(state.get("seen")), first, vouched)
    if cursor != context.cursor:
        context.update_cursor(cursor)


def _watch_note(context: dg.SensorEvaluationContext, watcher: ShareWatcher | None,
                drained: Drained | None) -> None:
    if watcher is not None and drained is not None and not drained.complete:
        context.log.debug(f"change notifications unavailable ({watcher.error or 'starting'}): "
                          "the NAS sensor's poll covers new uploads")

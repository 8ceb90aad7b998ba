"""Console commands of the media catalog: `hybrid-pipelines probe PATH...`,
`catalog-partitions` and `catalog reprobe`.

PATH is a local file or folder, or `smb://user@host[:port]/share/path` (password from
HP_NAS_PASSWORD, never from the URL). Prints one JSON object per file and exits non-zero
if any file could not be probed as valid media.

`catalog reprobe [FOLDER] [--invalid] [--error TEXT] [--no-run]` marks the selected files of
the SQLite catalog for a re-probe (due now, attempts start over), then has them probed
through Dagster runs of media_catalog_job, one per affected partition: with DAGSTER_HOME set
(and no --no-run) the runs execute now, in this process, on that instance, tagged
hybrid_pipelines/trigger=reprobe, and show in the UI like any run (resources come from the
environment as EnvVars, as in the Definitions, so no secret is stored with the run);
otherwise nothing is launched here: the NAS sensor requests a run for each partition on its
next tick (its files are due), and the command to run one now is printed. A file that becomes
valid is written with a new change number, so the run's catalog and Firestore steps carry it
on with its metadata."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

RESULT_KEYS = ("path", "ok", "bytes_read", "format", "duration", "bit_rate", "video_codec",
               "width", "height", "fps", "audio_codec", "channels", "sample_rate", "error")


REPROBE_TRIGGER = "reprobe"


class UsageError(ValueError):
    pass


@dataclass(frozen=True)
class SMBTarget:
    host: str
    port: int
    share: str
    path: str
    username: str


def parse_smb_url(url: str) -> SMBTarget:
    parts = urlsplit(url)
    if parts.scheme.lower() != "smb":
        raise UsageError(f"{url!r} is not an smb:// URL")
    if parts.password is not None:
        shown = url.replace(f":{parts.password}@", ":***@", 1)
        raise UsageError(f"{shown!r} carries a password; put it in HP_NAS_PASSWORD instead "
                         "(URLs end up in shell history and process lists)")
    if not parts.hostname:
        raise UsageError(f"{url!r} has no host; expected smb://user@host:port/share/path")
    try:
        port = parts.port or 445
    except ValueError as exc:
        raise UsageError(f"{url!r} has an invalid port") from exc
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise UsageError(f"{url!r} names no share; expected smb://user@host:port/share/path")
    return SMBTarget(parts.hostname, port, segments[0], "/".join(segments[1:]),
                     unquote(parts.username or ""))


def _failure(path: str, error: str) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    out.update(path=path, ok=False, bytes_read=0, error=error)
    return out


def _local(arg: str, ffprobe: str, timeout_s: float,
           limits: dict[str, int]) -> Iterator[dict[str, Any]]:
    from hybrid_pipelines.media_catalog.probe import probe_path

    root = Path(arg)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            yield _failure(arg, "folder holds no files")
    elif root.exists():
        files = [root]
    else:
        yield _failure(arg, "no such file or folder")
        return
    for f in files:
        shown = str(f)
        try:
            res = probe_path(f, ffprobe_path=ffprobe, timeout_s=timeout_s,
                             **limits).to_json_dict()
        except OSError as exc:
            yield _failure(shown, f"cannot read: {exc.strerror or exc}")
            continue
        res["path"] = shown
        yield res


def _smb(arg: str, ffprobe: str, timeout_s: float,
         limits: dict[str, int]) -> Iterator[dict[str, Any]]:
    from hybrid_pipelines.media_catalog.probe import probe
    from hybrid_pipelines.resources import NASResource
    from hybrid_pipelines.resources.nas import explain_nas_error
    from hybrid_pipelines.resources.nas_fs import walk_files

    target = parse_smb_url(arg)
    nas = NASResource(protocol="smb", host=target.host, port=target.port, share=target.share,
                      username=target.username,
                      password=os.environ.get("HP_NAS_PASSWORD", ""))
    base = arg.rstrip("/")
    try:
        fs = nas.fs()
        entry = fs.stat(target.path)
        if entry is None:
            yield _failure(arg, f"not found on {nas.address}")
            return
        paths = [e.path for e in walk_files(fs, target.path)] if entry.is_dir else [target.path]
    except Exception as exc:  # noqa: BLE001 - reported per argument, the others go on
        yield _failure(arg, explain_nas_error(exc))
        return
    for rel in paths:
        suffix = rel[len(target.path):].lstrip("/") if entry.is_dir else ""
        shown = f"{base}/{suffix}" if suffix else arg
        try:
            with nas.open_reader(rel) as reader:
                res = probe(reader, ffprobe_path=ffprobe, timeout_s=timeout_s,
                            **limits).to_json_dict()
        except Exception as exc:  # noqa: BLE001 - one line per file, whatever went wrong
            from hybrid_pipelines.media_catalog.probe import FfprobeNotFoundError

            if isinstance(exc, FfprobeNotFoundError):
                raise
            yield _failure(shown, explain_nas_error(exc))
            continue
        res["path"] = shown
        yield res


def probe_command(args: argparse.Namespace) -> int:
    from hybrid_pipelines.media_catalog.probe import FfprobeNotFoundError
    from hybrid_pipelines.media_catalog.settings import SettingsError, probe_limits_from_env

    try:  # the same bounds as the pipeline's probes (HP_PROBE_MAX_READ_BYTES, ...)
        limits = probe_limits_from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for arg in args.paths:
        try:
            results = _smb(arg, args.ffprobe, args.timeout, limits) \
                if arg.lower().startswith("smb://") \
                else _local(arg, args.ffprobe, args.timeout, limits)
            for res in results:
                print(json.dumps({k: res.get(k) for k in RESULT_KEYS}, ensure_ascii=False),
                      flush=True)
                failed += not res.get("ok")
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except FfprobeNotFoundError as exc:
            print(f"error: {exc} (install ffmpeg, or set HP_FFPROBE_PATH / --ffprobe)",
                  file=sys.stderr)
            return 2
    return 1 if failed else 0


def partitions_command(args: argparse.Namespace) -> int:
    """List or add the catalog partitions (top-level NAS folders) of the Dagster instance
    ($DAGSTER_HOME), so a folder can be materialised from the CLI before the sensor ran."""
    import dagster as dg

    from hybrid_pipelines.media_catalog.rules.catalog_paths import (
        is_ignored_dir_name,
        name_problem,
        partition_key_for,
    )
    from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME, CatalogSettings
    from hybrid_pipelines.resources.build import build_resources

    instance = dg.DagsterInstance.get()
    names = list(args.folders)
    if args.from_nas:
        settings = CatalogSettings.from_env()
        nas = build_resources(os.environ, only=("nas",))["nas"]
        try:
            entries = nas.fs().list_dir(settings.nas_root)
        except Exception as exc:  # noqa: BLE001 - explained to the operator
            from hybrid_pipelines.resources.nas import explain_nas_error as explain

            print(f"error: NAS at {nas.address}: {explain(exc)}", file=sys.stderr)
            return 1
        for e in entries:
            name = e.path.rsplit("/", 1)[-1]
            if not e.is_dir or is_ignored_dir_name(name, settings.rules):
                continue
            why = name_problem(name)
            if why is not None:  # it could never be scanned: say so, add the others
                print(f"warning: skipped folder {name!r}: {why}", file=sys.stderr)
                continue
            names.append(name)
    known = set(instance.get_dynamic_partitions(PARTITIONS_NAME))
    try:
        new = sorted({partition_key_for(n) for n in names} - known)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if new:
        instance.add_dynamic_partitions(PARTITIONS_NAME, new)
    for key in sorted(known | set(new)):
        print(f"{key}{'  (added)' if key in new else ''}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "probe", help="probe media files (local or smb://) reading only what is needed",
        description="Probe media files with ffprobe, reading only the bytes the container "
                    "needs. PATH: a local file or folder, or smb://user@host:port/share/path "
                    "(password from HP_NAS_PASSWORD). One JSON object per file; exit code 1 if "
                    "any file is not valid media, 2 on usage errors.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--ffprobe", default=os.environ.get("HP_FFPROBE_PATH", "ffprobe"),
                   help="ffprobe binary (default: $HP_FFPROBE_PATH or ffprobe)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per ffprobe call")
    p.set_defaults(func=probe_command)

    cp = sub.add_parser(
        "catalog-partitions", help="list or add media catalog partitions (top-level NAS folders)",
        description="List the media catalog's partitions in the Dagster instance ($DAGSTER_HOME),"
                    " or add some: by folder name, or every top-level folder of the NAS "
                    "(--from-nas). Then: dagster asset materialize -m "
                    "hybrid_pipelines.definitions --select 'nas_media_files*' --partition NAME")
    cp.add_argument("folders", nargs="*", metavar="FOLDER")
    cp.add_argument("--from-nas", action="store_true",
                    help="add every top-level folder of the NAS (HP_NAS_* variables)")
    cp.set_defaults(func=partitions_command)

    add_reprobe_command(sub)



def _materialize_command(pk: str) -> str:
    return ("hybrid-pipelines dagster asset materialize -m hybrid_pipelines.definitions "
            f"--select 'nas_media_files*' --partition {shlex.quote(pk)}")


def launch_runs(partitions: list[str], instance: Any) -> list[tuple[str, str, bool]]:
    """Run media_catalog_job for each partition on `instance`; (partition, run id, success)."""
    import dagster as dg

    from hybrid_pipelines.defs.pools import CATALOG_TAGS, TRIGGER_TAG
    from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME
    from hybrid_pipelines.resources.build import build_resources

    known = set(instance.get_dynamic_partitions(PARTITIONS_NAME))
    missing = sorted(set(partitions) - known)
    if missing:
        instance.add_dynamic_partitions(PARTITIONS_NAME, missing)
    wiring = dg.load_definitions_from_package_name("hybrid_pipelines.defs.media_catalog")
    defs = dg.Definitions.merge(wiring, dg.Definitions(resources=build_resources()))
    job = defs.resolve_job_def("media_catalog_job")
    out = []
    for pk in partitions:
        result = job.execute_in_process(partition_key=pk, instance=instance,
                                        tags={**CATALOG_TAGS, TRIGGER_TAG: REPROBE_TRIGGER},
                                        raise_on_error=False)
        out.append((pk, result.run_id, result.success))
    return out


def reprobe_command(args: argparse.Namespace) -> int:
    import dagster as dg
    from dagster._core.errors import DagsterHomeNotSetError

    from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
    from hybrid_pipelines.media_catalog.catalog_store.probe_results import ReprobeSelection
    from hybrid_pipelines.media_catalog.settings import CatalogSettings
    from hybrid_pipelines.resources.build import build_resources

    settings = CatalogSettings.from_env()
    folder = settings.folder_path(args.folder.strip("/")) if args.folder else None
    catalog = build_resources(os.environ, only=("sqlite_catalog",))["sqlite_catalog"]
    catalog.apply_schema("catalog")
    selection = ReprobeSelection(folder=folder, invalid_only=args.invalid, error=args.error)
    with catalog.connect() as conn:
        marked = CatalogStore(conn).mark_for_reprobe(selection)
    what = "invalid " if args.invalid or args.error else ""
    where = f" under {folder!r}" if folder else ""
    err = f" whose error contains {args.error!r}" if args.error else ""
    if not marked:
        print(f"no probed {what}file{where}{err} in the catalog {catalog.path}; nothing to do")
        return 0
    for pk, n in marked.items():
        print(f"{pk}: {n} {what}file(s){err} marked for re-probe")
    partitions = sorted(marked)
    instance = None
    why = "--no-run"
    if not args.no_run:
        try:  # Dagster's own lookup of $DAGSTER_HOME
            instance = dg.DagsterInstance.get()
        except DagsterHomeNotSetError:
            why = "DAGSTER_HOME is not set"
    if instance is None:
        print(f"no run launched ({why}): the NAS sensor requests one per partition on its "
              "next tick; to run one now:")
        for pk in partitions:
            print(f"  {_materialize_command(pk)}")
        return 0
    failed = 0
    for pk, run_id, ok in launch_runs(partitions, instance):
        print(f"{pk}: run {run_id} of media_catalog_job {'succeeded' if ok else 'FAILED'}")
        failed += not ok
    return 1 if failed else 0


def add_reprobe_command(sub: Any) -> None:
    cat = sub.add_parser("catalog", help="media catalog operations (reprobe)")
    actions = cat.add_subparsers(dest="catalog_command", required=True)
    rp = actions.add_parser(
        "reprobe", help="probe catalog files again through Dagster runs",
        description="Mark files of the media catalog (SQLite) for a re-probe and run "
                    "media_catalog_job for their partitions on the Dagster instance of "
                    "$DAGSTER_HOME (without it, or with --no-run, the NAS sensor picks them "
                    "up on its next tick). Without --invalid/--error every probed file "
                    "under FOLDER is probed again.")
    rp.add_argument("folder", nargs="?", metavar="FOLDER",
                    help="a catalog folder, or a folder below one (relative to "
                         "HP_CATALOG_NAS_ROOT); default: every catalog")
    rp.add_argument("--invalid", action="store_true", help="only files recorded invalid")
    rp.add_argument("--error", metavar="TEXT",
                    help="only invalid files whose probe error contains TEXT "
                         "(case-insensitive), e.g. 'timed out'")
    rp.add_argument("--no-run", action="store_true",
                    help="only mark the files; print the command that runs them")
    rp.set_defaults(func=reprobe_command)

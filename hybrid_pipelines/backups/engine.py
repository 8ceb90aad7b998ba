"""One backup run: copy every part, verify every part, then write the verdict and apply
retention. The three stages are separate methods so a test can edit state between them.

The manifest is written first with `verified: false`: a run that dies half way (or a second
run in the same month replacing that month's backup) leaves a backup marked unverified,
which retention never counts as one of the N to keep."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybrid_pipelines.backups import buckets, juicefs_meta, pg_tools
from hybrid_pipelines.backups.rules import layout
from hybrid_pipelines.backups.rules.retention import DEFAULT_KEEP, check_label, expired_labels
from hybrid_pipelines.resources import PostgresResource


@dataclass(frozen=True)
class DatabaseSource:
    name: str  # `<resource key>.<database>`: the dump's file name
    pg: PostgresResource


@dataclass(frozen=True)
class BucketSource:
    bucket: str
    client: Any  # boto3 S3 client of the store holding it
    same_store: bool  # on the backup bucket's store: server-side copies


@dataclass(frozen=True)
class MetaSource:
    meta_url: str
    password: str | None = None


@dataclass
class PartResult:
    name: str  # postgres.hybrid, juicefs, bucket:cold-models
    kind: str  # postgres | juicefs | bucket
    key: str = ""  # where it lives in the backup bucket
    bytes: int = 0
    objects: int = 0
    duration_s: float = 0.0
    tables: int = 0
    problems: list[str] = field(default_factory=list)
    error: str = ""
    etag: str = ""  # uploaded dumps: the ETag verified at upload

    @property
    def verified(self) -> bool:
        return not self.error and not self.problems

    def summary(self) -> str:
        if self.error:
            return f"{self.name}: FAILED: {self.error}"
        if self.problems:
            return f"{self.name}: NOT VERIFIED: " + "; ".join(self.problems[:5])
        return (f"{self.name}: verified, {self.objects} object(s), {self.bytes} bytes, "
                f"{self.duration_s:.1f} s")


@dataclass
class Outcome:
    label: str
    parts: list[PartResult]
    deleted: list[str]
    kept: list[str]

    @property
    def verified(self) -> bool:
        return bool(self.parts) and all(p.verified for p in self.parts)


class BackupRun:
    def __init__(self, client: Any, backup_bucket: str, label: str, *,
                 databases: list[DatabaseSource], buckets_: list[BucketSource],
                 meta: MetaSource | None, keep: int = DEFAULT_KEEP,
                 now: datetime | None = None):
        self.client, self.bucket, self.label = client, backup_bucket, check_label(label)
        self.databases, self.buckets, self.meta, self.keep = databases, buckets_, meta, keep
        self.now = now or datetime.now(UTC)
        self.parts: list[PartResult] = []
        self._mirrors: dict[str, buckets.MirrorFacts] = {}

    # ---- stage 1: copy -----------------------------------------------------------------

    def copy_parts(self) -> None:
        buckets.ensure_bucket(self.client, self.bucket)
        self._write_manifest(state="in progress", verified=False)
        with tempfile.TemporaryDirectory(prefix="hp-backup-") as work:
            for db in self.databases:
                self._timed(PartResult(db.name, "postgres",
                                       layout.dump_key(self.label, db.name)),
                            lambda p, db=db: self._dump_database(db, Path(work), p))
            if self.meta is not None:
                meta = self.meta
                self._timed(PartResult("juicefs", "juicefs", layout.juicefs_key(self.label)),
                            lambda p: self._dump_meta(meta, Path(work), p))
        for src in self.buckets:
            self._timed(PartResult(f"bucket:{src.bucket}", "bucket",
                                   layout.mirror_prefix(self.label, src.bucket)),
                        lambda p, src=src: self._mirror(src, p))

    def _timed(self, part: PartResult, action: Any) -> None:
        t0 = time.monotonic()
        try:
            action(part)
        except Exception as exc:  # noqa: BLE001 - one part failing must not stop the others
            part.error = " ".join(str(exc).split()) or type(exc).__name__
        part.duration_s = round(time.monotonic() - t0, 3)
        self.parts.append(part)

    def _upload(self, path: Path, part: PartResult) -> None:
        part.problems += buckets.upload_verified(self.client, path, self.bucket, part.key)
        part.bytes, part.objects = path.stat().st_size, 1
        head = self.client.head_object(Bucket=self.bucket, Key=part.key)
        part.etag = buckets.clean_etag(head["ETag"])

    def _dump_database(self, db: DatabaseSource, work: Path, part: PartResult) -> None:
        facts = pg_tools.dump_database(db.pg, work / f"{db.name}.dump")
        part.tables = len(facts.tables)
        self._upload(facts.path, part)
        facts.path.unlink()

    def _dump_meta(self, meta: MetaSource, work: Path, part: PartResult) -> None:
        out = juicefs_meta.dump_metadata(meta.meta_url, work / "metadata.json.gz",
                                         meta.password)
        facts = juicefs_meta.verify_metadata_dump(out)
        part.problems += facts.problems
        part.tables = facts.entries  # for the metadata: entries in the tree
        self._upload(out, part)

    def _mirror(self, src: BucketSource, part: PartResult) -> None:
        facts = buckets.mirror_bucket(src.client, src.bucket, self.client, self.bucket,
                                      part.key, src.same_store)
        self._mirrors[part.name] = facts
        part.objects, part.bytes = facts.objects, facts.bytes

    # ---- stage 2: verify ---------------------------------------------------------------

    def verify_parts(self) -> None:
        by_name = {f"bucket:{s.bucket}": s for s in self.buckets}
        for part in self.parts:
            if part.error:
                continue
            try:
                if part.kind == "bucket":
                    src = by_name[part.name]
                    part.problems += buckets.verify_mirror(
                        src.client, src.bucket, self.client, self.bucket,
                        self._mirrors[part.name])
                else:
                    self._verify_upload(part)
            except Exception as exc:  # noqa: BLE001 - recorded as this part's failure
                part.error = f"verification failed: {' '.join(str(exc).split())}"

    def _verify_upload(self, part: PartResult) -> None:
        head = self.client.head_object(Bucket=self.bucket, Key=part.key)
        size, etag = int(head["ContentLength"]), buckets.clean_etag(head["ETag"])
        if (size, etag) != (part.bytes, part.etag):
            part.problems.append(f"{part.key}: now {size} bytes, ETag {etag}; uploaded as "
                                 f"{part.bytes} bytes, ETag {part.etag}")

    # ---- stage 3: verdict and retention ------------------------------------------------

    def finish(self) -> Outcome:
        verified = bool(self.parts) and all(p.verified for p in self.parts)
        self._write_manifest(state="done", verified=verified)
        labels = backup_labels(self.client, self.bucket)
        deleted = expired_labels(labels, self.label, verified, self.keep)
        for label in deleted:
            delete_prefix(self.client, self.bucket, f"{label}/")
        kept = sorted(k for k in labels if k not in deleted)
        return Outcome(self.label, self.parts, deleted, kept)

    def run(self) -> Outcome:
        self.copy_parts()
        self.verify_parts()
        return self.finish()

    def _write_manifest(self, state: str, verified: bool) -> None:
        body = {"label": self.label, "state": state, "verified": verified,
                "started_at": self.now.isoformat(),
                "written_at": datetime.now(UTC).isoformat(),
                "parts": [{**asdict(p), "verified": p.verified} for p in self.parts]}
        self.client.put_object(Bucket=self.bucket, Key=layout.manifest_key(self.label),
                               Body=json.dumps(body, indent=1).encode(),
                               ContentType="application/json")


def read_manifest(client: Any, bucket: str, label: str) -> dict[str, Any] | None:
    try:
        obj = client.get_object(Bucket=bucket, Key=layout.manifest_key(label))
    except buckets.ClientError as exc:
        if buckets.error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(obj["Body"].read())


def backup_labels(client: Any, bucket: str) -> dict[str, bool]:
    """Each backup label in the bucket -> whether its manifest says verified."""
    from hybrid_pipelines.backups.rules.retention import is_label

    labels = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                  Delimiter="/"):
        for cp in page.get("CommonPrefixes", []) or []:
            label = cp["Prefix"].rstrip("/")
            if not is_label(label):
                continue
            manifest = read_manifest(client, bucket, label)
            if manifest is None and not client.list_objects_v2(
                    Bucket=bucket, Prefix=cp["Prefix"], MaxKeys=1).get("KeyCount"):
                continue  # an empty "directory" some stores (SeaweedFS) list after deletes
            labels[label] = bool(manifest and manifest.get("state") == "done"
                                 and manifest.get("verified") is True)
    return labels


def delete_prefix(client: Any, bucket: str, prefix: str) -> int:
    keys = [prefix + k for k in buckets.listing(client, bucket, prefix)]
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
    return len(keys)

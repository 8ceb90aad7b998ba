"""A writer that behaves like the platform's file server (design 000) on its own table:
uploads put the object in SeaweedFS (an S3 key in the cache bucket, or a real file id from the
master's /dir/assign, both forms the platform records in seaweed_fid) and insert the
`file_metadata` row exactly as the file server does: its own columns only, TIMESTAMP now()
(UTC: the session runs in UTC), cache_status 'cached', nas_status 'pending', sync_attempts 0.
Downloads read through and update last_accessed and access_count. Nothing here knows our
columns: the rows are what the hybrid-cache jobs meet on the platform.

Dependency-light on purpose: a psycopg conninfo string, a boto3 client, the master's URL."""

from __future__ import annotations

import hashlib
import mimetypes
import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import requests

EXTENSIONS = (".jpg", ".png", ".pdf", ".mp4", ".txt")
# The file server's own columns, in the order it inserts them.
INSERT = ("INSERT INTO file_metadata (id, original_name, stored_name, mime_type, size, hash,"
          " seaweed_fid, cache_status, nas_path, nas_status, sync_attempts, created_at,"
          " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'cached', %s, 'pending', 0,"
          " NOW(), NOW())")


@dataclass(frozen=True)
class Upload:
    id: UUID
    original_name: str
    stored_name: str
    mime_type: str | None
    size: int
    hash: str
    seaweed_fid: str
    nas_path: str


@dataclass
class FileServerSim:
    conninfo: str
    s3: Any
    bucket: str
    master_url: str = ""
    key_prefix: str = "fs-sim/"   # S3 keys under this prefix
    nas_prefix: str = "fs-sim"    # nas_path as the file server records it (share-relative)
    timeout_s: float = 10.0
    uploads: dict[UUID, Upload] = field(default_factory=dict)  # what it wrote, by id
    downloads: dict[UUID, int] = field(default_factory=dict)  # access_count it added, by id
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- object puts -----------------------------------------------------------------
    def _put_fid(self, data: bytes, name: str) -> str:
        """As the file server stores through the master: assign a file id, then POST the
        bytes to the volume server it names."""
        base = self.master_url.rstrip("/")
        a = requests.post(f"{base}/dir/assign", timeout=self.timeout_s)
        a.raise_for_status()
        body = a.json()
        if "fid" not in body:
            raise RuntimeError(f"SeaweedFS master {base} assigned no file id: {body}")
        url = body["url"] if body["url"].startswith("http") else f"http://{body['url']}"
        r = requests.post(f"{url}/{body['fid']}", files={"file": (name, data)},
                          timeout=self.timeout_s)
        r.raise_for_status()
        return str(body["fid"])

    def upload(self, name: str, data: bytes, *, as_fid: bool = False,
               nas_path: str | None = None) -> Upload:
        file_id = uuid.uuid4()
        ext = name[name.rfind("."):].lower()[:16] if "." in name else ""
        stored = f"{file_id.hex}{ext}"
        if as_fid:
            if not self.master_url:
                raise ValueError("a file-id upload needs the SeaweedFS master URL")
            fid = self._put_fid(data, stored)
        else:
            fid = f"{self.key_prefix}{stored}"
            self.s3.put_object(Bucket=self.bucket, Key=fid, Body=data)
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        up = Upload(file_id, name[:255], stored, mimetypes.guess_type(name)[0], len(data),
                    hashlib.sha256(data).hexdigest(), fid,
                    nas_path or f"{self.nas_prefix}/{day}/{stored}")
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(INSERT, (up.id, up.original_name, up.stored_name, up.mime_type,
                                  up.size, up.hash, up.seaweed_fid, up.nas_path))
        with self._lock:
            self.uploads[up.id] = up
        return up

    # ---- downloads -------------------------------------------------------------------
    def _read(self, key: str) -> bytes:
        from hybrid_pipelines.hybrid_cache.objects import CacheObjects

        body = CacheObjects(self.s3, self.bucket, self.master_url, self.timeout_s).open(key)
        try:
            return body.read()
        finally:
            body.close()

    def download(self, file_id: UUID) -> bytes | None:
        """Read-through: the cached object on a hit (None on a miss: the real server would read
        the NAS); either way last_accessed and access_count are updated, as the platform does."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT seaweed_fid, cache_status FROM file_metadata"
                               " WHERE id = %s", (file_id,)).fetchone()
            if row is None:
                return None
            data = None
            if row[1] == "cached" and row[0]:
                try:
                    data = self._read(row[0])
                except Exception:  # noqa: BLE001 - evicted meanwhile: a miss, served from NAS
                    data = None
            conn.execute("UPDATE file_metadata SET last_accessed = NOW(),"
                         " access_count = access_count + 1 WHERE id = %s", (file_id,))
        with self._lock:
            self.downloads[file_id] = self.downloads.get(file_id, 0) + 1
        return data

    # ---- the loop --------------------------------------------------------------------
    def tick(self, rng: random.Random) -> str:
        """One random action: mostly uploads (both object forms when a master is known),
        some downloads of earlier uploads."""
        with self._lock:
            known = list(self.uploads)
        if known and rng.random() < 0.4:
            self.download(rng.choice(known))
            return "download"
        size = rng.choice((0, rng.randint(1, 4096), rng.randint(4096, 256 * 1024)))
        name = f"sim-{rng.getrandbits(32):08x}{rng.choice(EXTENSIONS)}"
        as_fid = bool(self.master_url) and rng.random() < 0.5
        self.upload(name, rng.randbytes(size), as_fid=as_fid)
        return "upload_fid" if as_fid else "upload"

    def run(self, stop: threading.Event, interval_s: float = 0.05,
            rng: random.Random | None = None) -> int:
        """Tick until `stop` is set (usable as a thread's target); returns the actions done.
        An error ends the loop: in tests a failing write must be seen, not retried quietly."""
        rng = rng or random.Random(0)
        done = 0
        while not stop.is_set():
            self.tick(rng)
            done += 1
            stop.wait(interval_s)
        return done

"""The cached object behind a `file_metadata.seaweed_fid`, whatever form the file server
recorded: a SeaweedFS file id (`3,01637037d6`: read through the master's volume lookup and the
volume server, deleted there) or any other value, an S3 key in the cache bucket. Sync,
eviction, re-cache and audit go through this one small interface (open / size / delete)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

FID = re.compile(r"^\d+,[0-9a-fA-F]+$")


def is_fid(key: str) -> bool:
    """A SeaweedFS file id (volume id, comma, needle key and cookie in hex)."""
    return bool(FID.match(key))


class Stream(Protocol):
    def read(self, n: int = -1) -> bytes: ...
    def close(self) -> None: ...


class ObjectGone(FileNotFoundError):
    """The key names no object (S3 NoSuchKey, or a file id the volume server does not hold)."""


@dataclass
class CacheObjects:
    s3: Any
    bucket: str
    master_url: str = ""  # SeaweedFSResource.master_url: needed for file ids
    timeout_s: float = 5.0
    _volumes: dict[str, str] = field(default_factory=dict)  # volume id -> volume server

    # ---- file ids --------------------------------------------------------------------
    def _volume_url(self, fid: str) -> str:
        if not self.master_url:
            raise ValueError(f"seaweed_fid {fid!r} is a SeaweedFS file id but no master URL is "
                             "configured to look its volume up: set SEAWEED_MASTER_URL "
                             "(HP_SEAWEEDFS_MASTER_URL)")
        volume = fid.split(",", 1)[0]
        if volume not in self._volumes:
            r = requests.get(f"{self.master_url.rstrip('/')}/dir/lookup",
                             params={"volumeId": volume}, timeout=self.timeout_s)
            body = r.json() if r.content else {}
            locations = body.get("locations") or []
            if not r.ok or not locations:
                raise ObjectGone(f"SeaweedFS master {self.master_url} knows no volume {volume} "
                                 f"for file id {fid}: {body.get('error', r.status_code)}")
            self._volumes[volume] = locations[0]["url"]
        url = self._volumes[volume]
        return url if url.startswith("http") else f"http://{url}"

    def _fid_get(self, fid: str) -> requests.Response:
        r = requests.get(f"{self._volume_url(fid)}/{fid}", stream=True, timeout=self.timeout_s)
        if r.status_code == 404:
            r.close()
            raise ObjectGone(f"SeaweedFS volume server holds no file {fid}")
        r.raise_for_status()
        return r

    # ---- the interface ---------------------------------------------------------------
    def open(self, key: str) -> Stream:
        """A stream of the object's bytes; close it after reading."""
        if is_fid(key):
            r = self._fid_get(key)
            r.raw.decode_content = True
            return _Response(r)
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]

    def size(self, key: str) -> int | None:
        """The object's size in bytes, None when it is gone."""
        try:
            if is_fid(key):
                r = requests.head(f"{self._volume_url(key)}/{key}", timeout=self.timeout_s)
                if r.status_code == 404:
                    return None
                r.raise_for_status()
                return int(r.headers["Content-Length"])
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            return int(head["ContentLength"])
        except ObjectGone:
            return None
        except Exception as exc:  # boto's 404 is a ClientError
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise

    def delete(self, keys: list[str]) -> tuple[set[str], list[str]]:
        """Delete `keys`; returns (deleted, error texts). A key already gone counts as deleted:
        the object is not in the cache, which is what the caller wants."""
        deleted: set[str] = set()
        errors: list[str] = []
        fids = [k for k in keys if is_fid(k)]
        s3_keys = [k for k in keys if not is_fid(k)]
        for fid in fids:
            try:
                r = requests.delete(f"{self._volume_url(fid)}/{fid}", timeout=self.timeout_s)
                if r.ok or r.status_code == 404:
                    deleted.add(fid)
                else:
                    errors.append(f"{fid}: HTTP {r.status_code} {r.text[:200]}")
            except ObjectGone:
                deleted.add(fid)
            except requests.RequestException as exc:
                errors.append(f"{fid}: {type(exc).__name__}: {exc}")
        for i in range(0, len(s3_keys), 1000):  # S3 DeleteObjects limit
            chunk = s3_keys[i:i + 1000]
            resp = self.s3.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in chunk], "Quiet": False})
            deleted.update(d["Key"] for d in resp.get("Deleted", []))
            for err in resp.get("Errors", []):
                errors.append(f"{err.get('Key')}: {err.get('Code')} {err.get('Message', '')}")
        return deleted, errors


class _Response:
    """A volume server's streamed response as a readable stream."""

    def __init__(self, response: requests.Response):
        self._r = response

    def read(self, n: int = -1) -> bytes:
        return self._r.raw.read(None if n is None or n < 0 else n)

    def close(self) -> None:
        self._r.close()

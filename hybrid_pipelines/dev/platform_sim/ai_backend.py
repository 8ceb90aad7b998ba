"""A writer that behaves like the platform's AI backend (design 001) on `ai_platform`.

What it does, as the contract describes the backend (platform-contract.md, "AI platform
backend"), on the platform's own tables and columns only:
- model use: looks the model up; no row or a cold row -> upsert to tier 'hot' (a new row gets
  size_bytes 0) with last_access = NOW(); a hot row -> last_access = NOW(). It never moves
  files: a row it flips to hot may have its files in the cold tier only.
- conversations: a read looks in user_contexts, then in user_contexts_archive; found in the
  archive, the conversation is upserted back into user_contexts and deleted from the archive.
  A write reads it so, appends a message and upserts on (user_id, conversation_id) with
  updated_at = NOW().
- outputs: a new output's file at user_id/YYYY/MM/DD/uuid.ext on the hot tier (when it has a
  hot root) and in the outputs bucket, and its row (hot_storage true, cold_storage true);
  a read bumps access_count and last_accessed.
- `platform_archiver()`: the backend's own 03:00 archive statement, verbatim in effect (one
  statement; the archive's SERIAL numbers the rows), for tests to prove it still works.

`tick(rng)` does one random action; `run(stop_event, interval_s)` loops until the event is
set, recording every failure in `errors` (a test asserts there are none)."""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

PLATFORM_ARCHIVER_SQL = """
WITH moved AS (
    DELETE FROM user_contexts WHERE updated_at < NOW() - INTERVAL '30 days'
    RETURNING user_id, conversation_id, messages, created_at
)
INSERT INTO user_contexts_archive (user_id, conversation_id, messages, created_at, archived_at)
SELECT user_id, conversation_id, messages, created_at, NOW() FROM moved
"""


class AIBackend:
    """The AI backend's writes; ids to act on are given (tests aim it at their items) or
    generated (`sim-model-N`, `sim-user-N`, `conv-N`)."""

    def __init__(self, conninfo: str, s3: Any = None, outputs_bucket: str = "generated-outputs",
                 models_bucket: str = "cold-models", models_cold_prefix: str = "models",
                 hot_root: str | None = None, outputs_hot_prefix: str = "outputs",
                 outputs_cold_prefix: str = "", model_ids: Sequence[str] = (),
                 conversations: Sequence[tuple[str, str]] = (),
                 output_users: Sequence[str] = (), weights: dict[str, float] | None = None):
        self.conninfo = conninfo
        self.s3 = s3
        self.outputs_bucket = outputs_bucket
        self.models_bucket = models_bucket
        self.models_cold_prefix = models_cold_prefix.strip("/")
        self._published: set[str] = set()
        root = hot_root if hot_root is not None else os.environ.get("HP_JUICEFS_MOUNT_PATH")
        self.hot_root = Path(root) if root else None
        self.outputs_hot_prefix = outputs_hot_prefix.strip("/")
        self.outputs_cold_prefix = outputs_cold_prefix.strip("/")
        self.model_ids = list(model_ids) or [f"sim-model-{i}" for i in range(5)]
        self.conversations = list(conversations) or [
            (f"sim-user-{i % 4}", f"conv-{i}") for i in range(12)]
        self.output_users = list(output_users) or ["sim-user-0", "sim-user-1"]
        self.weights = weights or {"use_model": 4, "write_context": 3, "read_context": 2,
                                   "write_output": 1, "read_output": 1}
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self._conn: psycopg.Connection | None = None

    # ---- plumbing -------------------------------------------------------------------------

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.conninfo, autocommit=True,
                                         options="-c TimeZone=UTC")
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()

    def tick(self, rng: random.Random) -> str:
        names = list(self.weights)
        action = rng.choices(names, weights=[self.weights[n] for n in names])[0]
        getattr(self, action)(rng)
        self.counts[action] += 1
        return action

    def run(self, stop_event: threading.Event, interval_s: float = 0.01,
            seed: int | None = None) -> Counter[str]:
        rng = random.Random(seed)
        try:
            while not stop_event.is_set():
                try:
                    self.tick(rng)
                except Exception as exc:  # noqa: BLE001 - recorded for the test to assert on
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                stop_event.wait(interval_s)
        finally:
            self.close()
        return self.counts

    # ---- models ----------------------------------------------------------------------------

    def _publish_model(self, mid: str) -> None:
        """The platform's models exist somewhere before anyone uses them: with an S3 client,
        a small model is put in the cold bucket once (our promotion restores it from there)."""
        if self.s3 is None or mid in self._published:
            return
        key = f"{self.models_cold_prefix}/{mid}/config.json"
        try:
            self.s3.head_object(Bucket=self.models_bucket, Key=key)
        except Exception:  # noqa: BLE001 - absent (or unreadable): write it
            self.s3.put_object(Bucket=self.models_bucket, Key=key,
                               Body=f'{{"model": "{mid}", "layers": 2}}'.encode())
        self._published.add(mid)

    def use_model(self, rng: random.Random | None = None, model_id: str | None = None) -> None:
        mid = model_id or (rng or random).choice(self.model_ids)
        if model_id is None:
            self._publish_model(mid)  # only the simulator's own models
        conn = self._db()
        row = conn.execute("SELECT tier FROM model_locations WHERE model_id = %s",
                           (mid,)).fetchone()
        if row is None or row[0] == "cold":
            conn.execute("INSERT INTO model_locations (model_id, tier, size_bytes, last_access) "
                         "VALUES (%s, 'hot', 0, NOW()) ON CONFLICT (model_id) DO UPDATE SET "
                         "tier = 'hot', last_access = NOW()", (mid,))
        else:
            conn.execute("UPDATE model_locations SET last_access = NOW() WHERE model_id = %s",
                         (mid,))

    # ---- conversations ---------------------------------------------------------------------

    def read_context(self, rng: random.Random | None = None,
                     conversation: tuple[str, str] | None = None) -> list[Any] | None:
        user, conv = conversation or (rng or random).choice(self.conversations)
        conn = self._db()
        row = conn.execute("SELECT messages FROM user_contexts WHERE user_id = %s AND "
                           "conversation_id = %s", (user, conv)).fetchone()
        if row is not None:
            return row[0]
        with conn.transaction():
            row = conn.execute("SELECT messages, created_at FROM user_contexts_archive WHERE "
                               "user_id = %s AND conversation_id = %s FOR UPDATE",
                               (user, conv)).fetchone()
            if row is None:
                return None
            conn.execute("INSERT INTO user_contexts (user_id, conversation_id, messages, "
                         "created_at, updated_at) VALUES (%s, %s, %s, %s, NOW()) "
                         "ON CONFLICT (user_id, conversation_id) DO UPDATE SET "
                         "messages = EXCLUDED.messages, updated_at = NOW()",
                         (user, conv, Jsonb(row[0]), row[1]))
            conn.execute("DELETE FROM user_contexts_archive WHERE user_id = %s AND "
                         "conversation_id = %s", (user, conv))
        return row[0]

    def write_context(self, rng: random.Random | None = None,
                      conversation: tuple[str, str] | None = None) -> None:
        rng = rng or random.Random()
        user, conv = conversation or rng.choice(self.conversations)
        messages = list(self.read_context(rng, (user, conv)) or [])
        messages.append({"role": rng.choice(["user", "assistant"]),
                         "content": f"message {len(messages) + 1}"})
        self._db().execute(
            "INSERT INTO user_contexts (user_id, conversation_id, messages, updated_at) "
            "VALUES (%s, %s, %s, NOW()) ON CONFLICT (user_id, conversation_id) DO UPDATE SET "
            "messages = EXCLUDED.messages, updated_at = NOW()", (user, conv, Jsonb(messages)))

    def platform_archiver(self) -> int:
        """The backend's own archive CronJob: one statement, archive ids from its SERIAL."""
        cur = self._db().execute(PLATFORM_ARCHIVER_SQL)
        return cur.rowcount

    # ---- outputs ---------------------------------------------------------------------------

    def _rel(self, user: str, day: datetime, oid: str, ext: str) -> str:
        return f"{user}/{day:%Y/%m/%d}/{oid}.{ext}"

    def write_output(self, rng: random.Random | None = None, user: str | None = None) -> str:
        rng = rng or random.Random()
        user = user or rng.choice(self.output_users)
        oid, ext = str(uuid.uuid4()), rng.choice(["png", "wav"])
        body = rng.randbytes(rng.randint(200, 2000))
        created = datetime.now(UTC).replace(tzinfo=None)
        rel = self._rel(user, created, oid, ext)
        if self.hot_root is not None:
            path = self.hot_root / self.outputs_hot_prefix / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        if self.s3 is not None:
            key = f"{self.outputs_cold_prefix}/{rel}" if self.outputs_cold_prefix else rel
            self.s3.put_object(Bucket=self.outputs_bucket, Key=key, Body=body)
        self._db().execute(
            "INSERT INTO generated_outputs (output_id, user_id, filename, output_type, "
            "size_bytes, hot_storage, cold_storage, access_count, created_at) "
            "VALUES (%s, %s, %s, %s, %s, true, true, 0, %s)",
            (oid, user, f"result-{oid[:8]}.{ext}", "image" if ext == "png" else "audio",
             len(body), created))
        return oid

    def read_output(self, rng: random.Random | None = None, output_id: str | None = None) -> None:
        conn = self._db()
        if output_id is None:
            row = conn.execute("SELECT output_id FROM generated_outputs WHERE user_id = "
                               "ANY(%s) ORDER BY random() LIMIT 1",
                               (self.output_users,)).fetchone()
            if row is None:
                return
            output_id = str(row[0])
        conn.execute("UPDATE generated_outputs SET access_count = access_count + 1, "
                     "last_accessed = NOW() WHERE output_id = %s", (output_id,))

"""The on-demand AI-tier jobs as the operator runs them from the command line (`dagster job
execute -c FILE`): the items each job needs, seeded straight into the stack's own servers
(PostgreSQL, the JuiceFS hot tier, the cold bucket on SeaweedFS), the run config that names
them, and what the stores must show once the run is over.

Every scenario works on items of its own (ids with a random suffix, the default prefixes the
jobs use), so the scheduled AI-tier jobs that test_cli runs at the same time leave them alone:
the promoted model and the reactivated conversation are used "now", the outputs are new."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from hybrid_pipelines.ai_tiers import tier_copy
from hybrid_pipelines.ai_tiers.rules.tier_policy import as_utc, output_path
from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA
from hybrid_pipelines.dev.stack.platform import create_missing_tables, ensure_database
from hybrid_pipelines.resources import JuiceFSResource, ObjectStoreResource, PostgresResource
from hybrid_pipelines.resources.build import build_resources
from hybrid_pipelines.sql.platform import AI_PLATFORM, platform_ddl


@dataclass(frozen=True)
class Stores:
    """The stack's servers, as the jobs' resources see them (from .local/stack.env)."""

    postgres: PostgresResource
    cold: ObjectStoreResource
    hot: JuiceFSResource

    @classmethod
    def of(cls, env: dict[str, str]) -> Stores:
        # Built by the jobs' own code from the same variables: the AI platform's database
        # (`ai_postgres`), the buckets (cold models / generated outputs), the hot tier.
        res = build_resources(env, only=("ai_postgres", "object_store", "hot_tier"))
        return cls(res["ai_postgres"], res["object_store"], res["hot_tier"])

    def rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self.postgres.connect() as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        with self.postgres.connect() as conn:
            conn.execute(sql, params)

    def put_cold(self, key: str, body: bytes) -> None:
        """An object as our own tier copies write it: sha256 in its metadata."""
        self.cold.get_client().put_object(
            Bucket=self.cold.bucket, Key=key, Body=body,
            Metadata={tier_copy.SHA256_META: tier_copy.digest_chunks([body]).sha256})

    def cold_object(self, key: str, bucket: str | None = None) -> bytes | None:
        client = self.cold.get_client()
        bucket = bucket or self.cold.bucket
        if tier_copy.head_object(client, bucket, key) is None:
            return None
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put_output(self, key: str, body: bytes) -> None:
        """An output's object as the platform writes it (outputs bucket, platform layout)."""
        self.cold.get_client().put_object(Bucket=self.cold.outputs_bucket, Key=key, Body=body)


def _token() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class ModelPromotion:
    """A model that lives only in the cold tier; promoting it copies its files onto the hot
    tier (verified against their sha256) and flips its row to 'hot'."""

    job: ClassVar[str] = "model_promotion_job"
    model_id: str = field(default_factory=lambda: f"e2e-model-{_token()}")
    files: dict[str, bytes] = field(default_factory=lambda: {
        "config.json": b'{"layers": 2, "hidden": 64}',
        "weights/part-0.safetensors": os.urandom(96_000)})
    seeded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def seed(self, stores: Stores) -> dict[str, Any]:
        for rel, body in self.files.items():
            stores.put_cold(f"models/{self.model_id}/{rel}", body)
        stores.execute(
            "INSERT INTO model_locations (model_id, tier, size_bytes, last_access, created_at, "
            "tier_changed_at) VALUES (%s, 'cold', %s, %s, %s, %s)",
            (self.model_id, sum(map(len, self.files.values())),
             self.seeded_at - timedelta(days=60), self.seeded_at - timedelta(days=400),
             self.seeded_at - timedelta(days=30)))
        assert not stores.hot.path(f"models/{self.model_id}").exists()
        return {"ops": {"promote_model": {"config": {"model_id": self.model_id}}}}

    def verify(self, stores: Stores) -> None:
        (tier, size, last_access), = stores.rows(
            "SELECT tier, size_bytes, last_access FROM model_locations WHERE model_id = %s",
            (self.model_id,))
        assert tier == "hot", f"model {self.model_id} is still {tier} after its promotion"
        assert size == sum(map(len, self.files.values()))
        assert as_utc(last_access) >= self.seeded_at, "a promotion counts as a use of the model"
        hot_dir = stores.hot.path(f"models/{self.model_id}")
        on_hot = {p.relative_to(hot_dir).as_posix(): p.read_bytes()
                  for p in hot_dir.rglob("*") if p.is_file()}
        assert on_hot == self.files, f"hot tier {hot_dir} holds {sorted(on_hot)}"
        for rel, body in self.files.items():  # the cold tier keeps every model
            assert stores.cold_object(f"models/{self.model_id}/{rel}") == body


@dataclass
class ContextReactivation:
    """A conversation archived a year ago and exported to the cold bucket (a gzip JSON-lines
    object plus its tombstone row); reactivating it puts it back in the warm table."""

    job: ClassVar[str] = "context_reactivation_job"
    user_id: str = field(default_factory=lambda: f"e2e-user-{_token()}")
    conversation_id: str = "conv-1"
    # The archive row's id (the warm row gets its own from the warm table's SERIAL).
    archive_id: int = field(default_factory=lambda: 9_000_000_000 + uuid.uuid4().int % 10**8)
    messages: list[dict[str, str]] = field(default_factory=lambda: [
        {"role": "user", "content": "where did we leave off?"},
        {"role": "assistant", "content": "at the second draft"}])
    seeded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> str:
        return f"contexts/e2e/{self.user_id}.jsonl.gz"

    def seed(self, stores: Stores) -> dict[str, Any]:
        old = self.seeded_at - timedelta(days=400)
        line = {"id": self.archive_id, "user_id": self.user_id,
                "conversation_id": self.conversation_id, "messages": self.messages,
                "created_at": (old - timedelta(days=1)).isoformat(),
                "updated_at": old.isoformat(), "archived_at": old.isoformat()}
        stores.put_cold(self.key, gzip.compress(json.dumps(line).encode() + b"\n", mtime=0))
        stores.execute(
            "INSERT INTO user_context_exports (user_id, conversation_id, archive_id, object_key,"
            " exported_at) VALUES (%s, %s, %s, %s, %s)",
            (self.user_id, self.conversation_id, self.archive_id, self.key,
             self.seeded_at - timedelta(days=30)))
        return {"ops": {"reactivate_context": {"config": {
            "user_id": self.user_id, "conversation_id": self.conversation_id}}}}

    def verify(self, stores: Stores) -> None:
        warm = stores.rows("SELECT id, messages, updated_at FROM user_contexts "
                           "WHERE user_id = %s AND conversation_id = %s",
                           (self.user_id, self.conversation_id))
        assert len(warm) == 1, f"{self.user_id}/{self.conversation_id} is not back in " \
                               f"user_contexts: {warm}"
        _rid, messages, updated_at = warm[0]
        assert messages == self.messages
        # Reactivated = used now, so the next archive run leaves it warm.
        assert as_utc(updated_at) >= self.seeded_at
        assert not stores.rows("SELECT 1 FROM user_context_exports WHERE user_id = %s",
                               (self.user_id,)), "the export tombstone is still there"


@dataclass
class OutputDeletion:
    """A user's generated outputs, one on the hot tier and one only in the cold bucket, and
    another user's output beside them; deleting the user's outputs removes theirs from every
    tier and the table, and nobody else's."""

    job: ClassVar[str] = "output_deletion_job"
    user_id: str = field(default_factory=lambda: f"e2e-user-{_token()}")
    other_user: str = field(default_factory=lambda: f"e2e-other-{_token()}")
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    seeded: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id: user, tier, rel

    def _add(self, stores: Stores, user: str, tier: str, ext: str) -> None:
        oid = str(uuid.uuid4())
        rel = output_path(user, self.created, oid, ext)
        body = os.urandom(4000)
        if tier == "hot":
            path = stores.hot.path(f"outputs/{rel}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        stores.put_output(rel, body)  # the platform writes both tiers at generation
        # The platform's row: its own columns only (hot_storage says where the file is).
        stores.execute("INSERT INTO generated_outputs (output_id, user_id, filename, "
                       "output_type, size_bytes, hot_storage, cold_storage, created_at) "
                       "VALUES (%s, %s, %s, %s, %s, %s, true, %s)",
                       (oid, user, f"result.{ext}", "image" if ext == "png" else "audio",
                        len(body), tier == "hot", self.created))
        self.seeded[oid] = (user, tier, rel)

    def seed(self, stores: Stores) -> dict[str, Any]:
        self._add(stores, self.user_id, "hot", "png")
        self._add(stores, self.user_id, "cold", "wav")
        self._add(stores, self.other_user, "hot", "png")
        # No output_id: every output of the user, as a "delete my data" request asks.
        return {"ops": {"delete_user_outputs": {"config": {"user_id": self.user_id}}}}

    def verify(self, stores: Stores) -> None:
        left = {r[0] for r in stores.rows(
            "SELECT output_id::text FROM generated_outputs WHERE user_id = ANY(%s)",
            ([self.user_id, self.other_user],))}
        for oid, (user, tier, rel) in self.seeded.items():
            on_hot = stores.hot.path(f"outputs/{rel}").exists()
            in_cold = stores.cold_object(rel, stores.cold.outputs_bucket) is not None
            if user == self.user_id:
                assert oid not in left, f"{tier} output {oid} of {user} still has its row"
                assert not on_hot and not in_cold, f"{tier} output {rel} is still stored " \
                                                   f"(hot: {on_hot}, cold: {in_cold})"
            else:
                assert oid in left and on_hot, f"another user's output {rel} was deleted"


Scenario = ModelPromotion | ContextReactivation | OutputDeletion
SCENARIOS: dict[str, type[Scenario]] = {
    s.job: s for s in (ModelPromotion, ContextReactivation, OutputDeletion)}


def seed_all(stores: Stores) -> dict[str, tuple[Scenario, dict[str, Any]]]:
    """The platform's AI database and tables as its backend made them (verbatim DDL, where
    missing), our schema steps (as any AI-tier job applies them first), the outputs bucket;
    then every scenario; returns each job's scenario and run config."""
    pg = stores.postgres
    admin = PostgresResource(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                             database="postgres")
    ensure_database(admin.conninfo(), pg.database)
    create_missing_tables(pg.conninfo(), platform_ddl(AI_PLATFORM))
    client = stores.cold.get_client()
    if stores.cold.outputs_bucket not in {b["Name"] for b in
                                          client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=stores.cold.outputs_bucket)
    pg.apply_schema(SCHEMA)
    stores.hot.require_healthy()
    out: dict[str, tuple[Scenario, dict[str, Any]]] = {}
    for job, make in SCENARIOS.items():
        scenario = make()
        out[job] = (scenario, scenario.seed(stores))
    return out

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
from hybrid_pipelines.ai_tiers.rules.tier_policy import output_path
from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA
from hybrid_pipelines.resources import JuiceFSResource, ObjectStoreResource, PostgresResource


@dataclass(frozen=True)
class Stores:
    """The stack's servers, as the jobs' resources see them (from .local/stack.env)."""

    postgres: PostgresResource
    cold: ObjectStoreResource
    hot: JuiceFSResource

    @classmethod
    def of(cls, env: dict[str, str]) -> Stores:
        return cls(
            PostgresResource(host=env["HP_PG_HOST"], port=int(env["HP_PG_PORT"]),
                             user=env["HP_PG_USER"], password=env["HP_PG_PASSWORD"],
                             database=env["HP_PG_DATABASE"]),
            ObjectStoreResource(endpoint_url=env["HP_OBJECT_STORE_ENDPOINT"],
                                aws_access_key_id=env["HP_OBJECT_STORE_ACCESS_KEY"],
                                aws_secret_access_key=env["HP_OBJECT_STORE_SECRET_KEY"],
                                bucket=env["HP_OBJECT_STORE_BUCKET"]),
            JuiceFSResource(mount_path=env["HP_JUICEFS_MOUNT_PATH"],
                            require_mount=env.get("HP_JUICEFS_REQUIRE_MOUNT") == "true"))

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

    def cold_object(self, key: str) -> bytes | None:
        client = self.cold.get_client()
        if tier_copy.head_object(client, self.cold.bucket, key) is None:
            return None
        return client.get_object(Bucket=self.cold.bucket, Key=key)["Body"].read()


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
        assert last_access >= self.seeded_at, "a promotion counts as a use of the model"
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
    # An id far above the warm table's sequence: the row keeps it when it comes back.
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
        rid, messages, updated_at = warm[0]
        assert (rid, messages) == (self.archive_id, self.messages)
        # Reactivated = used now, so the next archive run leaves it warm.
        assert updated_at >= self.seeded_at
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
        else:
            stores.put_cold(f"outputs/{rel}", body)
        stores.execute("INSERT INTO generated_outputs (output_id, user_id, path, tier, "
                       "size_bytes, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                       (oid, user, rel, tier, len(body), self.created))
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
            in_cold = stores.cold_object(f"outputs/{rel}") is not None
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
    """Create the AI-tier tables (as any AI-tier job does first) and seed every scenario;
    returns each job's scenario and run config."""
    stores.postgres.apply_schema(SCHEMA)
    stores.hot.require_healthy()
    out: dict[str, tuple[Scenario, dict[str, Any]]] = {}
    for job, make in SCENARIOS.items():
        scenario = make()
        out[job] = (scenario, scenario.seed(stores))
    return out

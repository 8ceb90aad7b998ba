"""The storage invariant, tested as a whole (issue #12): a Hypothesis rule-based state machine
against the real stack (PostgreSQL for file_metadata, SeaweedFS as the cache, Samba as the NAS)
interleaves what happens to a file server's files in production:

- uploads with small random bytes, to the cache, or straight to the NAS while SeaweedFS is
  down; nas_paths that collide (the same path, case variants `Uploads/A.PDF`/`uploads/a.pdf`,
  `a\\b`/`a/b`/`a//b`) and rows sharing one seaweed_fid (a deduplicating file server);
- two pending-sync runs at once (two threads, two connections, two owners), optionally killing
  smbd or SeaweedFS from inside a run between two files;
- eviction with a small capacity, re-cache, the audit and reconcile;
- an editor on the share: deleting or replacing a row's NAS file, or writing a file of their
  own at a path a pending row wants;
- smbd and SeaweedFS killed (SIGKILL) and restarted between steps.

After every step it checks, on the servers themselves:
1. every row that is not 'failed' has a copy (the cache object at seaweed_fid, or the NAS file
   at nas_path) whose SHA-256 is the row's hash;
2. no row is 'synced' without that copy on the NAS at its path;
3. no file the rows do not own (the editor's own files) is overwritten or deleted.
The editor's damage is the editor's: a row whose only copy the editor destroyed (its cache copy
legitimately evicted before) is exempt from 1 and 2, and the audit must then not call it fine;
a row whose NAS copy the editor removed after it synced is exempt from 2 until it syncs again.

Bounded for the reliability suite (~45 s): 15 examples of up to 25 steps in a fixed sequence
(derandomized, no example database), one set of private servers for all examples, state reset
per example, at most one SeaweedFS kill per example (a restart costs ~4 s).

Below the machine, the counterexamples it found on the code before the fixes, cut down to the
steps that matter and replayed as fixed sequences: each broke an invariant before the fixes
and names the issue item."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg.rows import dict_row

from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.hybrid_cache.audit import AuditSettings, run_audit, run_reconcile
from hybrid_pipelines.hybrid_cache.eviction import EvictionSettings, run_eviction
from hybrid_pipelines.hybrid_cache.recache import RecacheSettings, run_recache
from hybrid_pipelines.hybrid_cache.runtime import prepare, probes
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync
from hybrid_pipelines.hybrid_cache.uploads import upload_to_cache, upload_to_nas
from hybrid_pipelines_tests.conftest import ServerFactory

from .conftest import pg_for
from .invariant_support import (
    BUCKET,
    Stack,
    call_by_name,
    file_sha,
    kill_samba,
    restart_seaweed,
    samba_resolve,
    samba_target,
    sha,
)

KEY_PREFIX = "inv/"
NAS_PREFIX = "inv"
# None keeps the upload's own unique path; the rest collide on Samba in every way it allows,
# plus one path outside the sync's folder.
PATHS = (None, None, "inv/Uploads/A.PDF", "inv/uploads/a.pdf", "inv/UPLOADS/a.PDF",
         "inv/a\\b.bin", "inv/a/b.bin", "inv/a//b.bin", "elsewhere/x.bin")
SEAWEED_KILLS = 1  # per example: a SeaweedFS restart costs ~4 s
BYTES = st.binary(min_size=1, max_size=48)
UPLOADS = st.lists(st.tuples(BYTES, st.sampled_from(PATHS)), min_size=1, max_size=3)


@dataclass
class Edited:
    """A synced row whose NAS copy the editor removed or replaced while its cache copy was
    intact: exempt from invariant 2 until the row syncs again (synced_at changes)."""
    synced_at: datetime | None


class StorageMachine(RuleBasedStateMachine):
    stack: ClassVar[Stack]

    def __init__(self) -> None:
        super().__init__()
        self.order: list[UUID] = []          # rows in upload order: picks are reproducible
        self.lost: set[UUID] = set()         # the editor destroyed the only copy
        self.edited: dict[UUID, Edited] = {}
        self.untracked: dict[Any, bytes] = {}  # editor's own files: share path -> bytes
        self.smbd_up = self.sw_up = True
        self.sw_kills = 0
        self.runs = 0
        self.stack.reset()

    def teardown(self) -> None:
        self._bring_back()

    def _bring_back(self) -> None:
        if not self.smbd_up:
            self.stack.samba.start()
            self.smbd_up = True
        if not self.sw_up:
            restart_seaweed(self.stack.seaweed)
            self.stack.seaweed_restarted()
            self.sw_up = True

    # ---- reading the truth ---------------------------------------------------------------

    def rows(self) -> dict[UUID, dict[str, Any]]:
        with self.stack.conn() as c, c.cursor(row_factory=dict_row) as cur:
            return {r["id"]: r for r in cur.execute("SELECT * FROM file_metadata")}

    def nas_ok(self, r: dict[str, Any]) -> bool:
        found = samba_resolve(self.stack.samba.share_dir, r["nas_path"])
        return r["hash"] is not None and file_sha(found) == r["hash"]

    def cache_ok(self, r: dict[str, Any], s3: Any) -> bool:
        if not r["seaweed_fid"] or r["hash"] is None:
            return False
        try:
            body = s3.get_object(Bucket=BUCKET, Key=r["seaweed_fid"])["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise
        return sha(body.read()) == r["hash"]

    def all_up(self) -> bool:
        return self.smbd_up and self.sw_up

    def _ordered(self, rows: dict[UUID, dict[str, Any]]) -> list[dict[str, Any]]:
        return [rows[i] for i in self.order if i in rows]

    # ---- uploads -------------------------------------------------------------------------

    @initialize(files=UPLOADS)
    def first_uploads(self, files: list[tuple[bytes, str | None]]) -> None:
        self.upload(files)  # every example starts with files to move around

    @rule(files=UPLOADS)
    def upload(self, files: list[tuple[bytes, str | None]]) -> None:
        """The file server: to the cache, or straight to the NAS while SeaweedFS is down."""
        for data, path in files:
            self._upload_one(data, path)

    def _upload_one(self, data: bytes, path: str | None) -> None:
        with self.stack.conn() as conn:
            if self.sw_up:
                f = upload_to_cache(conn, self.stack.s3(), BUCKET, "upload.pdf", data,
                                    key_prefix=KEY_PREFIX, nas_prefix=NAS_PREFIX)
                if path is not None:  # the file server said where the file goes
                    conn.execute("UPDATE file_metadata SET nas_path = %s WHERE id = %s",
                                 (path, f.id))
            elif self.smbd_up:
                with self.stack.nas() as (_, fs):
                    f = upload_to_nas(conn, fs, "upload.pdf", data, nas_prefix=NAS_PREFIX)
            else:
                return  # both tiers down: the file server refuses the upload
        self.order.append(f.id)

    @precondition(lambda self: self.sw_up)
    @rule(pick=st.integers(0, 99), path=st.sampled_from(PATHS))
    def upload_sharing_key(self, pick: int, path: str | None) -> None:
        """A deduplicating file server: a second row for bytes already in the cache, pointing
        at the same object."""
        s3 = self.stack.s3()
        rows = [r for r in self._ordered(self.rows())
                if r["cache_status"] == "cached" and self.cache_ok(r, s3)]
        if not rows:
            return
        src = rows[pick % len(rows)]
        new_id = uuid.uuid4()
        now = datetime.now(UTC)
        with self.stack.conn() as conn:
            conn.execute(
                "INSERT INTO file_metadata (id, original_name, stored_name, mime_type, size,"
                " hash, seaweed_fid, cache_status, nas_path, nas_status, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, 'cached', %s, 'pending', %s, %s)",
                (new_id, src["original_name"], f"{new_id.hex}.pdf", src["mime_type"],
                 src["size"], src["hash"], src["seaweed_fid"],
                 path or f"{NAS_PREFIX}/shared/{new_id.hex}.pdf", now, now))
        self.order.append(new_id)

    # ---- the project's jobs --------------------------------------------------------------

    @rule(batch=st.integers(1, 3), kill=st.sampled_from((None, None, "smbd", "seaweedfs")))
    def two_syncs(self, batch: int, kill: str | None) -> None:
        """Two pending-sync runs at once, as the pool allows; `kill` takes a server down from
        inside run A, after its first file."""
        if kill == "seaweedfs" and (not self.sw_up or self.sw_kills >= SEAWEED_KILLS):
            kill = None
        if kill == "smbd" and not self.smbd_up:
            kill = None
        self.runs += 1
        start = threading.Barrier(2)
        errors: list[BaseException] = []
        killed = threading.Event()

        def after_file(_row: Any, _outcome: str) -> None:
            if kill and not killed.is_set():
                killed.set()
                self._kill(kill)

        def run(name: str) -> None:
            try:
                with self.stack.conn() as conn, self.stack.nas() as (nas_res, fs):
                    sw = self.stack.sw(name)
                    settings_ = SyncSettings(batch_size=batch, retry_delay_s=0,
                                             nas_prefix=NAS_PREFIX)
                    # Sessions opened first, so the two runs start their work together.
                    nas_res.health()
                    sw.health()
                    start.wait(timeout=30)
                    call_by_name(run_pending_sync, conn=conn, s3=sw.get_client(),
                                 bucket=BUCKET, nas=fs, settings=settings_,
                                 owner=f"inv-{name}-{self.runs}", probes=probes(sw, nas_res),
                                 on_file=after_file if name == "A" else None)
            except BaseException as exc:  # noqa: BLE001 - re-raised below unless an outage
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in "AB"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive(), "a pending-sync run did not finish in 120 s"
        if errors and self.all_up() and not killed.is_set():
            raise errors[0]
        if kill and not killed.is_set():
            # Run B took every row, so run A never reached its first file: kill now. Which
            # servers are up must follow from the steps alone, never from how the race went:
            # the rules' preconditions read it, and Hypothesis requires them deterministic.
            killed.set()
            self._kill(kill)

    @rule(capacity=st.sampled_from((1, 1, 100)))
    def evict(self, capacity: int) -> None:
        with self.stack.conn() as conn, self.stack.nas() as (nas_res, fs):
            sw = self.stack.sw()
            try:
                report = call_by_name(
                    run_eviction, conn=conn, s3=sw.get_client(), bucket=BUCKET, nas=fs,
                    settings=EvictionSettings(capacity_bytes=capacity, batch_size=2,
                                              key_prefix=KEY_PREFIX),
                    probes=probes(sw, nas_res))
            except Exception:
                if self.all_up():
                    raise
                return  # an outage fails the job loudly; the invariants say what it left
        assert not self.lost & set(report.evicted_ids), \
            "eviction evicted a row whose only copy the editor had destroyed"

    @rule()
    def recache(self) -> None:
        with self.stack.conn() as conn, self.stack.nas() as (nas_res, fs):
            sw = self.stack.sw()
            try:
                call_by_name(run_recache, conn=conn, s3=sw.get_client(), bucket=BUCKET,
                             nas=fs, settings=RecacheSettings(key_prefix=KEY_PREFIX),
                             probes=probes(sw, nas_res))
            except Exception:
                if self.all_up():
                    raise

    @precondition(lambda self: self.smbd_up and self.sw_up)
    @rule(fix=st.booleans())
    def audit(self, fix: bool) -> None:
        """The audit (or reconcile, which applies its safe fixes) must not call a row fine
        whose only copy the editor destroyed."""
        with self.stack.conn() as conn, self.stack.nas() as (_, fs):
            s3 = self.stack.sw().get_client()
            audit_settings = AuditSettings(key_prefix=KEY_PREFIX, nas_prefix=NAS_PREFIX,
                                           hash_sample=10_000)
            job = run_reconcile if fix else run_audit
            report = call_by_name(job, conn=conn, s3=s3, bucket=BUCKET, nas=fs,
                                  settings=audit_settings)
            report = report.audit if fix else report
        flagged = set().union(
            report.nas_missing_lost, report.nas_missing_requeue, report.nas_size_mismatch,
            report.nas_hash_mismatch, report.cache_missing_at_risk, report.cache_missing_safe,
            report.cache_size_mismatch, report.cache_hash_mismatch)
        rows, s3 = self.rows(), self.stack.s3()
        for file_id in self.lost:
            r = rows.get(file_id)
            if r is None or r["nas_status"] != "synced" or self.nas_ok(r) or \
                    self.cache_ok(r, s3):
                continue  # another row put the same bytes back: then it is fine again
            assert file_id in flagged, (
                f"the audit calls row {file_id} ({r['nas_path']!r}) fine, but the editor "
                "destroyed its only copy")

    # ---- the editor on the share ---------------------------------------------------------

    def _owned_files(self) -> list[Any]:
        share = self.stack.samba.share_dir
        out: list[Any] = []
        for r in self._ordered(self.rows()):
            found = samba_resolve(share, r["nas_path"])
            if found is not None and found not in out and found not in self.untracked:
                out.append(found)
        return out

    def _before_edit(self, target: Any) -> None:
        """Whose copy the editor is about to destroy: a row with an intact cache copy keeps
        its invariants (bar 2, until it syncs again); a row with no other copy is the
        editor's loss, not the project's."""
        share, s3 = self.stack.samba.share_dir, self.stack.s3()
        for r in self.rows().values():
            if samba_resolve(share, r["nas_path"]) != target or not self.nas_ok(r):
                continue
            if r["cache_status"] == "cached" and self.cache_ok(r, s3):
                if r["nas_status"] == "synced":
                    self.edited[r["id"]] = Edited(r["synced_at"])
            else:
                self.lost.add(r["id"])

    @precondition(lambda self: self.sw_up)  # whose copy is lost depends on the cache
    @rule(pick=st.integers(0, 99), how=st.sampled_from(("delete", "replace", "same size")),
          data=BYTES)
    def editor_edits(self, pick: int, how: str, data: bytes) -> None:
        """An editor deletes a row's NAS file, or replaces it with other bytes (of the same
        size: a size check alone cannot tell)."""
        files = self._owned_files()
        if not files:
            return
        target = files[pick % len(files)]
        old = target.read_bytes()
        self._before_edit(target)
        if how == "delete":
            target.unlink()
            return
        new = bytes(b ^ 0x5A for b in old) if how == "same size" else data
        target.write_bytes(new if new != old else new + b"!")

    @rule(pick=st.integers(0, 99), data=BYTES)
    def editor_writes_own_file(self, pick: int, data: bytes) -> None:
        """An editor's own file, at a path a pending row will want."""
        share = self.stack.samba.share_dir
        wanted = [r["nas_path"] for r in self._ordered(self.rows())
                  if r["nas_status"] == "pending"
                  and samba_resolve(share, r["nas_path"]) is None
                  and samba_target(share, r["nas_path"]) is not None]
        if wanted:
            target = samba_target(share, wanted[pick % len(wanted)])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self.untracked[target] = data

    # ---- servers killed and restarted ----------------------------------------------------

    def _kill(self, which: str) -> None:
        if which == "smbd":
            kill_samba(self.stack.samba)
            self.smbd_up = False
        else:
            self.stack.seaweed.kill()
            self.sw_up = False
            self.sw_kills += 1

    @rule()
    def toggle_smbd(self) -> None:
        """smbd SIGKILLed (with its per-connection children), or started again on the same
        port and share."""
        if self.smbd_up:
            self._kill("smbd")
        else:
            self.stack.samba.start()
            self.smbd_up = True

    @precondition(lambda self: not self.sw_up or self.sw_kills < SEAWEED_KILLS)
    @rule(coin=st.integers(0, 2))
    def toggle_seaweedfs(self, coin: int) -> None:
        """SeaweedFS SIGKILLed, or started again on its data. Kills are rationed (a restart
        costs ~4 s): at most SEAWEED_KILLS per example, on a third of the draws."""
        if not self.sw_up:
            restart_seaweed(self.stack.seaweed)
            self.stack.seaweed_restarted()
            self.sw_up = True
        elif coin == 0:
            self._kill("seaweedfs")

    # ---- the invariant -------------------------------------------------------------------

    @invariant()
    def no_copy_lost_no_editor_file_touched(self) -> None:
        s3 = self.stack.s3() if self.sw_up else None
        for r in self._ordered(self.rows()):
            if r["id"] in self.lost:
                continue
            nas_ok = self.nas_ok(r)
            edited = self.edited.get(r["id"])
            if r["nas_status"] == "synced" and not nas_ok and \
                    not (edited and edited.synced_at == r["synced_at"]):
                raise AssertionError(
                    f"invariant 2: row {r['id']} is 'synced' but the NAS has no copy with its "
                    f"SHA-256 at {r['nas_path']!r} (row: {_brief(r)})")
            if r["nas_status"] == "failed" or nas_ok or s3 is None:
                continue  # SeaweedFS down: its copies are checked once it is back
            assert self.cache_ok(r, s3), (
                f"invariant 1: row {r['id']} has no copy with its SHA-256: not on the NAS at "
                f"{r['nas_path']!r}, not in the cache at {r['seaweed_fid']!r} "
                f"(row: {_brief(r)})")
        for path, data in self.untracked.items():
            held = path.read_bytes() if path.is_file() else None
            assert held == data, (
                f"invariant 3: the editor's own file {path.relative_to(self.stack.samba.share_dir)}"
                f" was {'deleted' if held is None else 'overwritten'} (no row owns it)")


def _brief(r: dict[str, Any]) -> str:
    keys = ("nas_status", "cache_status", "nas_path", "seaweed_fid", "sync_attempts",
            "nas_verified_at", "recache_requested", "last_error")
    return ", ".join(f"{k}={r.get(k)!r}" for k in keys)


# ---- the test --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inv_samba(server_factory: ServerFactory) -> SambaServer:
    server = server_factory("samba")  # private: the machine kills it
    assert isinstance(server, SambaServer)
    return server


@pytest.fixture(scope="module")
def inv_seaweed(server_factory: ServerFactory) -> SeaweedFSServer:
    server = server_factory("seaweedfs")  # private: the machine kills it
    assert isinstance(server, SeaweedFSServer)
    return server


@pytest.fixture(scope="module")
def inv_stack(private_pg: PostgresServer, inv_samba: SambaServer,
              inv_seaweed: SeaweedFSServer) -> Stack:
    pg = pg_for(private_pg)
    prepare(pg)
    with pg.connect(autocommit=True) as conn:
        conn.execute("DROP TRIGGER IF EXISTS hp_gate ON file_metadata")  # another module's gate
    return Stack(pg, inv_samba, inv_seaweed)


@pytest.mark.fault("storage invariant state machine: uploads, concurrent syncs, evictions, "
                   "re-cache, NAS edits, smbd/SeaweedFS kills -> no copy lost, no untracked "
                   "file touched", kind="concurrency")
def test_storage_invariant(inv_stack: Stack) -> None:
    StorageMachine.stack = inv_stack
    # No shrinking phase: replaying sequences against real servers costs seconds each, and a
    # failure must be reported inside the suite's per-test timeout; the falsifying sequence is
    # at most `stateful_step_count` steps and prints whole.
    run_state_machine_as_test(StorageMachine, settings=settings(
        max_examples=15, stateful_step_count=25, deadline=None, derandomize=True,
        database=None, suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.reuse, Phase.generate)))


# ---- the machine's counterexamples on the code before the fixes, replayed as fixed sequences --
# Each was found by the machine (then cut down by hand to the steps that matter) and broke the
# invariant named in its id before issue #12's fixes.

Step = tuple[str, dict[str, Any]]
COUNTEREXAMPLES: dict[str, list[Step]] = {
    # item 1: the sync's replace-rename overwrote an editor's own file (invariant 3)
    "editor-file-at-a-pending-path": [
        ("upload", {"files": [(b"row bytes", "elsewhere/x.bin")]}),
        ("editor_writes_own_file", {"pick": 0, "data": b"the editor's original"}),
        ("two_syncs", {"batch": 1, "kill": None}),
    ],
    # item 1: case variants are one file on Samba; the second sync replaced the first row's
    # copy and both rows read 'synced' (invariant 2)
    "case-variant-paths": [
        ("upload", {"files": [(b"first file", "inv/Uploads/A.PDF")]}),
        ("two_syncs", {"batch": 1, "kill": None}),
        ("upload", {"files": [(b"second", "inv/uploads/a.pdf")]}),
        ("two_syncs", {"batch": 1, "kill": None}),
    ],
    # item 1: `a\b`, `a/b` and `a//b` claimed by the two concurrent runs at once. Whether
    # both runs pass the old check before either marks its row is timing: four rounds, each
    # in its own folder, made it fail on every try before the fix.
    "same-path-two-runs": [
        step
        for folder in ("r1", "r2", "r3", "r4")
        for step in (
            ("upload", {"files": [(b"one", f"inv/{folder}/a\\b.bin"),
                                  (b"two!", f"inv/{folder}/a/b.bin"),
                                  (b"three", f"inv/{folder}/a//b.bin")]}),
            ("two_syncs", {"batch": 1, "kill": None}),
        )
    ],
    # item 3: eviction trusted the sync-time check after the editor deleted the NAS copy
    # (invariant 1: the cache copy, the last one, was deleted)
    "evict-after-editor-delete": [
        ("upload", {"files": [(b"precious", None)]}),
        ("two_syncs", {"batch": 1, "kill": None}),
        ("editor_edits", {"pick": 0, "how": "delete", "data": b""}),
        ("evict", {"capacity": 1}),
    ],
    # item 3: the same after a same-size replacement
    "evict-after-editor-replace": [
        ("upload", {"files": [(b"precious", None)]}),
        ("two_syncs", {"batch": 1, "kill": None}),
        ("editor_edits", {"pick": 0, "how": "same size", "data": b""}),
        ("evict", {"capacity": 1}),
    ],
    # item 5: evicting a synced row deleted the object a pending row with the same key needs
    # (invariant 1)
    "shared-cache-key": [
        ("upload", {"files": [(b"deduplicated", None)]}),
        ("two_syncs", {"batch": 1, "kill": None}),
        ("upload_sharing_key", {"pick": 0, "path": None}),
        ("evict", {"capacity": 1}),
    ],
    # item 5: the audit itself stopped (UnsortedInputError from its sorted merge) as soon as
    # two cached rows shared a key, so no drift was reported at all
    "audit-with-shared-key": [
        ("upload", {"files": [(b"deduplicated", None)]}),
        ("upload_sharing_key", {"pick": 0, "path": None}),
        ("audit", {"fix": False}),
    ],
}


@pytest.mark.fault("storage invariant counterexamples replayed: NAS path collisions, editor "
                   "files, NAS edits before eviction, shared cache keys -> no copy lost, no "
                   "untracked file touched", kind="state edited")
@pytest.mark.parametrize("steps", list(COUNTEREXAMPLES.values()), ids=list(COUNTEREXAMPLES))
def test_storage_invariant_counterexample(inv_stack: Stack, steps: list[Step]) -> None:
    StorageMachine.stack = inv_stack
    machine = StorageMachine()
    try:
        machine.no_copy_lost_no_editor_file_touched()
        for name, kwargs in steps:
            getattr(machine, name)(**kwargs)
            machine.no_copy_lost_no_editor_file_touched()
    finally:
        machine.teardown()

"""Symlinks planted in the EFS mirror's destination and under the hot tier's generated outputs
(real SeaweedFS, PostgreSQL, the JuiceFS mount for outputs, a directory as the EFS mount):
a download never lands outside the root, the extraneous-file deletion and the output tiering
never unlink outside it (issue #12, item 2)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.ai_tiers import efs_sync, outputs, tier_copy
from hybrid_pipelines.defs.ai_tiers.assets import efs_models, generated_outputs
from hybrid_pipelines.resources import EFSResource, ObjectStoreResource, PostgresResource

from .conftest import NOW, Space, days_ago, output_tier, seed_output_row
from .test_efs_sync import BUCKET, Source, source  # noqa: F401 - the fixture

SECRET = b"not the mirror's bytes"


def _outside(tmp_path: Path) -> Path:
    root = tmp_path / "outside"
    root.mkdir()
    return root


def _sync(pg: PostgresResource, store: ObjectStoreResource, root: Path, src: Source,
          **kw: object) -> efs_sync.SyncReport:
    with pg.connect(autocommit=True) as conn:
        return efs_sync.sync_to_efs(conn, store.get_client(), BUCKET, root, [src.prefix], NOW,
                                    **kw)  # type: ignore[arg-type]


@pytest.mark.fault("ai_tiers: a directory of the EFS mirror is a symlink out of it -> that "
                   "download refused, nothing written outside", kind="state edited")
def test_download_never_goes_through_a_linked_directory(
        ai_pg: PostgresResource, object_store_resource: ObjectStoreResource,
        efs_resource: EFSResource, source: Source, tmp_path: Path) -> None:  # noqa: F811
    outside = _outside(tmp_path)
    source.put("llama/config.json", b"{}")
    source.put("ok.bin", b"fine")
    root = efs_resource.path("models")
    (root / source.prefix).mkdir(parents=True)
    (root / source.prefix / "llama").symlink_to(outside, target_is_directory=True)
    report = _sync(ai_pg, object_store_resource, root, source)
    assert list(outside.iterdir()) == []  # before the fix: config.json landed here
    assert "is a symbolic link" in report.errors[source.prefix + "llama/config.json"]
    assert (root / source.prefix / "ok.bin").read_bytes() == b"fine"
    assert report.left_alone.symlinks == [f"{source.prefix}llama"]


@pytest.mark.fault("ai_tiers: a mirrored directory swapped for a symlink, its object deleted -> "
                   "extraneous-file deletion refuses, the outside file stays", kind="state edited")
def test_extraneous_deletion_never_follows_a_link(
        ai_pg: PostgresResource, object_store_resource: ObjectStoreResource,
        efs_resource: EFSResource, source: Source, tmp_path: Path) -> None:  # noqa: F811
    outside = _outside(tmp_path)
    source.put("m/w.bin", SECRET)
    root = efs_resource.path("models")
    assert _sync(ai_pg, object_store_resource, root, source).downloaded == 1
    mirrored = root / source.prefix / "m" / "w.bin"
    st = os.stat(mirrored)
    # The same name, size and mtime outside, and the mirrored folder now a link to it.
    (outside / "w.bin").write_bytes(SECRET)
    os.utime(outside / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    mirrored.unlink()
    mirrored.parent.rmdir()
    mirrored.parent.symlink_to(outside, target_is_directory=True)
    source.delete("m/w.bin")
    report = _sync(ai_pg, object_store_resource, root, source, delete_extraneous=True)
    assert (outside / "w.bin").read_bytes() == SECRET  # before the fix: unlinked
    assert report.deleted == 0
    assert "is a symbolic link" in report.errors[f"{source.prefix}m/w.bin"]


def test_efs_destination_that_is_a_link_is_refused(
        ai_pg: PostgresResource, object_store_resource: ObjectStoreResource,
        efs_resource: EFSResource, source: Source, tmp_path: Path) -> None:  # noqa: F811
    outside = _outside(tmp_path)
    source.put("a.bin", b"a")
    (efs_resource.root() / "models").symlink_to(outside, target_is_directory=True)
    with pytest.raises(Exception, match="models is a symbolic link"):
        dg.materialize([efs_models], resources={
            "ai_postgres": ai_pg, "object_store": object_store_resource, "efs": efs_resource},
            run_config={"ops": {"efs_models": {"config": {
                "now": NOW.isoformat(), "prefixes": [source.prefix]}}}})
    assert list(outside.iterdir()) == []


# ---- generated outputs on the hot tier ---------------------------------------------------------

def _output_row(pg: PostgresResource, user: str, created, tier: str, access: int = 0
                ) -> tuple[str, str]:
    return seed_output_row(pg, user, created, tier, len(SECRET), access)


def _tier(pg: PostgresResource, oid: str) -> str | None:
    return output_tier(pg, oid)


@pytest.mark.fault("ai_tiers: output folders and files symlinked out of the hot tier -> not "
                   "demoted or promoted, nothing outside uploaded, written or deleted",
                   kind="state edited")
def test_outputs_never_go_through_links(ai_pg: PostgresResource, space: Space,
                                        tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    hot_outputs = Path(space.hot.mount_path) / space.outputs
    hot_outputs.mkdir(parents=True)
    # 1. A user's folder is a link: the old output "in" it is a file outside the tier.
    linked_dir, rel1 = _output_row(ai_pg, "u1", days_ago(30), "hot")
    target1 = outside / "u1" / rel1.split("/", 1)[1]
    target1.parent.mkdir(parents=True)
    target1.write_bytes(SECRET)
    (hot_outputs / "u1").symlink_to(outside / "u1", target_is_directory=True)
    # 2. The output file itself is a link to a file outside.
    linked_file, rel2 = _output_row(ai_pg, "u2", days_ago(30), "hot")
    (outside / "secret.png").write_bytes(SECRET)
    (hot_outputs / rel2).parent.mkdir(parents=True)
    (hot_outputs / rel2).symlink_to(outside / "secret.png")
    # 3. A popular cold output whose user folder is a link: its promotion would write outside.
    promoted, rel3 = _output_row(ai_pg, "u3", days_ago(30), "cold", access=9)
    space.put_cold(f"{space.outputs}/{rel3}", SECRET,
                   {"sha256": tier_copy.digest_chunks([SECRET]).sha256},
                   bucket=space.store.outputs_bucket)
    (outside / "u3").mkdir()
    (hot_outputs / "u3").symlink_to(outside / "u3", target_is_directory=True)

    result = dg.materialize(
        [generated_outputs],
        resources={"ai_postgres": ai_pg, "object_store": space.store, "hot_tier": space.hot},
        run_config={"ops": {"generated_outputs": {"config": {
            "now": NOW.isoformat(), "hot_prefix": space.outputs, "cold_prefix": space.outputs}}}},
        raise_on_error=False)
    # Before the fix: 1 was uploaded and unlinked outside the tier, 3 written there.
    assert target1.exists() and list((outside / "u3").iterdir()) == []
    assert target1.read_bytes() == SECRET and (outside / "secret.png").read_bytes() == SECRET
    assert not result.success
    text = str(result.failure_data_for_node("generated_outputs").user_failure_data.description)
    for oid in (linked_dir, linked_file, promoted):
        assert oid in text
    assert text.count("symbolic link") == 3
    assert [_tier(ai_pg, o) for o in (linked_dir, linked_file, promoted)] == \
        ["hot", "hot", "cold"]
    assert list(space.output_keys("outputs/")) == [f"{space.outputs}/{rel3}"]


def test_output_deletion_never_unlinks_through_a_linked_folder(
        ai_pg: PostgresResource, space: Space, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    oid, rel = _output_row(ai_pg, "u1", days_ago(1), "hot")
    target = outside / rel.split("/", 1)[1]
    target.parent.mkdir(parents=True)
    target.write_bytes(SECRET)
    hot_outputs = Path(space.hot.mount_path) / space.outputs
    hot_outputs.mkdir(parents=True)
    (hot_outputs / "u1").symlink_to(outside, target_is_directory=True)
    with ai_pg.connect(autocommit=True) as conn, pytest.raises(
            outputs.OutputTierError, match="hot copy not deleted.*symbolic link"):
        outputs.delete_outputs(conn, space.client(), space.store.outputs_bucket, space.hot,
                               "u1", oid, outputs.OutputLayout(space.outputs, space.outputs))
    assert target.read_bytes() == SECRET  # before the fix: unlinked through the link
    assert _tier(ai_pg, oid) == "hot"  # the row stays for a retry once the link is gone

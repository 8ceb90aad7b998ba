"""The file server records `nas_path` in its own forms (UNC, smb://, relative to
NAS_ROOT_PATH). With the NAS rooted at a folder of the share (NAS_ROOT_PATH's folder), every
job resolves those forms to the same file beneath that root: the sync writes it there, the
audit finds it (not lost, not an orphan) and hashes it, the eviction's re-check accepts it
(the object is evicted, not re-queued for ever). Real Samba, SeaweedFS and PostgreSQL."""

from __future__ import annotations

from hybrid_pipelines.dev.stack.process import LOOPBACK
from hybrid_pipelines.resources import NASResource

from .conftest import hc_definitions, materializations, row, run_job


def test_platform_path_forms_resolve_beneath_a_rooted_nas_in_every_job(
        conn, upload, hc_postgres, s3_resource, samba_server, prefix) -> None:
    root_dir = f"{prefix}-root"
    (samba_server.share_dir / root_dir).mkdir()
    nas = NASResource(protocol="smb", host=LOOPBACK, port=samba_server.port,
                      share=samba_server.share, username=samba_server.username,
                      password=samba_server.password, root_dir=root_dir)
    share = samba_server.share
    forms = {
        "unc": (f"\\\\{LOOPBACK}\\{share}\\{root_dir}\\unc\\a.bin", "unc/a.bin"),
        "smb": (f"smb://{LOOPBACK}/{share}/{root_dir}/unc/b.bin", "unc/b.bin"),
        "relative": ("unc/c.bin", "unc/c.bin"),
    }
    uploads = {}
    for form, (stored, _) in forms.items():
        up = upload(f"{form} bytes ".encode() * 300, f"{form}.bin")
        conn.execute("UPDATE file_metadata SET nas_path = %s WHERE id = %s", (stored, up.id))
        uploads[form] = up
    defs = hc_definitions(hc_postgres, s3_resource, nas)

    run_job(defs, "pending_sync", {"nas_replicas": {"retry_delay_s": 0}})
    for form, (stored, rel) in forms.items():
        r = row(conn, uploads[form].id)
        assert r["nas_status"] == "synced", (form, r["last_error"])
        assert r["nas_path"] == stored  # the file server's value, kept as it wrote it
        on_disk = samba_server.share_dir / root_dir / rel
        assert on_disk.read_bytes() == f"{form} bytes ".encode() * 300, form

    cfg = {"key_prefix": f"{prefix}/", "nas_prefix": "unc", "hash_sample": 50}
    audit = run_job(defs, "cache_consistency_audit", {"seaweedfs_cache_cache_consistency": cfg})
    check = audit.get_asset_check_evaluations()[0]
    meta = {k: v.value for k, v in check.metadata.items()}
    assert (meta["nas_missing"], meta["nas_orphaned"], meta["nas_hash_mismatch"]) == (0, 0, 0)
    assert meta["hashes_checked"] >= 2 * len(forms)

    evicted = materializations(run_job(defs, "cache_eviction", {"cache_evictions": {
        "key_prefix": f"{prefix}/", "capacity_bytes": 1, "policy": "fifo"}}))["cache_evictions"]
    assert (evicted["files_evicted"], evicted["recheck_failed"]) == (len(forms), 0)
    for up in uploads.values():
        r = row(conn, up.id)
        assert (r["cache_status"], r["nas_status"]) == (None, "synced")

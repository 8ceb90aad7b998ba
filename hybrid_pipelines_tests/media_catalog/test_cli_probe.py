"""`hybrid-pipelines probe PATH...` on local files and smb:// URLs (real Samba, real ffprobe)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from hybrid_pipelines.cli import main
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.commands import RESULT_KEYS, UsageError, parse_smb_url

from .conftest import put, unique


def _probe(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    rc = main(["probe", *args])
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines()]


def test_local_files_one_json_line_each(media: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc, rows = _probe([str(media["mp4"]), str(media["mkv"])], capsys)
    assert rc == 0
    assert [list(r) for r in rows] == [list(RESULT_KEYS)] * 2
    assert [r["path"] for r in rows] == [str(media["mp4"]), str(media["mkv"])]
    assert all(r["ok"] and r["video_codec"] == "h264" and r["width"] == 160 for r in rows)
    assert all(0 < r["bytes_read"] <= Path(r["path"]).stat().st_size for r in rows)

    rc, rows = _probe([str(media["mp4"]), str(media["zero"]), "/no/such/file.mp4"], capsys)
    assert rc == 1
    assert [r["ok"] for r in rows] == [True, False, False]
    assert rows[1]["error"] == "zero-byte file"
    assert rows[2]["error"] == "no such file or folder"


def test_smb_urls_with_password_from_environment(samba_server: SambaServer,
                                                 media: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = unique("cli")
    name = "결승전 - 홍길동 vs 김철수 #1.mp4"
    put(samba_server.share_dir, f"{folder}/{name}", media["bulky"])
    put(samba_server.share_dir, f"{folder}/broken.mp4", media["truncated"])
    base = (f"smb://{samba_server.username}@127.0.0.1:{samba_server.port}/"
            f"{samba_server.share}/{folder}")
    monkeypatch.setenv("HP_NAS_PASSWORD", samba_server.password)

    rc, rows = _probe([f"{base}/{quote(name)}"], capsys)
    assert rc == 0
    (row,) = rows
    assert row["path"] == f"{base}/{quote(name)}"
    assert (row["ok"], row["audio_codec"], row["height"]) == (True, "aac", 240)
    assert row["bytes_read"] * 4 < media["bulky"].stat().st_size  # partial read over SMB

    rc, rows = _probe([base], capsys)  # a folder: every file in it
    assert rc == 1
    assert {r["path"]: r["ok"] for r in rows} == {f"{base}/broken.mp4": False,
                                                  f"{base}/{name}": True}

    rc, rows = _probe([f"{base}/missing.mp4"], capsys)
    assert rc == 1 and "not found" in rows[0]["error"]

    monkeypatch.setenv("HP_NAS_PASSWORD", "Not-The-Pa55word")
    rc, rows = _probe([f"{base}/{quote(name)}"], capsys)
    assert rc == 1 and "logon failed" in rows[0]["error"]
    assert "Not-The-Pa55word" not in json.dumps(rows)


def test_bad_urls_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "smb://u:secret@host/share/x.mp4"]) == 2
    err = capsys.readouterr().err
    assert "HP_NAS_PASSWORD" in err and "secret" not in err
    t = parse_smb_url("smb://me@nas.local/media/WSOP%202024/Day%201.mp4")
    assert (t.host, t.port, t.share, t.path, t.username) == \
        ("nas.local", 445, "media", "WSOP 2024/Day 1.mp4", "me")
    for bad in ("smb://host", "smb:///share/x", "smb://h:99999/s/x"):
        with pytest.raises(UsageError):
            parse_smb_url(bad)


def test_catalog_partitions_command(samba_server: SambaServer, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import dagster as dg

    root = unique("mc-cli-root")
    for folder in ("WSOP", "Wait... 포커"):
        put(samba_server.share_dir, f"{root}/{folder}/a.mp4", b"x")
    home = tmp_path / "dagster_home"
    home.mkdir()
    for key, value in {**samba_server.env(), "DAGSTER_HOME": str(home),
                       "HP_CATALOG_NAS_ROOT": root}.items():
        monkeypatch.setenv(key, value)
    assert main(["catalog-partitions", "--from-nas"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["WSOP  (added)", "Wait%2E%2E%2E 포커  (added)"]
    assert main(["catalog-partitions", "HCL"]) == 0
    assert capsys.readouterr().out.splitlines() == \
        ["HCL  (added)", "WSOP", "Wait%2E%2E%2E 포커"]
    with dg.DagsterInstance.get() as instance:
        assert sorted(instance.get_dynamic_partitions("media_catalog_folders")) == \
            ["HCL", "WSOP", "Wait%2E%2E%2E 포커"]


def test_cli_probes_within_the_pipelines_read_budget(media: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "garbage.flac"
    with open(big, "wb") as fh:
        fh.write(b"fLaC" + bytes(range(256)) * 512)
        fh.truncate(256 * 1024 * 1024)  # sparse
    monkeypatch.setenv("HP_PROBE_MAX_READ_BYTES", str(2 * 1024 * 1024))
    rc, rows = _probe([str(big), str(media["mkv"])], capsys)
    assert rc == 1
    assert rows[0]["error"].startswith("probe would read more than 2 MiB")
    assert rows[0]["bytes_read"] <= 2 * 1024 * 1024
    assert rows[1]["ok"]
    monkeypatch.setenv("HP_PROBE_MAX_READ_BYTES", "1000")
    assert main(["probe", str(media["mkv"])]) == 2
    assert "HP_PROBE_MAX_READ_BYTES=1000 is below" in capsys.readouterr().err

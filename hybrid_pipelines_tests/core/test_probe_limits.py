"""Probing cannot exhaust disk or memory, nor make ffprobe open anything but its input.

Real ffprobe on real (sparse) files. The "guard" reader below is an instrument, not a mock: a
LocalFileReader over the real file that also watches the probe's temp directory, and stops the
probe with an AssertionError once more than twice the read budget has been fetched or stored,
so that a regression fails in a second instead of filling the disk with an 8 GiB copy.
"""

from __future__ import annotations

import http.server
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_pipelines.media_catalog.probe import probe, probe_path
from hybrid_pipelines.media_catalog.probe.ffprobe_run import FfprobeRun, memory_failure
from hybrid_pipelines.media_catalog.range_reader import (
    BytesReader,
    LocalFileReader,
    ReadBudgetExceeded,
    SparseFileCache,
)

MiB = 1024 * 1024
BUDGET = 64 * MiB  # the default of probe() and of HP_PROBE_MAX_READ_BYTES
SPARSE_SIZE = 8 * 1024 * MiB


class GuardReader(LocalFileReader):
    """Counts what the probe fetched and what its temp files hold on disk."""

    def __init__(self, path: Path, tmp_dir: Path, stop_at: int) -> None:
        super().__init__(path)
        self.tmp_dir, self.stop_at = tmp_dir, stop_at
        self.peak_temp_bytes = 0

    def temp_bytes(self) -> int:  # allocated blocks: a sparse file's holes cost nothing
        return sum(p.stat().st_blocks * 512 for p in self.tmp_dir.iterdir())

    def read_at(self, offset: int, length: int) -> bytes:
        self.peak_temp_bytes = max(self.peak_temp_bytes, self.temp_bytes())
        if self.bytes_read + length > self.stop_at or self.peak_temp_bytes > self.stop_at:
            raise AssertionError(
                f"probe read {self.bytes_read} bytes and holds {self.peak_temp_bytes} in temp "
                f"files, asking {length} more: past twice the {BUDGET}-byte budget")
        return super().read_at(offset, length)


def sparse_file(path: Path, head: bytes, size: int = SPARSE_SIZE) -> Path:
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)  # the rest is a hole: no disk used
    return path


def guarded_probe(path: Path, tmp_path: Path, **kw: object) -> tuple[GuardReader, object]:
    tmp = tmp_path / "probe-tmp"
    tmp.mkdir(exist_ok=True)
    with GuardReader(path, tmp, stop_at=2 * BUDGET) as reader:
        result = probe(reader, tmp_dir=str(tmp), **kw)  # type: ignore[arg-type]
    return reader, result


def test_file_failing_every_attempt_is_not_read_whole(ffprobe_bin: str, tmp_path: Path) -> None:
    """8 GiB whose head says FLAC and whose bytes are garbage: every partial attempt fails,
    and the last resort used to copy the whole file into a temp file."""
    src = sparse_file(tmp_path / "garbage.flac", b"fLaC" + os.urandom(256 * 1024))
    reader, result = guarded_probe(src, tmp_path)
    assert not result.ok  # type: ignore[attr-defined]
    error = result.error  # type: ignore[attr-defined]
    assert error.startswith("probe would read more than 64 MiB"), error
    assert "raise HP_PROBE_MAX_READ_BYTES (now 67108864) to at least 8589934592" in error
    assert "partial read" in error  # says why the cheap attempts failed too
    assert reader.bytes_read <= BUDGET
    assert result.bytes_read == reader.bytes_read  # type: ignore[attr-defined]
    assert reader.peak_temp_bytes <= BUDGET + MiB


def test_budget_is_a_total_over_all_attempts(ffprobe_bin: str, tmp_path: Path) -> None:
    src = sparse_file(tmp_path / "garbage.flac", b"fLaC" + os.urandom(256 * 1024), 64 * MiB)
    trace: list[str] = []
    with LocalFileReader(src) as reader:
        result = probe(reader, max_read_bytes=4 * MiB, trace=trace)
    # The 4 MiB head+tail attempt itself would cross a 4 MiB budget: refused before reading.
    assert not result.ok and result.error.startswith("probe would read more than 4 MiB")
    assert reader.bytes_read <= 4 * MiB
    assert any(line.startswith("sparse head+tail: partial read") for line in trace)


def test_sparse_cache_refuses_a_range_past_its_budget_before_reading_it() -> None:
    source = BytesReader(bytes(range(256)) * 64)  # 16 KiB
    with SparseFileCache(source, max_bytes=10_000) as cache:
        cache.ensure(0, 8_000)
        with pytest.raises(ReadBudgetExceeded) as info:
            cache.ensure(4_000, 8_000)  # 4,000 new bytes: 12,000 in total
        assert (info.value.needed, info.value.limit) == (12_000, 10_000)
        assert source.bytes_read == cache.bytes_read == 8_000  # nothing of it was read
        cache.ensure(0, 10_000)  # up to the budget exactly is fine
        assert cache.bytes_read == 10_000


@pytest.mark.parametrize(("run", "verdict"), [
    (FfprobeRun(127, b"", "ffprobe: error while loading shared libraries: libx.so: failed to "
                "map segment from shared object"), "ran out of memory under its limit of 1024"),
    (FfprobeRun(1, b"", "[mov] Cannot allocate memory"), "ran out of memory"),
    (FfprobeRun(-11, b"", ""), "died of signal 11 (a crash, or its memory limit of 1024 MiB)"),
    (FfprobeRun(1, b"", "x: Invalid data found when processing input"), None),
    (FfprobeRun(0, b"{}", ""), None),
])
def test_memory_failures_are_told_apart(run: FfprobeRun, verdict: str | None) -> None:
    why = memory_failure(run, 1024 * MiB)
    if verdict is None:
        assert why is None
    else:
        assert why is not None and verdict in why and "HP_PROBE_MEMORY_LIMIT_BYTES" in why


def huge_moov_mp4(path: Path, moov_size: int) -> Path:
    ftyp = struct.pack(">I4s", 24, b"ftyp") + b"isom\x00\x00\x02\x00isomiso2"
    mdat = struct.pack(">I4s", 8 + 4096, b"mdat") + os.urandom(4096)
    moov = struct.pack(">I4s", moov_size, b"moov")
    return sparse_file(path, ftyp + mdat + moov, len(ftyp) + len(mdat) + moov_size)


def test_huge_moov_is_refused_at_the_read_budget(ffprobe_bin: str, tmp_path: Path) -> None:
    """A 200 MiB moov is under the old 256 MiB structural cap: it used to be fetched, held in
    memory, parsed and piped. The read budget caps it."""
    src = huge_moov_mp4(tmp_path / "huge-moov.mp4", 200 * MiB)
    reader, result = guarded_probe(src, tmp_path)
    assert not result.ok  # type: ignore[attr-defined]
    error = result.error  # type: ignore[attr-defined]
    assert error.startswith("moov too large: box 'moov'"), error
    assert "HP_PROBE_MAX_READ_BYTES" in error
    assert reader.bytes_read < MiB  # the box walk reads headers only


def test_ffprobe_memory_limit_is_applied(ffprobe_bin: str, probe_media: dict[str, Path]) -> None:
    """64 MiB of address space is too little for ffprobe even to load its libraries: the
    limit reaches the real process, and the verdict names the setting."""
    result = probe_path(probe_media["mkv"], memory_limit_bytes=64 * MiB)
    assert not result.ok
    assert result.error.startswith("ffprobe ran out of memory under its limit of 64 MiB")
    assert "HP_PROBE_MEMORY_LIMIT_BYTES" in result.error
    assert probe_path(probe_media["mkv"]).ok  # the default limit leaves room


@pytest.fixture()
def ffprobe_spy(ffprobe_bin: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The real ffprobe behind a two-line shell wrapper that records its arguments and the
    resource limits it was started with."""
    log = tmp_path / "ffprobe-calls.log"
    wrapper = tmp_path / "ffprobe-spy"
    wrapper.write_text(f'#!/bin/sh\necho "ARGS $*" >> {log}\ncat /proc/self/limits >> {log}\n'
                       f'exec {ffprobe_bin} "$@"\n')
    wrapper.chmod(0o755)
    yield str(wrapper), log


def test_ffprobe_runs_confined_by_default(ffprobe_spy: tuple[str, Path],
                                          probe_media: dict[str, Path]) -> None:
    wrapper, log = ffprobe_spy
    assert probe_path(probe_media["mp4_moov_end"], ffprobe_path=wrapper).ok
    # One block per process: its ARGS line, then its /proc/self/limits.
    blocks = [b for b in log.read_text().split("ARGS ")[1:] if "-show_format" in b]
    args = [b.splitlines()[0] for b in blocks]
    assert args and all("-protocol_whitelist file,pipe" in a for a in args)
    assert all(" -f mov " in a for a in args)  # the sniffed container, not ffprobe's guess
    whitelist = args[0].split("-format_whitelist ", 1)[1].split(" ", 1)[0].split(",")
    assert "mov" in whitelist and "matroska" in whitelist
    assert not {"hls", "dash", "concat", "image2", "imf"} & set(whitelist)
    limits = [line for b in blocks for line in b.splitlines()
              if line.startswith("Max address space")]
    assert len(limits) == len(blocks)
    assert all(line.split()[3:5] == [str(1024 * MiB)] * 2 for line in limits)


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_server() -> Iterator[tuple[int, list[str]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], _Recorder.requests
    server.shutdown()
    server.server_close()


def _hls(segment: str) -> str:
    return ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n"
            f"{segment}\n#EXT-X-ENDLIST\n")


def test_playlist_cannot_make_ffprobe_open_another_local_file(
        probe_media: dict[str, Path], tmp_path: Path) -> None:
    """An HLS playlist on the share naming a real media file elsewhere on the machine: ffprobe
    used to open it and the playlist was catalogued as that file's video."""
    playlist = tmp_path / "innocent.m3u8"
    playlist.write_text(_hls(str(probe_media["ts"])))
    result = probe_path(playlist, probe_unknown=True)
    assert not result.ok, f"ffprobe followed the playlist: {result}"
    assert result.format != "hls" and result.duration is None


@pytest.mark.parametrize("kind", ["hls", "ffconcat"])
def test_playlist_cannot_make_ffprobe_fetch_a_url(kind: str, http_server: tuple[int, list[str]],
                                                  tmp_path: Path, ffprobe_bin: str) -> None:
    """Guard, not a reproduction: ffmpeg 5.1 itself refuses http segments in a file-based
    playlist; with `-protocol_whitelist file,pipe` and the demuxer whitelist that no longer
    depends on the ffmpeg build."""
    port, seen = http_server
    url = f"http://127.0.0.1:{port}/segment.ts"
    path = tmp_path / ("list.m3u8" if kind == "hls" else "list.ffconcat")
    path.write_text(_hls(url) if kind == "hls" else f"ffconcat version 1.0\nfile {url}\n")
    result = probe_path(path, probe_unknown=True)
    assert not result.ok
    assert seen == []

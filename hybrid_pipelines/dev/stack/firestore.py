"""The official Firestore emulator (Debian's google-cloud-cli-firestore-emulator jar)."""

from __future__ import annotations

import glob
import shutil
import subprocess
from dataclasses import dataclass
from typing import ClassVar

import requests

from hybrid_pipelines.dev.stack.base import LocalServer
from hybrid_pipelines.dev.stack.process import LOOPBACK, spawn, wait_until

PROJECT_ID = "demo-hybrid"


def emulator_jar() -> str | None:
    try:
        out = subprocess.run(["dpkg", "-L", "google-cloud-cli-firestore-emulator"],
                             capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.endswith("cloud-firestore-emulator.jar"):
                return line
    except (OSError, subprocess.TimeoutExpired):
        pass
    found = glob.glob("/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/*.jar")
    return found[0] if found else None


def emulator_unavailable() -> str | None:
    if not shutil.which("java"):
        return "Java is not installed (the Firestore emulator needs Java 17)"
    if not emulator_jar():
        return ("the Firestore emulator jar is missing (Debian package "
                "google-cloud-cli-firestore-emulator, shipped with the machine image)")
    return None


@dataclass
class FirestoreEmulator(LocalServer):
    port: int = 0
    project_id: str = PROJECT_ID
    name: ClassVar[str] = "firestore"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        why = emulator_unavailable()
        if why:
            raise RuntimeError(f"Firestore emulator cannot start: {why}")
        self.root.mkdir(parents=True, exist_ok=True)
        argv = ["java", "-Duser.language=en", "-Xmx512m", "-cp", str(emulator_jar()),
                "com.google.cloud.datastore.emulator.firestore.CloudFirestore", "start",
                f"--host={LOOPBACK}", f"--port={self.port}", f"--project_id={self.project_id}"]
        proc = spawn(argv, self.log_path)
        self.pid = proc.pid
        wait_until(self.healthy, 90, f"Firestore emulator on {self.address}", self.log_path, proc)

    def healthy(self) -> bool:
        try:
            return requests.get(f"http://{self.address}/", timeout=1).ok
        except requests.RequestException:
            return False

    def reset(self) -> None:
        requests.delete(f"http://{self.address}/emulator/v1/projects/{self.project_id}"
                        "/databases/(default)/documents", timeout=10).raise_for_status()

    def env(self) -> dict[str, str]:
        return {"FIRESTORE_EMULATOR_HOST": self.address, "HP_FIRESTORE_PROJECT": self.project_id}

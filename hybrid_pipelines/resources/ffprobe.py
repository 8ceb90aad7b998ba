"""ffprobe, the media prober (Debian's ffmpeg)."""

from __future__ import annotations

import shutil
import subprocess

import dagster as dg

from hybrid_pipelines.resources.errors import Health, probe_health, require

ENV_VARS = ("HP_FFPROBE_PATH", "HP_FFPROBE_TIMEOUT")


class FFprobeResource(dg.ConfigurableResource):
    path: str = "ffprobe"
    timeout_s: float = 30.0

    @property
    def address(self) -> str:
        return self.path

    def binary(self) -> str:
        found = shutil.which(self.path)
        if not found:
            raise FileNotFoundError(f"{self.path} not found")
        return found

    def health(self) -> Health:
        def check() -> str:
            out = subprocess.run([self.binary(), "-version"], capture_output=True, text=True,
                                 timeout=self.timeout_s, check=True).stdout
            return out.splitlines()[0] if out else "ok"

        def explain(exc: BaseException) -> str:
            if isinstance(exc, FileNotFoundError):
                return "ffprobe is not installed or not on PATH (apt-get install ffmpeg)"
            return f"{type(exc).__name__}: {exc}"

        return probe_health("ffprobe", self.address, check, explain)

    def require_healthy(self) -> None:
        require(self.health(), ENV_VARS)

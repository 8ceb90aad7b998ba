"""What every server of the local stack has in common."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from hybrid_pipelines.dev.stack.process import pid_alive, stop_pid


@dataclass
class LocalServer:
    """One real server process of the local stack, with its data under `root`.

    Subclasses define `start()`, `healthy()`, `address` and `env()`; the PID is recorded in the
    stack's state file so `stack down` can stop it from another process."""

    root: Path
    pid: int | None = None
    stop_grace: float = field(default=10.0, repr=False)
    name: ClassVar[str] = "server"
    stop_signal: ClassVar[int] = signal.SIGTERM

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def address(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def healthy(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def stop(self) -> None:
        stop_pid(self.pid, grace=self.stop_grace, sig=self.stop_signal)
        self.pid = None

    def kill(self) -> None:
        """Abrupt stop, for fault-injection tests: no chance to flush or say goodbye."""
        stop_pid(self.pid, grace=2.0, sig=signal.SIGKILL)
        self.pid = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = str(value) if isinstance(value, Path) else value
        return out

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> LocalServer:
        """Fields another version of the project recorded but this one lacks are dropped, so
        `stack down` still stops what a newer or older `stack up` started."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in rec.items() if k in known}
        values["root"] = Path(values["root"])
        return cls(**values)

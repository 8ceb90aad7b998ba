"""What a person reads: one message per notification, or one digest when many fire in the same
evaluation, and the run-failure message. Rendered for Slack (`{"text": ...}`), for a generic
JSON webhook (the fields) and for e-mail (subject + plain text)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hybrid_pipelines.operations.rules.incidents import (
    CHANGED,
    OPENED,
    RECOVERED,
    Notification,
    worst,
)

DIGEST_AT = 3  # this many notifications in one evaluation become one digest message
PREFIX = "[hybrid-pipelines]"
_VERB = {OPENED: "ALERT", CHANGED: "ALERT (severity changed)", RECOVERED: "RECOVERED"}


@dataclass(frozen=True)
class Message:
    kind: str          # incident | digest | run_failure
    severity: str      # critical | warning | info
    subject: str
    text: str
    items: list[dict[str, Any]] = field(default_factory=list)
    link: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Message:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def slack_body(self) -> dict[str, Any]:
        return {"text": self.text}

    def json_body(self) -> dict[str, Any]:
        return {"source": "hybrid-pipelines", **self.to_json()}


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _line(n: Notification) -> str:
    if n.kind == RECOVERED:
        return (f"{_VERB[n.kind]} {n.title} after {_duration(n.at - n.since)}: {n.detail}")
    return f"{_VERB[n.kind]} [{n.severity.upper()}] {n.title}: {n.detail}"


def _item(n: Notification) -> dict[str, Any]:
    return {**n.to_json(), "since_utc": _when(n.since), "at_utc": _when(n.at)}


def incident_message(n: Notification) -> Message:
    severity = "info" if n.kind == RECOVERED else n.severity
    subject = f"{PREFIX} {_line(n).split(':')[0]}"
    text = (f"{_line(n)}\nincident: {n.key} (since {_when(n.since)})")
    return Message("incident", severity, subject, text, [_item(n)])


def digest_message(notes: list[Notification]) -> Message:
    opened = sum(n.kind != RECOVERED for n in notes)
    recovered = len(notes) - opened
    subject = (f"{PREFIX} {len(notes)} alert changes: {opened} firing, {recovered} recovered")
    order = sorted(notes, key=lambda n: (n.kind == RECOVERED, n.severity != "critical", n.key))
    text = subject + "\n" + "\n".join(f"- {_line(n)}" for n in order)
    return Message("digest", worst(notes), subject, text, [_item(n) for n in order])


def group(notes: list[Notification], digest_at: int = DIGEST_AT) -> list[Message]:
    """One message per notification, or one digest once `digest_at` fire at once."""
    if not notes:
        return []
    if digest_at > 0 and len(notes) >= digest_at:
        return [digest_message(notes)]
    return [incident_message(n) for n in notes]


def first_line(error: str) -> str:
    """The error's first non-empty line (the exception type and message, no traceback)."""
    return next((ln.strip() for ln in (error or "").splitlines() if ln.strip()), "(no message)")


def run_failure_message(job: str, run_id: str, steps: list[str], error: str,
                        ui_url: str) -> Message:
    link = f"{ui_url.rstrip('/')}/runs/{run_id}"
    where = ", ".join(steps) if steps else "(no step failed: the run itself)"
    line = first_line(error)
    subject = f"{PREFIX} Run failed: {job}"
    text = (f"Run failed: job {job}\nstep: {where}\nerror: {line}\nrun: {link}")
    item = {"kind": "run_failure", "job": job, "run_id": run_id, "steps": steps,
            "error": line}
    return Message("run_failure", "critical", subject, text, [item], link)


def run_recovery_message(job: str, run_id: str, failed_runs: int, ui_url: str) -> Message:
    link = f"{ui_url.rstrip('/')}/runs/{run_id}"
    subject = f"{PREFIX} Run recovered: {job}"
    text = (f"RECOVERED job {job}: this run succeeded after {failed_runs} failed "
            f"run{'s' if failed_runs != 1 else ''}\nrun: {link}")
    item = {"kind": "run_recovered", "job": job, "run_id": run_id, "failed_runs": failed_runs}
    return Message("run_recovery", "info", subject, text, [item], link)

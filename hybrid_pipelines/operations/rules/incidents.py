"""One message per incident, not per tick: the incident state machine.

State (plain JSON, kept in the alert sensor's cursor so it survives daemon restarts):
  open:    key -> {severity, title, detail, opened_at}  incidents a person was told about
  pending: key -> first time the condition was seen      conditions not yet held long enough

A firing observation opens an incident once (after its hold time), stays silent while it keeps
firing, and speaks again only when its severity changes; a clear observation of an open
incident recovers it; an unmeasured one (firing None) changes nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hybrid_pipelines.operations.rules.thresholds import CRITICAL, Observation

OPENED, CHANGED, RECOVERED = "opened", "changed", "recovered"


@dataclass(frozen=True)
class Notification:
    kind: str          # opened | changed | recovered
    key: str
    severity: str
    title: str
    detail: str
    since: float       # when the incident opened (recovered: how long it lasted)
    at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Notification:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


def empty_state() -> dict[str, Any]:
    return {"open": {}, "pending": {}}


def _valid(state: Any) -> dict[str, Any]:
    """A cursor written by an older version or edited by hand must not stop alerting."""
    if not isinstance(state, dict):
        return empty_state()
    out = empty_state()
    for part in ("open", "pending"):
        if isinstance(state.get(part), dict):
            out[part] = dict(state[part])
    return out


def step(state: Any, observations: list[Observation],
         now: float) -> tuple[dict[str, Any], list[Notification]]:
    """The next state and what to tell a person, for this evaluation's observations."""
    new = _valid(state)
    opened, pending = new["open"], new["pending"]
    out: list[Notification] = []
    for ob in observations:
        if ob.firing is None:
            continue
        if not ob.firing:
            pending.pop(ob.key, None)
            inc = opened.pop(ob.key, None)
            if inc is not None:
                out.append(Notification(RECOVERED, ob.key, inc["severity"], inc["title"],
                                        ob.detail or inc["detail"], inc["opened_at"], now))
            continue
        inc = opened.get(ob.key)
        if inc is not None:
            changed = inc["severity"] != ob.severity
            inc.update(severity=ob.severity, detail=ob.detail, title=ob.title)
            if changed:
                out.append(Notification(CHANGED, ob.key, ob.severity, ob.title, ob.detail,
                                        inc["opened_at"], now))
            continue
        start = min(float(pending.get(ob.key, now)),
                    ob.since if ob.since is not None else now)
        if now - start >= ob.hold_s:
            pending.pop(ob.key, None)
            opened[ob.key] = {"severity": ob.severity, "title": ob.title,
                              "detail": ob.detail, "opened_at": start}
            out.append(Notification(OPENED, ob.key, ob.severity, ob.title, ob.detail,
                                    start, now))
        else:
            pending[ob.key] = start
    return new, out


def worst(notes: list[Notification]) -> str:
    """The severity a group of notifications is sent with."""
    return CRITICAL if any(n.severity == CRITICAL and n.kind != RECOVERED for n in notes) \
        else "warning" if any(n.kind != RECOVERED for n in notes) else "info"

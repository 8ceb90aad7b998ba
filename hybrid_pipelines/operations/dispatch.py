"""Sending messages to every channel, with an outbox: a message a channel could not take
(the webhook down, the SMTP server restarting) is kept in the sensor cursor and retried on the
next evaluations, so an incident is never silently lost, and never re-sent to a channel that
already has it. The outbox is bounded (count and age) so a dead channel cannot grow it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hybrid_pipelines.operations.rules.messages import Message

MAX_OUTBOX = 100
OUTBOX_TTL_S = 24 * 3600.0

Send = Callable[[str, Message], None]


@dataclass
class DispatchReport:
    outbox: list[dict[str, Any]] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)   # "channel: subject"
    errors: list[str] = field(default_factory=list)
    dropped: int = 0


def dispatch(send: Send, channels: list[str], messages: list[Message],
             outbox: Any, now: float) -> DispatchReport:
    """Retry the outbox (oldest first), then send each new message to every channel. A
    channel that fails once is not tried again in this call (its messages wait), so a dead
    server costs one timeout per evaluation, not one per message."""
    report = DispatchReport()
    dead: set[str] = set()
    pending = [e for e in (outbox if isinstance(outbox, list) else []) if isinstance(e, dict)]
    pending += [{"channel": ch, "message": m.to_json(), "first": now, "tries": 0}
                for m in messages for ch in channels]
    for entry in pending:
        channel = entry.get("channel", "")
        if channel not in channels or now - float(entry.get("first", now)) > OUTBOX_TTL_S:
            report.dropped += 1
            continue
        try:
            message = Message.from_json(entry["message"])
        except (KeyError, TypeError):
            report.dropped += 1
            continue
        if channel in dead:
            report.outbox.append(entry)
            continue
        try:
            send(channel, message)
        except Exception as exc:  # noqa: BLE001 - one channel's failure must not stop others
            dead.add(channel)
            report.errors.append(f"{channel}: {exc}")
            report.outbox.append({**entry, "tries": int(entry.get("tries", 0)) + 1})
            continue
        report.delivered.append(f"{channel}: {message.subject}")
    if len(report.outbox) > MAX_OUTBOX:
        report.dropped += len(report.outbox) - MAX_OUTBOX
        report.outbox = report.outbox[-MAX_OUTBOX:]
    return report

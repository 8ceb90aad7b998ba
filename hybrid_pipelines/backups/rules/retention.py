"""Backup labels and retention.

A backup lives under `<label>/` in the backup bucket, the label being the month it was taken
(`YYYY-MM`, UTC); a second run in the same month replaces that month's backup. Retention
keeps the `keep` newest VERIFIED backups and deletes only labels older than the oldest one
kept, and only when the backup just taken verified: a failed backup never costs an old one.
Prefixes that are not labels are never touched."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

LABEL_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
DEFAULT_KEEP = 12


def label_for(now: datetime) -> str:
    """The backup label of instant `now` (naive = UTC)."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return f"{now.year:04d}-{now.month:02d}"


def is_label(text: str) -> bool:
    return bool(LABEL_RE.match(text))


def check_label(label: str) -> str:
    if not is_label(label):
        raise ValueError(f"backup label {label!r} is not YYYY-MM (e.g. 2026-11): give the "
                         "month of the backup")
    return label


def expired_labels(labels: Mapping[str, bool], current: str, current_verified: bool,
                   keep: int = DEFAULT_KEEP) -> list[str]:
    """Labels to delete, oldest first. `labels` maps each backup label found in the bucket to
    whether its manifest says verified (`current` included or not). Nothing is deleted unless
    the current backup verified; the `keep` newest verified labels (current first) are kept,
    and so is every label newer than the oldest of them (a failed backup there is
    harmless, and deleting it would race a run in progress)."""
    if keep < 1:
        raise ValueError(f"retention keep={keep}: keep at least 1 backup (default "
                         f"{DEFAULT_KEEP})")
    check_label(current)
    if not current_verified:
        return []
    status = {k: v for k, v in labels.items() if is_label(k)}
    status[current] = True
    verified = sorted((k for k, ok in status.items() if ok), reverse=True)
    kept = verified[:keep]
    oldest_kept = kept[-1]
    return sorted(k for k in status if k < oldest_kept)

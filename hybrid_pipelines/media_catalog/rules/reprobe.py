"""Why a probe failed, and whether (and when) it is worth trying again. Pure: no I/O.

A failed probe is recorded invalid with a failure class, taken from the reason the prober
already gives (probe.driver and probe.ffprobe_run word every verdict):

* corrupt      the bytes are broken (truncated, hostile sizes, ffprobe refuses them)
* unsupported  not a container we know, or one ffprobe cannot decode
* budget       it would need more than HP_PROBE_MAX_READ_BYTES
* memory       ffprobe ran out of its address-space limit (HP_PROBE_MEMORY_LIMIT_BYTES)
* refused      a path no NAS check accepts (a symlink out of the share)
* timeout      ffprobe did not answer in time (a slow NAS, a loaded host)
* transient    the NAS failed while the file was read (reconnects exhausted), or the file
               changed under the read

Only timeout and transient say nothing about the file: they are retried with backoff, up to
a number of attempts, then final. Every class is tried again when ffprobe's version changes
(a new ffprobe may read what the old one could not) or an operator asks (catalog reprobe).
"""

from __future__ import annotations

import re

CORRUPT, UNSUPPORTED, BUDGET, MEMORY = "corrupt", "unsupported", "budget", "memory"
REFUSED, TIMEOUT, TRANSIENT = "refused", "timeout", "transient"
FAILURE_CLASSES = (CORRUPT, UNSUPPORTED, BUDGET, MEMORY, REFUSED, TIMEOUT, TRANSIENT)
RETRYABLE = frozenset({TIMEOUT, TRANSIENT})

_UNSUPPORTED_HINTS = ("not a media file", "no decoder", "unsupported codec",
                      "decoding for stream", "could not find codec parameters")


def classify_failure(error: str | None) -> str:
    """The failure class of a probe verdict (ProbeResult.error)."""
    text = (error or "").strip()
    low = text.lower()
    if low.startswith("ffprobe timed out"):
        return TIMEOUT
    if low.startswith("probe would read more than") or "read budget" in low:
        return BUDGET
    if low.startswith(("ffprobe ran out of memory", "ffprobe died of signal")):
        return MEMORY
    if low.startswith("refused:"):
        return REFUSED
    if low.startswith("truncated: file shrank while being read"):
        return TRANSIENT  # rewritten under the read: the next scan sees it settle
    if any(h in low for h in _UNSUPPORTED_HINTS):
        return UNSUPPORTED
    return CORRUPT


def next_retry_at(failure_class: str | None, attempts: int, now: float, *,
                  backoff_s: float, max_attempts: int) -> float | None:
    """When to probe again after `attempts` consecutive retryable failures, or None: a
    verdict (valid, or a class that a retry cannot change) or the attempts used up."""
    if failure_class not in RETRYABLE or attempts >= max_attempts:
        return None
    return now + backoff_s * (2 ** max(0, attempts - 1))


def parse_ffprobe_version(text: str) -> str:
    """'ffprobe version 5.1.6-0+deb12u1 Copyright ...' -> '5.1.6-0+deb12u1'; otherwise the
    first line as printed (a build that words it differently is still told apart)."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    m = re.match(r"ffprobe version (\S+)", first)
    return m.group(1) if m else first[:200] or "unknown"


NIGHTLY_REPROBE_ENV = "HP_CATALOG_NIGHTLY_REPROBE"


def parse_nightly_reprobe(raw: str | None) -> tuple[bool, str | None] | None:
    """HP_CATALOG_NIGHTLY_REPROBE -> (invalid files only, error text) for the nightly
    reconcile's probe step, or None (off: unset, '', 'off', 'none')."""
    value = (raw or "").strip()
    if value.lower() in ("", "off", "none", "0", "false"):
        return None
    if value.lower() == "invalid":
        return True, None
    if value.lower().startswith("error:") and value[6:].strip():
        return True, value[6:].strip()
    raise ValueError(f"{NIGHTLY_REPROBE_ENV}={raw!r} is not 'invalid' or 'error:TEXT'; set it "
                     "to re-probe every invalid file (invalid), those whose error contains "
                     "TEXT (error:TEXT), or unset it")

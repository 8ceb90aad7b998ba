"""What every bench script reports: a claim with the project's figure, the baseline measured
in the same run, and their ratio (run_all.py skips files starting with '_')."""

from __future__ import annotations


def claim(text: str, ours: float, baseline: float, unit: str) -> dict[str, object]:
    return {"claim": text, "ours": round(ours, 4), "baseline": round(baseline, 4), "unit": unit,
            "ratio": round(ours / baseline, 4) if baseline else 0.0}

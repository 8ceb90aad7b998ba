"""Following the deploy docs never overwrites a real Secret (issue 12, item 10): no folder or file
that a documented `kubectl apply -f` applies holds a Secret with values, and the Secrets come
from `kubectl apply -k deploy/secrets/`, which reads only files git never holds."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .deploy_files import (
    DEPLOY,
    PLACEHOLDER,
    REPO,
    SECRETS,
    generator_sources,
    kustomization,
    load_yaml_docs,
)

# `kubectl apply ...` as a README shows it, in a code block or inline.
APPLY = re.compile(r"kubectl\s+apply\s+[^`\n|#]*")


def documented_applies() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `kubectl apply` in the deploy docs, the Helm values' comments
    and the project README."""
    docs = [*sorted(DEPLOY.rglob("*.md")), *sorted(DEPLOY.rglob("*.yaml")), REPO / "README.md"]
    out = []
    for path in docs:
        for match in APPLY.finditer(path.read_text()):
            out.append((str(path.relative_to(REPO)), shlex.split(match.group(0).strip())))
    return out


def applied_paths(argv: list[str]) -> list[tuple[str, str, bool]]:
    """(flag, path, recursive) for each -f/--filename/-k/--kustomize argument."""
    recursive = any(a in {"-R", "--recursive"} for a in argv)
    out = []
    for i, arg in enumerate(argv):
        for flag in ("-f", "--filename", "-k", "--kustomize"):
            if arg == flag and i + 1 < len(argv):
                out.append((flag.lstrip("-")[0], argv[i + 1], recursive))
            elif arg.startswith(flag + "="):
                out.append((flag.lstrip("-")[0], arg.split("=", 1)[1], recursive))
    return out


def yaml_files(path: Path, recursive: bool) -> list[Path]:
    """What `kubectl apply -f PATH` reads: the file, or the folder's .yaml/.yml/.json files
    (its subfolders only with -R)."""
    if path.is_file():
        return [path]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in path.glob(pattern) if p.suffix in {".yaml", ".yml", ".json"})


def secrets_with_values(docs: list[dict[str, Any]]) -> list[str]:
    """Names of Secrets (also inside a List) that carry data or stringData."""
    found = []
    for doc in docs:
        items = doc.get("items", []) if doc.get("kind") == "List" else [doc]
        for obj in items:
            if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
                found.append(obj.get("metadata", {}).get("name", "?"))
    return found


def test_the_readme_applies_the_manifests_folder_and_the_secrets_kustomization() -> None:
    readme = [argv for where, argv in documented_applies() if where == "deploy/README.md"]
    paths = {(flag, p.rstrip("/")) for argv in readme for flag, p, _ in applied_paths(argv)}
    assert ("f", "deploy/k8s") in paths, f"deploy/README.md applies {sorted(paths)}"
    assert ("k", "deploy/secrets") in paths, f"deploy/README.md applies {sorted(paths)}"


def test_no_documented_apply_f_applies_a_secret_with_values() -> None:
    """The old deploy/k8s/secrets.yaml and juicefs-csi.yaml carried `change-me` Secrets:
    `kubectl apply -f deploy/k8s/`, re-run on a live cluster, reset the real ones."""
    checked = 0
    for where, argv in documented_applies():
        for flag, rel, recursive in applied_paths(argv):
            if flag != "f" or rel == "-":
                continue
            target = REPO / rel
            assert target.exists(), f"{where}: `{shlex.join(argv)}` names a missing {rel}"
            for path in yaml_files(target, recursive):
                named = secrets_with_values(load_yaml_docs(path))
                assert not named, (f"{where}: `{shlex.join(argv)}` applies "
                                   f"{path.relative_to(REPO)}, which holds Secret(s) {named} "
                                   "with values: move them to deploy/secrets/ (generated from "
                                   "uncommitted files)")
                assert PLACEHOLDER not in path.read_text(), path
                checked += 1
    assert checked >= 5, "the documented applies cover deploy/k8s/*.yaml"
    # Not even with -R: no Secret with values anywhere under deploy/k8s/.
    for path in yaml_files(DEPLOY / "k8s", recursive=True):
        assert not secrets_with_values(load_yaml_docs(path)), path


def test_the_check_catches_a_secret_with_values(tmp_path: Path) -> None:
    """The check above can fail: a folder with the old placeholder Secret is caught, also as
    `data` and inside a List."""
    (tmp_path / "secrets.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: hp-nas-credentials}\n"
        "stringData: {HP_NAS_PASSWORD: change-me-nas-password}\n---\n"
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, "
        "metadata: {name: b}, data: {k: dg==}}\n")
    (tmp_path / "ok.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    found = [n for p in yaml_files(tmp_path, False) for n in secrets_with_values(load_yaml_docs(p))]
    assert found == ["hp-nas-credentials", "b"]


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          timeout=30)


def test_the_secrets_kustomization_reads_only_uncommitted_files() -> None:
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: cannot ask git what it ignores")
    kust = kustomization()
    assert kust["namespace"] == "hybrid-pipelines"
    assert kust["generatorOptions"]["disableNameSuffixHash"] is True, \
        "fixed names: the Helm values, StorageClasses and StatefulSets refer to them"
    assert not kust.get("resources"), "only generated Secrets: no committed manifest"
    for gen in kust["secretGenerator"]:
        assert not gen.get("literals"), f"{gen['name']}: literals would be committed values"
        sources = generator_sources(gen)
        assert sources, gen["name"]
        for name in sources:
            rel = str((SECRETS / name).relative_to(REPO))
            assert not name.endswith(".example"), f"{gen['name']} reads the template {name}"
            assert (SECRETS / f"{name}.example").is_file(), f"{rel} has no .example template"
            assert _git("check-ignore", "-q", "--no-index", rel).returncode == 0, \
                f"{rel} holds real secret values: add it to deploy/secrets/.gitignore"
            assert not _git("ls-files", "--", rel).stdout.strip(), f"{rel} is committed"
            example = str((SECRETS / f"{name}.example").relative_to(REPO))
            assert _git("check-ignore", "-q", "--no-index", example).returncode != 0, \
                f"{example} (the template) must stay committed"


def test_secret_templates_have_one_line_per_key() -> None:
    """An env template the generator reads must parse as KEY=VALUE lines."""
    for path in sorted(SECRETS.glob("*.env.example")):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, sep, value = line.partition("=")
                assert sep and key and re.fullmatch(r"[-._a-zA-Z0-9]+", key), (path, line)
                assert value == value.strip(), (path, line)


def test_helm_values_comment_shows_the_same_order() -> None:
    text = (DEPLOY / "helm" / "values.yaml").read_text()
    secrets_at, manifests_at = text.find("kubectl apply -k deploy/secrets/"), \
        text.find("kubectl apply -f deploy/k8s/ ")
    assert 0 <= secrets_at < manifests_at, "the Secrets first, then the manifests"

"""The SQLite catalog in the cluster (issue 12, item 10): WAL mode shares memory between the
processes of one kernel only, so the catalog is not on the ReadWriteMany JuiceFS volume that
pods on many nodes mount. It has its own ReadWriteOnce claim; only the code location (its NAS
sensor reads it) and the steps that open it mount it, on the code location's node; the queue
and the op pool let one writer at a time."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import yaml

from .deploy_files import (
    DEPLOY,
    HELM,
    PACKAGE,
    dagster_k8s_pod,
    helm_values,
    k8s_deployment_env,
    k8s_objects,
    k8s_run_launcher,
    user_deployment,
)

CLAIM = "hp-catalog"
HOSTNAME = "kubernetes.io/hostname"


def catalog_dir() -> str:
    return str(Path(k8s_deployment_env()["HP_SQLITE_CATALOG_PATH"]).parent)


def catalog_steps() -> set[str]:
    """Asset (step) names whose function takes the `sqlite_catalog` resource, from the source:
    the steps that open the catalog file."""
    names: set[str] = set()
    for path in sorted((PACKAGE / "defs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            if "sqlite_catalog" not in {a.arg for a in node.args.args + node.args.kwonlyargs}:
                continue
            for deco in node.decorator_list:
                call = deco if isinstance(deco, ast.Call) else None
                func = call.func if call else deco
                if ast.unparse(func).rsplit(".", 1)[-1] in {"asset", "multi_asset", "op"}:
                    named = [k.value.value for k in (call.keywords if call else [])
                             if k.arg == "name" and isinstance(k.value, ast.Constant)]
                    names.add(named[0] if named else node.name)
    return names


def claim_mounts(container: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Mount paths of the catalog claim in a (camelCase) container + pod spec."""
    volumes = {v["name"] for v in spec.get("volumes", [])
               if v.get("persistentVolumeClaim", {}).get("claimName") == CLAIM}
    return [m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in volumes]


def follows_the_catalog_host(spec: dict[str, Any]) -> bool:
    """Required pod affinity, per node, to a label the code location's pod carries."""
    host_labels = user_deployment().get("labels", {})
    terms = spec.get("affinity", {}).get("podAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", [])
    return any(t["topologyKey"] == HOSTNAME and t["labelSelector"]["matchLabels"].items()
               <= host_labels.items() and t["labelSelector"]["matchLabels"] for t in terms)


def test_the_catalog_claim_is_read_write_once_and_not_juicefs() -> None:
    claim = k8s_objects("PersistentVolumeClaim")[CLAIM]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"], \
        f"{CLAIM}: {claim['accessModes']}; SQLite's WAL needs one node"
    juicefs = {n for n, sc in k8s_objects("StorageClass").items()
               if sc["provisioner"] == "csi.juicefs.com"}
    assert claim.get("storageClassName") not in juicefs, \
        f"{CLAIM} on {claim.get('storageClassName')}: a network file system shared by nodes"
    others = [n for n, c in k8s_objects("PersistentVolumeClaim").items() if n != CLAIM]
    assert others, "the tiers keep their own claims"


def test_the_code_location_mounts_it_and_no_run_pod_inherits_it() -> None:
    dep, launcher = user_deployment(), k8s_run_launcher()
    volumes = {v["name"]: v for v in dep["volumes"]}
    mounts = [m["mountPath"] for m in dep["volumeMounts"]
              if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == CLAIM]
    assert mounts == [catalog_dir()], "the NAS sensor (code location) opens the catalog"
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is False
    assert not [v for v in launcher.get("volumes", [])
                if v.get("persistentVolumeClaim", {}).get("claimName") == CLAIM], \
        "every run and step pod would then need the catalog's node"
    assert dep.get("deploymentStrategy", {}).get("type") == "Recreate", \
        "a rolling update would wait for a volume the old pod holds"
    assert dep["labels"].get("hybrid-pipelines/catalog-host") == "true"


def test_every_step_that_opens_the_catalog_mounts_it_on_the_catalog_node() -> None:
    steps = catalog_steps()
    assert {"nas_media_files", "media_probes", "catalog_db", "firestore_catalog",
            "backend_health"} <= steps, steps
    config = yaml.safe_load((HELM / "k8s-executor.yaml").read_text())["execution"]["config"]
    per_step = config["per_step_k8s_config"]
    for step in sorted(steps):
        assert step in per_step, f"step {step} opens the catalog: mount it in k8s-executor.yaml"
        container, spec = dagster_k8s_pod(per_step[step])
        assert claim_mounts(container, spec) == [catalog_dir()], step
        assert follows_the_catalog_host(spec), f"step {step} could land on another node"
    for step in set(per_step) - steps:
        assert not claim_mounts(*dagster_k8s_pod(per_step[step])), step
    assert not claim_mounts(*dagster_k8s_pod(config["step_k8s_config"])), \
        "every step pod would then need the catalog's node"


def test_the_catalog_job_family_tag_mounts_it_the_same_way() -> None:
    families = yaml.safe_load((HELM / "job-k8s-config.yaml").read_text())
    container, spec = dagster_k8s_pod(families["catalog"])
    assert claim_mounts(container, spec) == [catalog_dir()]
    assert follows_the_catalog_host(spec)
    for family in set(families) - {"catalog"}:
        assert not claim_mounts(*dagster_k8s_pod(families[family])), family


def test_one_writer_at_a_time_in_the_helm_values() -> None:
    from hybrid_pipelines.defs.pools import CATALOG_TAG, CATALOG_TAGS

    chart = helm_values()["concurrency"]
    limits = [lim for lim in chart["runs"]["tagConcurrencyLimits"] if lim["key"] == CATALOG_TAG]
    assert limits and all(lim["limit"] == 1 and lim.get("value") in (None, CATALOG_TAGS[
        CATALOG_TAG]) for lim in limits), limits
    assert chart["pools"]["defaultLimit"] == 1, "the catalog assets' op pool: one op at a time"


def test_the_readme_explains_the_choice() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for needed in ("ReadWriteOnce", "k8s/catalog.yaml", "hybrid-pipelines/catalog-host",
                   "hybrid_pipelines/catalog: 1"):
        assert needed in readme, needed
    assert "sits on an RWX JuiceFS volume" not in readme

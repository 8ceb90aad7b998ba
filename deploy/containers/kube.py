"""`podman kube play` of the Kubernetes path, as far as podman runs it.

Renders one kube YAML from the project's own Kubernetes files: the ConfigMap of
deploy/k8s/configmap.yaml, the PersistentVolumeClaims the code location mounts and the user-code
Deployment the Helm values describe (deploy/helm/values.yaml, dagster-user-deployments), with
what only a cluster has replaced by this host's equivalents (the service addresses by the
container stack's loopback ports, the registry image by the local one, pod networking by the
host's). The Secrets of deploy/secrets (hp-nas-credentials, hp-backend-credentials) become
podman secrets in the form podman 4.3's `envFrom.secretRef` reads (a JSON object of base64
values): its own handling of `kind: Secret` stores YAML it then fails to parse as JSON.

    python deploy/containers/kube.py render OUT.yaml   # also creates the podman secrets
    python deploy/containers/kube.py kinds             # every kind in deploy/k8s, and podman's
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S, HELM, SECRETS = REPO / "deploy" / "k8s", REPO / "deploy" / "helm", REPO / "deploy" / "secrets"
# What `podman kube play` (4.3) creates; every other kind of deploy/k8s is listed in
# deploy/README.md with how it is checked instead.
PODMAN_KINDS = {"Pod", "Deployment", "PersistentVolumeClaim", "ConfigMap"}
DEPLOYMENT_NAME = "hybrid-pipelines-user-code"


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def manifests() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]


def kinds() -> dict[str, list[str]]:
    """Each kind in deploy/k8s -> 'file/name' of its objects."""
    out: dict[str, list[str]] = {}
    for fname, doc in manifests():
        out.setdefault(doc["kind"], []).append(f"{fname}/{doc['metadata']['name']}")
    return out


def site_env(env: dict[str, str]) -> dict[str, str]:
    """The ConfigMap's site values for this host: the container stack's loopback addresses
    (deploy/containers/lib.sh ports) where a cluster has service names, the emulator where
    production has a key file, and the multiprocess executor (no cluster to start pods on)."""
    s3 = f"http://127.0.0.1:{env['HP_CT_SW_S3_PORT']}"
    return {
        "HP_NAS_HOST": "127.0.0.1", "HP_NAS_PORT": env["HP_CT_SMB_PORT"],
        "HP_SEAWEEDFS_S3_ENDPOINT": s3,
        "HP_SEAWEEDFS_MASTER_URL": f"http://127.0.0.1:{env['HP_CT_SW_MASTER_PORT']}",
        "HP_OBJECT_STORE_ENDPOINT": s3,
        "HP_PG_HOST": "127.0.0.1", "HP_PG_PORT": env["HP_CT_PG_PORT"], "HP_PG_USER": "postgres",
        "HP_AI_PG_HOST": "127.0.0.1", "HP_AI_PG_PORT": env["HP_CT_PG_PORT"],
        "HP_AI_PG_USER": "postgres",
        "HP_JUICEFS_REQUIRE_MOUNT": "false",
        # As the compose stack's (lib.sh): false on vfs storage only.
        "HP_SQLITE_CATALOG_REQUIRE_MOUNT": env.get("HP_CT_CATALOG_REQUIRE_MOUNT", "true"),
        "HP_JUICEFS_META_URL": "",
        "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{env['HP_CT_FIRESTORE_PORT']}",
        "HP_FIRESTORE_PROJECT": "demo-hybrid",
        "HP_EXECUTOR": "default",
    }


def configmap(env: dict[str, str]) -> dict:
    cm = next(d for f, d in manifests() if f == "configmap.yaml" and d["kind"] == "ConfigMap")
    data = {**cm["data"], **site_env(env)}
    data.pop("GOOGLE_APPLICATION_CREDENTIALS", None)  # the emulator instead of a key file
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm["metadata"]["name"], "labels": cm["metadata"]["labels"]},
            "data": {k: str(v) for k, v in data.items()}}


def secrets(secrets_env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Secret name -> its keys (those of deploy/secrets/<file>.env.example) and values."""
    out = {}
    for name, example in (("hp-nas-credentials", "nas.env.example"),
                          ("hp-backend-credentials", "backend.env.example")):
        keys = env_file(SECRETS / example)
        missing = [k for k in keys if k not in secrets_env]
        if missing:
            raise SystemExit(f"kube.py: the secrets file lacks {missing} for Secret {name}")
        out[name] = {k: secrets_env[k] for k in keys}
    return out


def create_podman_secrets(values: dict[str, dict[str, str]]) -> None:
    for name, data in values.items():
        payload = json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()})
        subprocess.run(["podman", "secret", "rm", name], capture_output=True)
        subprocess.run(["podman", "secret", "create", name, "-"], input=payload.encode(),
                       check=True, capture_output=True)


def user_deployment(env: dict[str, str]) -> tuple[dict, list[dict]]:
    """The Helm chart's user-code Deployment for this host, and the PVCs it claims."""
    values = yaml.safe_load((HELM / "values.yaml").read_text())
    spec = values["dagster-user-deployments"]["deployments"][0]
    port = env["HP_CT_KUBE_CODE_PORT"]
    volumes = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    claimed = {v["name"] for v in volumes}
    mounts = [m for m in spec["volumeMounts"] if m["name"] in claimed]
    container = {
        "name": "user-code",
        "image": env["HYBRID_PIPELINES_IMAGE"],
        # What the chart runs: `dagster code-server start -h 0.0.0.0 -p <port> <codeServerArgs>`;
        # here on the host's loopback.
        "args": ["dagster", "code-server", "start", "-h", "127.0.0.1", "-p", port,
                 *spec["codeServerArgs"]],
        "env": [{"name": "DAGSTER_GRPC_PORT", "value": port},
                {"name": "DAGSTER_CURRENT_IMAGE", "value": env["HYBRID_PIPELINES_IMAGE"]}],
        "envFrom": [{"configMapRef": {"name": c["name"]}} for c in spec["envConfigMaps"]]
        + [{"secretRef": {"name": s["name"]}} for s in spec["envSecrets"]],
        "volumeMounts": mounts,
        "securityContext": spec["securityContext"],
    }
    sec = spec["podSecurityContext"]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT_NAME, "labels": spec["labels"]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": DEPLOYMENT_NAME}},
            "template": {
                "metadata": {"labels": {**spec["labels"], "app": DEPLOYMENT_NAME}},
                "spec": {"hostNetwork": True,
                         "securityContext": {k: sec[k] for k in ("runAsUser", "runAsGroup")},
                         "containers": [container], "volumes": volumes},
            },
        },
    }
    pvcs = [d for _, d in manifests() if d["kind"] == "PersistentVolumeClaim"
            and d["metadata"]["name"] in {v["persistentVolumeClaim"]["claimName"]
                                          for v in volumes}]
    # The JuiceFS CSI claims name a StorageClass podman has not: a plain local volume here.
    pvcs = [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": p["metadata"]["name"]},
             "spec": {"accessModes": p["spec"]["accessModes"],
                      "resources": p["spec"]["resources"]}} for p in pvcs]
    missing = {v["persistentVolumeClaim"]["claimName"] for v in volumes} - \
        {p["metadata"]["name"] for p in pvcs}
    if missing:
        raise SystemExit(f"kube.py: the Helm values claim {sorted(missing)}, not in deploy/k8s")
    return deployment, pvcs


def render(out: Path) -> None:
    env = dict(os.environ)
    secrets_env = env_file(Path(env["HP_CT_ENV_FILE"]))
    secrets_env.update({"HP_PG_PASSWORD": secrets_env["POSTGRES_PASSWORD"],
                        "META_PASSWORD": secrets_env["POSTGRES_PASSWORD"],
                        "HP_OBJECT_STORE_ACCESS_KEY": secrets_env["HP_SEAWEEDFS_ACCESS_KEY"],
                        "HP_OBJECT_STORE_SECRET_KEY": secrets_env["HP_SEAWEEDFS_SECRET_KEY"]})
    create_podman_secrets(secrets(secrets_env))
    deployment, pvcs = user_deployment(env)
    # A claim outlives its pods, as in a cluster: podman 4.3 refuses to play a PVC whose
    # volume exists (from an earlier play), and the Deployment mounts that volume by name.
    pvcs = [p for p in pvcs if subprocess.run(
        ["podman", "volume", "exists", p["metadata"]["name"]], capture_output=True).returncode]
    docs = [configmap(env), *pvcs, deployment]
    assert {d["kind"] for d in docs} <= PODMAN_KINDS
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))


if __name__ == "__main__":
    if sys.argv[1:2] == ["render"] and len(sys.argv) == 3:
        render(Path(sys.argv[2]))
    elif sys.argv[1:] == ["kinds"]:
        for kind, objs in sorted(kinds().items()):
            where = "podman kube play" if kind in PODMAN_KINDS else "not run by podman"
            print(f"{kind:<24} {where:<18} {', '.join(objs)}")
    else:
        raise SystemExit(__doc__)

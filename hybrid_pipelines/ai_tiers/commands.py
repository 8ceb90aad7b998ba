"""`hybrid-pipelines ai-tiers ...`: file requests for the sensors and show tier sizes.

  ai-tiers status                          models / contexts / outputs per tier
  ai-tiers promote MODEL_ID                queue a promotion (model_promotion_requests); a
                                           model only in the cold bucket is restored and
                                           registered
  ai-tiers reactivate USER_ID CONV_ID      queue a reactivation (context_reactivation_requests)
  ai-tiers delete-outputs USER_ID [--output-id UUID]   queue a deletion (output_deletion_requests)

PostgreSQL is the AI platform's database, the jobs' `ai_postgres` resource, built by the same
code from the same variables (resources/build.py: POSTGRES_* or HP_AI_PG_*,
HP_RESOURCES_MODE included)."""

from __future__ import annotations

import argparse
import os

from hybrid_pipelines.resources import PostgresResource
from hybrid_pipelines.resources.build import build_resources
from hybrid_pipelines.sql import SCHEMA_RESOURCE

SCHEMA = "ai_tiers"


def _postgres() -> PostgresResource:
    key = SCHEMA_RESOURCE[SCHEMA]
    return build_resources(os.environ, only=(key,))[key]


def _insert(sql: str, params: tuple[object, ...]) -> int:
    pg = _postgres()
    pg.require_healthy()
    pg.apply_schema(SCHEMA)
    with pg.connect() as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def _promote(args: argparse.Namespace) -> int:
    rid = _insert("INSERT INTO model_promotion_requests (model_id) VALUES (%s) RETURNING id",
                  (args.model_id,))
    print(f"promotion request {rid} queued for model {args.model_id}")
    return 0


def _reactivate(args: argparse.Namespace) -> int:
    rid = _insert("INSERT INTO context_reactivation_requests (user_id, conversation_id) "
                  "VALUES (%s, %s) RETURNING id", (args.user_id, args.conversation_id))
    print(f"reactivation request {rid} queued for {args.user_id}/{args.conversation_id}")
    return 0


def _delete_outputs(args: argparse.Namespace) -> int:
    rid = _insert("INSERT INTO output_deletion_requests (user_id, output_id) "
                  "VALUES (%s, %s) RETURNING id", (args.user_id, args.output_id))
    what = f"output {args.output_id}" if args.output_id else "every output"
    print(f"deletion request {rid} queued for {what} of user {args.user_id}")
    return 0


def _status(_args: argparse.Namespace) -> int:
    from hybrid_pipelines.ai_tiers import contexts, models, outputs

    pg = _postgres()
    pg.require_healthy()
    pg.apply_schema(SCHEMA)
    with pg.connect() as conn:
        rows = {**models.tier_sizes(conn), **contexts.context_sizes(conn),
                **outputs.output_sizes(conn)}
        pending = conn.execute(
            "SELECT (SELECT count(*) FROM model_promotion_requests WHERE status = 'pending'), "
            "(SELECT count(*) FROM context_reactivation_requests WHERE status = 'pending'), "
            "(SELECT count(*) FROM output_deletion_requests WHERE status = 'pending')"
        ).fetchone()
    assert pending is not None
    rows |= {"pending_promotions": pending[0], "pending_reactivations": pending[1],
             "pending_output_deletions": pending[2]}
    for key, value in rows.items():
        print(f"{key:<28} {value:>16,}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ai-tiers", help="AI storage tiers: status and on-demand requests")
    acts = p.add_subparsers(dest="ai_action", required=True)
    acts.add_parser("status", help="models, contexts and outputs per tier").set_defaults(
        func=_status)
    pr = acts.add_parser("promote", help="queue a model promotion to the hot tier")
    pr.add_argument("model_id")
    pr.set_defaults(func=_promote)
    re_ = acts.add_parser("reactivate", help="queue an archived conversation's reactivation")
    re_.add_argument("user_id")
    re_.add_argument("conversation_id")
    re_.set_defaults(func=_reactivate)
    de = acts.add_parser("delete-outputs", help="queue a user's output deletion (all tiers)")
    de.add_argument("user_id")
    de.add_argument("--output-id", default=None, help="one output (UUID); default: all")
    de.set_defaults(func=_delete_outputs)

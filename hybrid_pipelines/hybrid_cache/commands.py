"""`hybrid-pipelines simulate-uploads N`: feed the hybrid cache the way the file server does."""

from __future__ import annotations

import argparse
from pathlib import Path

from hybrid_pipelines.resources.build import build_resources
from hybrid_pipelines.shared.env import connection_env


def _simulate(args: argparse.Namespace) -> int:
    from hybrid_pipelines.hybrid_cache.runtime import prepare
    from hybrid_pipelines.hybrid_cache.uploads import MIB, simulate_uploads

    if args.count < 0:
        raise RuntimeError(f"N must be 0 or more, got {args.count}")
    env = connection_env(Path(args.env_file) if args.env_file else None)
    res = build_resources(env, only=("postgres", "seaweedfs", "nas"))
    pg, nas = res["postgres"], res["nas"]
    # Two attempts, not boto3's default: a dead gateway is reported quickly, then the
    # uploads go to the NAS.
    sw = res["seaweedfs"].model_copy(update={"max_attempts": 2})
    pg.require_healthy()
    prepare(pg)
    health = sw.health()
    nas_fs = None
    if not health.ok:
        print(f"SeaweedFS is down ({health.detail}): uploads go straight to the NAS and are "
              "flagged for re-cache, as the file server does")
        nas.require_healthy()
        nas_fs = nas.fs()
    with pg.connect(autocommit=True) as conn:
        report = simulate_uploads(conn, sw.get_client(), sw.bucket, args.count, nas=nas_fs,
                                  seaweed_up=health.ok, seed=args.seed,
                                  max_size=int(args.max_size_mb * MIB),
                                  key_prefix=args.key_prefix, nas_prefix=args.nas_prefix)
    print(f"{args.count} uploads ({report.bytes / MIB:.1f} MiB): {report.cached} to SeaweedFS "
          f"({sw.bucket}), {report.to_nas} straight to the NAS; rows in file_metadata on "
          f"{pg.address}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser(
        "simulate-uploads",
        help="write N files of mixed sizes to SeaweedFS and file_metadata, like the file server",
        description="Connection details come from HP_* environment variables, else from the "
                    "local stack's stack.env ($HP_STACK_DIR or .local), turned into "
                    "resources as Dagster does (HP_RESOURCES_MODE: local or deployed).")
    sim.add_argument("count", type=int, metavar="N", help="number of uploads")
    sim.add_argument("--seed", type=int, default=None,
                     help="random seed for sizes and contents (default: random)")
    sim.add_argument("--max-size-mb", type=float, default=16.0,
                     help="largest file in MiB (default 16)")
    sim.add_argument("--key-prefix", default="uploads/", help="object key prefix")
    sim.add_argument("--nas-prefix", default="uploads", help="NAS folder for the copies")
    sim.add_argument("--env-file", help="env file to read (default: $HP_STACK_DIR/stack.env)")
    sim.set_defaults(func=_simulate)

"""Quiet when idle (issue #17): the EFS mirror is requested by a sensor only when the bucket
and the mirror differ, against SeaweedFS (bucket `models`), PostgreSQL and a directory as the
EFS mount, with a real (temporary) Dagster instance."""

from __future__ import annotations

import json
import os

import dagster as dg
from dagster._core.utils import make_new_run_id

from hybrid_pipelines.ai_tiers import efs_sync
from hybrid_pipelines.defs.ai_tiers.efs_sensor import efs_model_sync_sensor
from hybrid_pipelines.defs.run_keys import RUN_KEY_TAG
from hybrid_pipelines.resources import EFSResource, ObjectStoreResource, PostgresResource

from .conftest import NOW
from .test_efs_sync import BUCKET, Source, source  # noqa: F401 - the fixture


def _tick(instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, resources=resources,
                                 cursor=cursor) as ctx:
        return efs_model_sync_sensor(ctx), ctx.cursor


def test_efs_sensor_requests_only_when_the_mirror_differs(
        ai_pg: PostgresResource, object_store_resource: ObjectStoreResource,
        efs_resource: EFSResource, source: Source) -> None:  # noqa: F811
    resources = {"ai_postgres": ai_pg, "object_store": object_store_resource,
                 "efs": efs_resource}
    source.put("sd15/model.safetensors", os.urandom(4_000))
    with dg.instance_for_test() as instance:
        first, cursor = _tick(instance, resources)
        assert isinstance(first, dg.RunRequest) and first.run_key.startswith("efs:")
        with ai_pg.connect(autocommit=True) as conn:  # the run the request stands for
            report = efs_sync.sync_to_efs(conn, object_store_resource.get_client(), BUCKET,
                                          efs_resource.path("models"), [""], NOW)
        assert not report.errors and report.downloaded >= 1
        idle, cursor = _tick(instance, resources, cursor)
        assert isinstance(idle, dg.SkipReason) and "up to date" in idle.skip_message
        # A changed object and a file removed from the mount: work again, one stable key.
        source.put("sd15/model.safetensors", os.urandom(4_000))
        (efs_resource.path("models") / source.prefix / "sd15/model.safetensors").unlink()
        work, cursor = _tick(instance, resources, cursor)
        again, cursor = _tick(instance, resources, cursor)
        assert isinstance(work, dg.RunRequest) and again.run_key == work.run_key
        assert work.run_key.startswith("efs:1-")
        # The run for this work failed: the same work is retried after an hour, not each tick.
        instance.add_run(dg.DagsterRun(job_name="efs_model_sync_job",
                                       run_id=make_new_run_id(),
                                       status=dg.DagsterRunStatus.FAILURE,
                                       tags={RUN_KEY_TAG: work.run_key}))
        held, cursor = _tick(instance, resources, cursor)
        assert isinstance(held, dg.SkipReason) and "retried 1 h" in held.skip_message
        assert json.loads(cursor)["key"] == work.run_key
        assert instance.get_runs(filters=dg.RunsFilter(job_name="efs_model_sync_job"))[0] \
            .status == dg.DagsterRunStatus.FAILURE

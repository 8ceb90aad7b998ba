"""S3-compatible object stores: AWS S3, MinIO and the SeaweedFS S3 gateway are one code path,
configured by endpoint. Built on dagster-aws's S3Resource: every field it defines is honoured
(profile_name, use_unsigned_session, region_name, use_ssl, verify, max_attempts, the keys and
the session token); path-style addressing, timeouts and checksum settings are added for MinIO
and SeaweedFS.

The resource owns its boto3 client: made in setup_for_execution (or on first use outside
Dagster), shared by every call of the run (boto3 clients are thread-safe), closed in
teardown_after_execution."""

from __future__ import annotations

from typing import Any

import requests
from dagster import InitResourceContext
from dagster_aws.s3 import S3Resource
from dagster_aws.utils import construct_boto_client_retry_config
from pydantic import Field, PrivateAttr

from hybrid_pipelines.resources.errors import Health, probe_health, require
from hybrid_pipelines.resources.owned import Owned, OwnsHandles

OBJECT_STORE_ENV = ("HP_OBJECT_STORE_ENDPOINT", "HP_OBJECT_STORE_ACCESS_KEY",
                    "HP_OBJECT_STORE_SECRET_KEY", "HP_OBJECT_STORE_BUCKET",
                    "HP_OBJECT_STORE_OUTPUTS_BUCKET")
# Each also answers to the platform's name (SEAWEED_S3_ENDPOINT, ...: shared/platform_env.py).
SEAWEEDFS_ENV = ("HP_SEAWEEDFS_S3_ENDPOINT", "HP_SEAWEEDFS_MASTER_URL",
                 "HP_SEAWEEDFS_ACCESS_KEY", "HP_SEAWEEDFS_SECRET_KEY", "HP_SEAWEEDFS_BUCKET",
                 "HP_SEAWEEDFS_TIMEOUT_MS")


def explain_s3_error(exc: BaseException) -> str:
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        ProfileNotFound,
    )

    if isinstance(exc, EndpointConnectionError):
        return "cannot connect: the S3 endpoint is down or the address is wrong"
    if isinstance(exc, NoCredentialsError):
        return "no credentials configured"
    if isinstance(exc, ProfileNotFound):
        return f"AWS profile not found: {exc}"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return f"credentials rejected ({code}): wrong access key or secret key"
        if code in ("NoSuchBucket", "404"):
            return "the bucket does not exist"
        return f"S3 error {code}"
    if isinstance(exc, requests.RequestException):
        return "cannot connect: the server is down or the address is wrong"
    return f"{type(exc).__name__}: {exc}"


def _or_none(value: str | None) -> str | None:
    """An empty setting means "not set": boto3 then uses its own credential chain
    (instance role, AWS_* variables, profile) instead of empty keys."""
    return value or None


def registered_volume_servers(master_url: str, timeout: float) -> int:
    """How many volume servers a SeaweedFS master has registered. After a (re)start the master
    and the S3 gateway answer seconds before the first one registers, and reads fail with
    HTTP 500 until it does."""
    r = requests.get(f"{master_url}/dir/status", timeout=timeout)
    r.raise_for_status()
    topology = r.json().get("Topology", {})
    return sum(len(rack.get("DataNodes") or [])
               for dc in topology.get("DataCenters") or []
               for rack in dc.get("Racks") or [])


class ObjectStoreResource(OwnsHandles, S3Resource):
    """The cold tier (MinIO or AWS S3). Set `endpoint_url` for MinIO/SeaweedFS; leave it empty
    for AWS. As the AI platform's design has them, cold models and generated outputs live in
    buckets of their own: `bucket` (cold models, `cold-models`) and `outputs_bucket`
    (generated outputs, `generated-outputs`)."""

    bucket: str = Field(default="cold-models", description="Bucket holding the cold models.")
    outputs_bucket: str = Field(default="generated-outputs",
                                description="Bucket holding the generated outputs.")
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    region_name: str | None = "us-east-1"

    _client: Owned[Any] = PrivateAttr(default_factory=Owned)

    @property
    def env_vars(self) -> tuple[str, ...]:
        return OBJECT_STORE_ENV

    @property
    def backend_name(self) -> str:
        return "Object store (S3/MinIO)"

    @property
    def address(self) -> str:
        return f"{self.endpoint_url or 'https://s3.amazonaws.com'}/{self.bucket}"

    # ---- the client: owned by the resource ---------------------------------------------

    def new_client(self) -> Any:
        """A new boto3 S3 client from every field of this resource (S3Resource's and ours).
        Prefer get_client(), which returns the client this resource owns."""
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        session = boto3.session.Session(profile_name=self.profile_name or None)
        config = construct_boto_client_retry_config(self.max_attempts).merge(Config(
            s3={"addressing_style": "path"}, connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            # SeaweedFS and older MinIO reject the new default CRC checksums on some calls.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required"))
        if self.use_unsigned_session:
            config = config.merge(Config(signature_version=UNSIGNED))
        return session.client(
            "s3", region_name=self.region_name, endpoint_url=self.endpoint_url or None,
            use_ssl=self.use_ssl, verify=self.verify,
            aws_access_key_id=_or_none(self.aws_access_key_id),
            aws_secret_access_key=_or_none(self.aws_secret_access_key),
            aws_session_token=_or_none(self.aws_session_token), config=config)

    def get_client(self) -> Any:
        """The S3 client this resource owns (one per run; made on first use outside Dagster)."""
        return self._client.get(self.new_client)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._client.set(self.new_client())

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        client = self._client.take()
        if client is not None:
            client.close()

    # ---- health ----------------------------------------------------------------------------

    def _check(self) -> str:
        self.get_client().head_bucket(Bucket=self.bucket)
        return "bucket reachable"

    def health(self) -> Health:
        return probe_health(self.backend_name, self.address, self._check, explain_s3_error)

    def require_healthy(self) -> None:
        require(self.health(), self.env_vars)


class SeaweedFSResource(ObjectStoreResource):
    """The fast cache: SeaweedFS's S3 gateway, plus its master for cluster health.

    health() is the one definition of "SeaweedFS healthy", used by backend_health and by the
    hybrid cache's circuit breakers alike: when `master_url` is set, the master answers
    /cluster/healthz and has at least one volume server registered; and the S3 gateway
    answers HEAD on the bucket with our credentials. (After a restart the gateway and the
    master answer seconds before the volume servers re-register, and reads fail with HTTP
    500 until they do.)"""

    bucket: str = "media-cache"
    master_url: str = ""

    @property
    def env_vars(self) -> tuple[str, ...]:
        return SEAWEEDFS_ENV

    @property
    def backend_name(self) -> str:
        return "SeaweedFS"

    def _check_master(self) -> str:
        timeout = self.connect_timeout_s
        r = requests.get(f"{self.master_url}/cluster/healthz", timeout=timeout)
        if not r.ok:
            raise RuntimeError(f"master {self.master_url} unhealthy (HTTP {r.status_code})")
        nodes = registered_volume_servers(self.master_url, timeout)
        if nodes == 0:
            raise RuntimeError("the master answers but no volume server is registered yet")
        return f"master ok, {nodes} volume server(s); "

    def _check(self) -> str:
        detail = self._check_master() if self.master_url else ""
        return detail + super()._check()

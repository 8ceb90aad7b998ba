"""S3-compatible object stores: AWS S3, MinIO and the SeaweedFS S3 gateway are one code path,
configured by endpoint (built on dagster-aws's S3Resource)."""

from __future__ import annotations

from typing import Any

import requests
from dagster_aws.s3 import S3Resource
from pydantic import Field

from hybrid_pipelines.resources.errors import Health, probe_health, require

OBJECT_STORE_ENV = ("HP_OBJECT_STORE_ENDPOINT", "HP_OBJECT_STORE_ACCESS_KEY",
                    "HP_OBJECT_STORE_SECRET_KEY", "HP_OBJECT_STORE_BUCKET")
SEAWEEDFS_ENV = ("HP_SEAWEEDFS_S3_ENDPOINT", "HP_SEAWEEDFS_MASTER_URL",
                 "HP_SEAWEEDFS_ACCESS_KEY", "HP_SEAWEEDFS_SECRET_KEY", "HP_SEAWEEDFS_BUCKET")


def explain_s3_error(exc: BaseException) -> str:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, EndpointConnectionError):
        return "cannot connect: the S3 endpoint is down or the address is wrong"
    if isinstance(exc, NoCredentialsError):
        return "no credentials configured"
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


class ObjectStoreResource(S3Resource):
    """The cold tier (MinIO or AWS S3). Set `endpoint_url` for MinIO/SeaweedFS; leave it empty
    for AWS. `bucket` is the bucket this deployment owns."""

    bucket: str = Field(default="cold-tier", description="Bucket holding this tier's objects.")
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    region_name: str | None = "us-east-1"

    @property
    def env_vars(self) -> tuple[str, ...]:
        return OBJECT_STORE_ENV

    @property
    def backend_name(self) -> str:
        return "Object store (S3/MinIO)"

    @property
    def address(self) -> str:
        return f"{self.endpoint_url or 'https://s3.amazonaws.com'}/{self.bucket}"

    def get_client(self) -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token, region_name=self.region_name)
        config = Config(
            s3={"addressing_style": "path"}, connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            # SeaweedFS and older MinIO reject the new default CRC checksums on some calls.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required")
        return session.client("s3", endpoint_url=self.endpoint_url or None, config=config,
                              use_ssl=self.use_ssl, verify=self.verify)

    def _check(self) -> str:
        self.get_client().head_bucket(Bucket=self.bucket)
        return "bucket reachable"

    def health(self) -> Health:
        return probe_health(self.backend_name, self.address, self._check, explain_s3_error)

    def require_healthy(self) -> None:
        require(self.health(), self.env_vars)


class SeaweedFSResource(ObjectStoreResource):
    """The fast cache: SeaweedFS's S3 gateway, plus its master for cluster health."""

    bucket: str = "media-cache"
    master_url: str = ""

    @property
    def env_vars(self) -> tuple[str, ...]:
        return SEAWEEDFS_ENV

    @property
    def backend_name(self) -> str:
        return "SeaweedFS"

    def _check(self) -> str:
        if self.master_url:
            r = requests.get(f"{self.master_url}/cluster/healthz", timeout=self.connect_timeout_s)
            if not r.ok:
                raise RuntimeError(f"master {self.master_url} unhealthy (HTTP {r.status_code})")
        return super()._check()

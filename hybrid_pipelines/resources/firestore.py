"""Firestore (or its official emulator when `emulator_host` is set)."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from hybrid_pipelines.resources.errors import Health, probe_health, require

ENV_VARS = ("HP_FIRESTORE_PROJECT", "FIRESTORE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")


def explain_firestore_error(exc: BaseException) -> str:
    text = str(exc)
    if "failed to connect" in text.lower() or "unavailable" in text.lower() \
            or "Deadline" in text or "timed out" in text.lower():
        return "cannot connect: Firestore (or its emulator) is down or the address is wrong"
    if "PermissionDenied" in type(exc).__name__ or "403" in text:
        return "permission denied: the credentials cannot access this project"
    if "DefaultCredentialsError" in type(exc).__name__:
        return "no Google credentials (set GOOGLE_APPLICATION_CREDENTIALS, or the emulator host)"
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class FirestoreResource(dg.ConfigurableResource):
    project: str = "demo-hybrid"
    emulator_host: str = ""
    database: str = "(default)"
    timeout_s: float = 10.0

    @property
    def address(self) -> str:
        where = self.emulator_host or "firestore.googleapis.com"
        return f"firestore://{where}/{self.project}"

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        if self.emulator_host:
            # The client library reads the emulator address from the environment only.
            os.environ["FIRESTORE_EMULATOR_HOST"] = self.emulator_host
            return firestore.Client(project=self.project, database=self.database,
                                    credentials=AnonymousCredentials())
        return firestore.Client(project=self.project, database=self.database)

    def health(self) -> Health:
        def check() -> str:
            from google.api_core.retry import Retry

            coll = self.client().collection("_sync_metadata")
            list(coll.limit(1).stream(timeout=self.timeout_s,
                                      retry=Retry(timeout=self.timeout_s, initial=0.2)))
            return "query ok"

        return probe_health("Firestore", self.address, check, explain_firestore_error)

    def require_healthy(self) -> None:
        require(self.health(), ENV_VARS)

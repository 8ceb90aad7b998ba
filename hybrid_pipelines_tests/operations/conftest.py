"""Real receivers for the alert tests: an SMTP server (aiosmtpd) that requires STARTTLS (a
self-signed certificate made here) and AUTH, and an HTTP receiver (http.server in a thread),
each on a free 127.0.0.1 port; plus this domain's own PostgreSQL database."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.dev.stack.process import LOOPBACK, free_port
from hybrid_pipelines.hybrid_cache.runtime import prepare
from hybrid_pipelines.resources import PostgresResource
from hybrid_pipelines.resources.alerting import AlertingResource
from hybrid_pipelines_tests.conftest import postgres_resource_for

SMTP_USER = "alerts"


# ---- HTTP receiver ------------------------------------------------------------------------
@dataclass
class Receiver:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200  # what it answers (a test sets 500 to play a broken webhook)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def bodies(self) -> list[Any]:
        return [r["json"] for r in self.requests]

    def start(self) -> None:
        """Listen (again) on the same port: the webhook's URL stays the same."""
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rec.requests.append({"path": self.path, "json": json.loads(raw or b"null"),
                                     "content_type": self.headers.get("Content-Type")})
                self.send_response(rec.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((LOOPBACK, self.port or free_port()), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}/services/T000/B000/s3cr3tT0ken"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture()
def http_receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.start()
    yield rec
    rec.stop()


# ---- SMTP server ----------------------------------------------------------------------------
def _self_signed(dirpath: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dirpath / "smtp.crt", dirpath / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Mailbox:
    host: str
    port: int
    password: str
    ca_file: str
    mails: list[dict[str, Any]] = field(default_factory=list)

    def messages(self) -> list[EmailMessage]:
        return [m["message"] for m in self.mails]


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    """aiosmtpd requiring STARTTLS before anything and AUTH (LOGIN/PLAIN) before MAIL."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = _self_signed(tmp_path_factory.mktemp("smtp"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    box = Mailbox(LOOPBACK, free_port(), secrets.token_hex(8), str(cert))

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == box.password.encode()
        return AuthResult(success=ok, handled=False)

    class Handler:
        async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
            box.mails.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "authenticated": bool(session.authenticated),
                              "tls": session.ssl is not None,
                              "message": message_from_bytes(envelope.content)})
            return "250 OK"

    controller = Controller(Handler(), hostname=LOOPBACK, port=box.port, tls_context=ctx,
                            require_starttls=True, auth_required=True,
                            authenticator=authenticator, server_hostname="localhost")
    controller.start()
    yield box
    controller.stop()


@pytest.fixture()
def mailbox(smtp_server: Mailbox) -> Mailbox:
    smtp_server.mails.clear()
    return smtp_server


def alerting_for(receiver: Receiver | None = None, box: Mailbox | None = None,
                 **extra: Any) -> AlertingResource:
    cfg: dict[str, Any] = {}
    if receiver is not None:
        cfg["webhook_urls"] = receiver.url
    if box is not None:
        cfg |= dict(smtp_host=box.host, smtp_port=box.port, smtp_tls="starttls",
                    smtp_user=SMTP_USER, smtp_password=box.password,
                    smtp_from="dagster@example.test", smtp_to="ops@example.test",
                    smtp_ca_file=box.ca_file, timeout_s=5)
    return AlertingResource(**(cfg | extra))


# ---- PostgreSQL -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ops_postgres(pg_server: Any) -> PostgresResource:
    """Our own database with the hybrid cache's tables as its jobs create them (the alert
    sensor only reads backend_circuit)."""
    name = f"ops_{secrets.token_hex(4)}"
    admin = postgres_resource_for(pg_server, database="postgres")
    with admin.connect(autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
    res = postgres_resource_for(pg_server, database=name)
    prepare(res)
    return res


@pytest.fixture()
def ops_conn(ops_postgres: PostgresResource):
    with ops_postgres.connect(autocommit=True) as c:
        c.execute("TRUNCATE backend_circuit")
        yield c

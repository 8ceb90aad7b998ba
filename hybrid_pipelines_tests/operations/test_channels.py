"""Deliveries reach real receivers: a webhook (Slack body and generic JSON) and an SMTP server
that requires STARTTLS and AUTH. Failures name the channel and the fix, never a secret."""

from __future__ import annotations

import time

import pytest

from hybrid_pipelines.operations.channels import DeliveryError
from hybrid_pipelines.operations.dispatch import dispatch
from hybrid_pipelines.operations.rules.incidents import OPENED, Notification
from hybrid_pipelines.operations.rules.messages import incident_message
from hybrid_pipelines.resources.alerting import alerting_from_env
from hybrid_pipelines_tests.operations.conftest import SMTP_USER, alerting_for

NOW = time.time()
NOTE = Notification(OPENED, "cache.usage", "warning", "Cache nearly full",
                    "cache usage 93.0% (alarm above 90%)", NOW, NOW)


def test_slack_webhook_receives_text(http_receiver) -> None:
    res = alerting_for(http_receiver)
    [channel] = res.channels()
    assert "s3cr3tT0ken" not in channel  # the webhook's token is its path: never shown
    res.send(channel, incident_message(NOTE))
    [req] = http_receiver.requests
    assert req["content_type"] == "application/json"
    assert req["path"].endswith("/s3cr3tT0ken")
    assert set(req["json"]) == {"text"}
    assert "ALERT [WARNING] Cache nearly full: cache usage 93.0%" in req["json"]["text"]


def test_generic_json_webhook_receives_fields(http_receiver) -> None:
    res = alerting_for(webhook_urls=f"json={http_receiver.url}")
    res.send(res.channels()[0], incident_message(NOTE))
    body = http_receiver.bodies()[0]
    assert body["source"] == "hybrid-pipelines" and body["kind"] == "incident"
    assert body["severity"] == "warning"
    [item] = body["items"]
    assert item["key"] == "cache.usage" and item["kind"] == OPENED


def test_webhook_error_names_channel_not_token(http_receiver) -> None:
    http_receiver.status = 500
    res = alerting_for(http_receiver)
    with pytest.raises(DeliveryError) as err:
        res.send(res.channels()[0], incident_message(NOTE))
    assert "HTTP 500" in str(err.value) and "HP_ALERT_WEBHOOK_URLS" in str(err.value)
    assert "s3cr3tT0ken" not in str(err.value)


def test_email_over_starttls_with_auth(mailbox) -> None:
    res = alerting_for(box=mailbox)
    [channel] = res.channels()
    res.send(channel, incident_message(NOTE))
    [mail] = mailbox.mails
    assert mail["tls"] and mail["authenticated"]
    assert mail["to"] == ["ops@example.test"] and mail["from"] == "dagster@example.test"
    msg = mail["message"]
    assert msg["Subject"] == "[hybrid-pipelines] ALERT [WARNING] Cache nearly full"
    assert msg["X-Alert-Severity"] == "warning"
    assert "cache usage 93.0% (alarm above 90%)" in msg.get_payload()


def test_email_wrong_password_is_named_without_the_password(mailbox) -> None:
    res = alerting_for(box=mailbox, smtp_password="not-the-password")
    with pytest.raises(DeliveryError) as err:
        res.send(res.channels()[0], incident_message(NOTE))
    text = str(err.value)
    assert "HP_ALERT_SMTP_PASSWORD" in text and SMTP_USER in text
    assert "not-the-password" not in text and mailbox.password not in text
    assert not mailbox.mails


def test_email_untrusted_certificate_names_the_ca_setting(mailbox) -> None:
    res = alerting_for(box=mailbox, smtp_ca_file="")
    with pytest.raises(DeliveryError, match="HP_ALERT_SMTP_CA_FILE"):
        res.send(res.channels()[0], incident_message(NOTE))


def test_a_failed_channel_keeps_the_message_in_the_outbox(http_receiver, mailbox) -> None:
    """The webhook answers 500: the e-mail still goes; the webhook gets it on the next try,
    and the e-mail is not sent twice."""
    http_receiver.status = 500
    res = alerting_for(http_receiver, mailbox)
    first = dispatch(res.send, res.channels(), [incident_message(NOTE)], [], NOW)
    assert len(first.delivered) == 1 and len(first.outbox) == 1 and len(mailbox.mails) == 1
    http_receiver.status = 200
    second = dispatch(res.send, res.channels(), [], first.outbox, NOW + 60)
    assert second.outbox == [] and len(second.delivered) == 1
    assert len(mailbox.mails) == 1
    assert [r["json"]["text"] for r in http_receiver.requests][-1].startswith("ALERT")


def test_resource_from_env_defers_secrets() -> None:
    env = {"HP_ALERT_WEBHOOK_URLS": "https://hooks.example/T/B/tok json=https://x.example/h",
           "HP_ALERT_SMTP_HOST": "mail.example", "HP_ALERT_SMTP_PASSWORD": "pw",
           "HP_ALERT_SMTP_TO": "a@x, b@x", "HP_DAGSTER_UI_URL": "https://dagster.example"}
    res = alerting_from_env(env)
    assert [c.split(":")[1] for c in res.channels()] == ["slack", "json", "mail.example"]
    assert res.smtp().recipients == ("a@x", "b@x") and res.smtp_port == 587
    assert "pw" not in repr(res.smtp())
    assert res.ui_url == "https://dagster.example"
    with pytest.raises(ValueError, match="HP_ALERT_SMTP_TLS"):
        alerting_from_env({"HP_ALERT_SMTP_TLS": "tls1"})


def test_a_dead_channel_costs_one_attempt_per_evaluation(http_receiver) -> None:
    http_receiver.status = 500
    res = alerting_for(http_receiver)
    msgs = [incident_message(NOTE)] * 3
    report = dispatch(res.send, res.channels(), msgs, [], NOW)
    assert len(http_receiver.requests) == 1 and len(report.outbox) == 3
    assert [e["tries"] for e in report.outbox] == [1, 0, 0]

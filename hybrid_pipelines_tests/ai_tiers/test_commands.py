"""`hybrid-pipelines ai-tiers ...` against the real PostgreSQL."""

from __future__ import annotations

import pytest

from hybrid_pipelines.cli import main
from hybrid_pipelines.resources import PostgresResource


def test_requests_and_status(ai_pg: PostgresResource, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    # The AI platform's own database, through the jobs' `ai_postgres` settings; the file
    # server's HP_PG_DATABASE names another database, which the commands must not use.
    for key, value in {"HP_PG_HOST": ai_pg.host, "HP_PG_PORT": str(ai_pg.port),
                       "HP_PG_USER": ai_pg.user, "HP_PG_PASSWORD": ai_pg.password,
                       "HP_PG_DATABASE": "hybrid",
                       "HP_AI_PG_DATABASE": ai_pg.database}.items():
        monkeypatch.setenv(key, value)
    assert main(["ai-tiers", "promote", "llama-3"]) == 0
    assert main(["ai-tiers", "reactivate", "u1", "c1"]) == 0
    assert main(["ai-tiers", "delete-outputs", "u1"]) == 0
    assert "promotion request 1 queued for model llama-3" in capsys.readouterr().out
    assert main(["ai-tiers", "status"]) == 0
    out = capsys.readouterr().out
    for line in ("pending_promotions", "pending_reactivations", "pending_output_deletions"):
        assert any(row.split() == [line, "1"] for row in out.splitlines()), out
    with ai_pg.connect() as conn:
        assert conn.execute("SELECT model_id, status FROM model_promotion_requests").fetchall() \
            == [("llama-3", "pending")]

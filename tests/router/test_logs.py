"""Log lines: JSON and text formats, the access line's fields, sampling, and the 503 causes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router.logs import JsonFormatter, TextFormatter
from router.settings import Settings

pytestmark = pytest.mark.anyio


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("router.access", logging.INFO, __file__, 1, "access", (), None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_extra_fields_and_text_lines_show_them() -> None:
    data = json.loads(JsonFormatter().format(_record(request_id="r-1", status=200, cost_usd=0.5)))
    assert data["msg"] == "access" and data["level"] == "INFO" and data["logger"] == "router.access"
    assert (data["request_id"], data["status"], data["cost_usd"]) == ("r-1", 200, 0.5)
    assert data["time"].endswith("Z")
    assert "request_id=r-1 status=200" in TextFormatter().format(_record(request_id="r-1", status=200))


async def test_access_lines_are_sampled_but_errors_always_logged(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = client_for(make_settings(write_policy(), access_log_sample=0.0))
    with caplog.at_level(logging.INFO, logger="router.access"):
        ok = await client.post("/v1/classify", json={"task": "sentiment", "input": "a fine film ."},
                               headers={"x-request-id": "ok-1"})
        bad = await client.post("/v1/classify", json={"task": "nope", "input": "x"}, headers={"x-request-id": "bad-1"})
    assert ok.status_code == 200 and bad.status_code == 404
    lines = [r for r in caplog.records if r.name == "router.access"]
    assert [(r.request_id, r.status, r.error, r.route, r.endpoint) for r in lines] == [  # type: ignore[attr-defined]
        ("bad-1", 404, "model_not_found", "unknown", "/v1/classify")]
    assert not hasattr(lines[0], "detail")  # a 4xx message may quote the caller's input


@pytest.mark.parametrize(("day_budget", "model", "message"), [
    (0.0, "cheap", "the daily foundation budget is spent (0.0000 of 0.0000 USD)"),
    (None, "strong", "no foundation model is configured for alias 'strong'"),
])
async def test_a_503_says_whether_no_model_is_configured_or_the_budget_is_spent(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    day_budget: float | None, model: str, message: str,
) -> None:
    def edit(doc: Any) -> None:
        doc["aliases"]["strong"].pop("model", None)  # uses ROUTER_FOUNDATION__MODEL: unset here
        doc["aliases"]["strong"].pop("api_base", None)
        doc["budgets"]["usd_per_day"] = day_budget

    client = client_for(make_settings(write_policy(edit=edit)))
    r = await client.post("/v1/chat/completions", json={"model": model, "messages": [
        {"role": "user", "content": "write a poem"}]})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == ("budget_spent" if day_budget is not None else "foundation_unavailable")
    assert message in r.json()["error"]["message"]

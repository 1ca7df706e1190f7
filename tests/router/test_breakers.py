"""Breakers count only upstream faults: what callers cause never switches the foundation model off.

Real litellm over HTTP to the loopback upstream. `fake-strict` answers 400 for values a real
provider refuses (temperature over 1, `[[reject]]` in the text, like a content-policy hit) and
echoes the key it was sent in that message, as some providers do; `fake-401` refuses the key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from router.errors import (
    RateLimitedError,
    UpstreamError,
    UpstreamRefusedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from router.escalation import Escalator, InvalidLabelError
from router.policy import AliasSpec
from router.pricing import PriceTable
from router.settings import FoundationSettings, Settings
from tests.fake_upstream import Upstream

pytestmark = pytest.mark.anyio
LABELS = ("negative", "positive")
PRICES = PriceTable.load()
KEY = "sk-operator-secret-0123456789"
HI = [{"role": "user", "content": "hi"}]


def build(upstream: Upstream, outcomes: Counter[tuple[str, str]], **aliases: dict[str, object]) -> Escalator:
    specs = {}
    for name, fields in aliases.items():
        base: dict[str, object] = {"api_base": upstream.api_base, "price_as": "gpt-4o-mini", "timeout_s": 1.0,
                                   "max_retries": 0, "breaker_failures": 2, "breaker_reset_s": 60,
                                   "api_key_env": "ROUTER_PROVIDER_KEY_TEST"}
        base.update(fields)
        specs[name] = AliasSpec.model_validate(base)
    return Escalator(specs, FoundationSettings(), lambda _name: KEY,
                     lambda alias, outcome: outcomes.update([(alias, outcome)]), PRICES)


async def test_caller_caused_4xx_is_returned_and_counts_nowhere(upstream: Upstream) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-strict", "max_retries": 2, "fallbacks": ["b"]},
                b={"model": "openai/fake-ok"})
    for _ in range(10):
        with pytest.raises(UpstreamRejectedError) as info:
            await esc.chat("a", HI, {"temperature": 1.5})
        assert info.value.status == 400 and "temperature" in info.value.message
        assert KEY not in info.value.message and "sk-" not in info.value.message
    assert esc.available("a") and esc.clients["a"].breaker.consecutive == 0
    assert seen[("a", "rejected")] == 10
    # Not retried, not handed to the fallback.
    assert [r["model"] for r in upstream.received] == ["fake-strict"] * 10
    ok = await esc.chat("a", HI, {"temperature": 0.5})
    assert ok.alias == "a"


async def test_rate_limits_back_off_and_fall_back_without_opening_the_breaker(upstream: Upstream) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-429", "fallbacks": ["b"]}, b={"model": "openai/fake-ok"})
    for _ in range(5):
        assert (await esc.chat("a", HI, {})).alias == "b"
    assert seen[("a", "rate_limited")] == 5
    assert esc.clients["a"].breaker.allows() and esc.clients["a"].breaker.consecutive == 0
    alone = build(upstream, Counter(), a={"model": "openai/fake-429"})
    for _ in range(4):
        with pytest.raises(RateLimitedError):
            await alone.chat("a", HI, {})
    assert alone.available("a")


async def test_invalid_labels_never_open_the_breaker(upstream: Upstream) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-badlabel", "fallbacks": ["b"]},
                b={"model": "openai/fake-ok"})
    for _ in range(5):  # default: the fallback alias is asked
        result = await esc.classify("a", LABELS, "so-so [[label:positive]]", None)
        assert (result.alias, result.label) == ("b", "positive")
    assert seen[("a", "invalid_label")] == 5
    assert esc.clients["a"].breaker.consecutive == 0 and esc.available("a")
    upstream.received.clear()
    for _ in range(3):  # by policy: no fallback, the caller degrades
        with pytest.raises(InvalidLabelError):
            await esc.classify("a", LABELS, "so-so", None, fallback_on_invalid=False)
    assert [r["model"] for r in upstream.received] == ["fake-badlabel"] * 3
    assert esc.available("a")


@pytest.mark.parametrize(("model", "error"), [
    ("fake-500", UpstreamError), ("fake-slow", UpstreamTimeoutError), ("fake-401", UpstreamRefusedError)])
async def test_upstream_faults_still_open_the_breaker(upstream: Upstream, model: str, error: type[Exception]) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": f"openai/{model}", "timeout_s": 0.3, "fallbacks": ["b"]},
                b={"model": "openai/fake-ok"})
    for _ in range(2):  # the fallback answers while `a` fails
        assert (await esc.chat("a", HI, {})).alias == "b"
    assert not esc.clients["a"].breaker.allows()
    assert (await esc.chat("a", HI, {})).alias == "b"
    assert seen[("a", "breaker_open")] == 1
    assert [r["model"] for r in upstream.received].count(model) == 2
    lone = build(upstream, Counter(), a={"model": f"openai/{model}", "timeout_s": 0.3})
    with pytest.raises(error) as info:
        await lone.chat("a", HI, {})
    assert KEY not in str(info.value.message)


async def test_a_bug_is_neither_retried_nor_counted(upstream: Upstream) -> None:
    # A call with a keyword outside the allowlist can only come from our own code: refused as a
    # bug (an exception, a logged 500 at the HTTP layer), never sent, never a breaker failure.
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-ok", "max_retries": 3})
    for _ in range(3):
        with pytest.raises(TypeError):
            await esc.chat("a", HI, {"api_base": "http://127.0.0.1:9/v1"})
    assert upstream.received == [] and esc.clients["a"].breaker.consecutive == 0
    assert sum(seen.values()) == 0


# ---- through the HTTP API ------------------------------------------------------------------
def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _strict_policy(doc: Any) -> None:
    doc["routes"]["sentiment"]["min_confidence"] = 1.0
    doc["routes"]["support"]["min_confidence"] = 1.0
    for alias in doc["aliases"].values():
        alias["breaker_failures"] = 2
        alias["max_retries"] = 1


@pytest.mark.redis
async def test_twenty_malformed_requests_then_a_legitimate_one_is_answered_by_the_foundation(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(models={"cheap": "fake-strict", "strong": "fake-strict"},
                                                   edit=_strict_policy)))
    msg = [{"role": "user", "content": "write a poem about the sea"}]
    malformed: list[tuple[str, dict[str, Any], int]] = [
        ("/v1/chat/completions", {"model": "cheap", "messages": msg, "temperature": 1.5}, 400),
        ("/v1/chat/completions", {"model": "strong", "messages": msg, "temperature": 1.9, "stream": True}, 400),
        ("/v1/chat/completions", {"model": "support", "messages": [
            {"role": "user", "content": "write a poem [[reject]]"}]}, 400),
        ("/v1/chat/completions", {"model": "auto", "messages": msg, "temperature": 1.2}, 400),
        ("/v1/chat/completions", {"model": "cheap", "messages": msg, "api_base": "http://127.0.0.1:9"}, 400),
        ("/v1/chat/completions", {"model": "cheap", "messages": msg, "timeout": 0.001}, 400),
        ("/v1/chat/completions", {"model": "cheap", "messages": msg, "temperature": "x"}, 400),
    ]
    codes: Counter[str] = Counter()
    for i in range(20):
        path, body, status = malformed[i % len(malformed)]
        r = await client.post(path, json=body)
        assert r.status_code == status, r.text
        codes[r.json()["error"]["code"]] += 1
        assert "sk-" not in r.text
    assert codes["upstream_rejected"] >= 10
    # Classification escalations the provider rejects are answered degraded, not counted either.
    for i in range(4):
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": f"film {i} [[reject]]"})
        assert r.status_code == 200 and (r.json()["path"], r.json()["reason"]) == ("degraded", "upstream_rejected")
    for model in ("cheap", "strong", "support"):
        ok = await client.post("/v1/chat/completions", json={"model": model, "messages": msg})
        assert ok.status_code == 200 and ok.headers["x-router-path"] == "foundation", ok.text
    ok = await client.post("/v1/classify", json={"task": "sentiment", "input": "the film runs two hours"})
    assert ok.json()["path"] == "foundation"
    assert sample(registry, "hybrid_router_foundation_calls_total", alias="cheap", outcome="breaker_open") == 0
    assert sample(registry, "hybrid_router_foundation_calls_total", alias="strong", outcome="breaker_open") == 0
    assert sample(registry, "hybrid_router_foundation_calls_total", alias="cheap", outcome="rejected") >= 4


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["fallback", "degrade"])
async def test_invalid_labels_follow_the_route_policy_and_keep_the_breaker_closed(
    policy: str, write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    def edit(doc: Any) -> None:
        _strict_policy(doc)
        doc["routes"]["sentiment"]["on_invalid_label"] = policy

    client = client_for(make_settings(write_policy(models={"cheap": "fake-badlabel"}, edit=edit)))
    for i in range(6):
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": f"film number {i}"})
        body = r.json()
        if policy == "fallback":
            assert (body["path"], body["foundation_alias"]) == ("foundation", "strong"), body
        else:
            assert (body["path"], body["reason"]) == ("degraded", "invalid_label"), body
    assert sample(registry, "hybrid_router_foundation_calls_total", alias="cheap", outcome="invalid_label") == 6
    assert [r["model"] for r in upstream.received].count("fake-ok") == (6 if policy == "fallback" else 0)
    # `cheap` still serves: its breaker never opened.
    ok = await client.post("/v1/chat/completions", json={"model": "cheap", "messages": HI})
    assert ok.status_code == 200 and ok.headers["x-router-path"] == "foundation"
    assert sample(registry, "hybrid_router_foundation_calls_total", alias="cheap", outcome="breaker_open") == 0

"""Parts of the learning loop in process: the accuracy bounds, policy-named specialists on reload,
the guard's arithmetic, and promote/rollback refusing bad input without touching the policy."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from ops.promote import PromotionError, promote, rollback
from router.foundation_quality import Bounds, shadow_bounds, weaker_than
from router.metrics import GatewayMetrics
from router.policy import Shadow
from router.settings import Settings
from router.shadow import ShadowChecker
from tests.conftest import ROOT

BUNDLED = ROOT / "specialists" / "bundled"


def test_shadow_bounds_hold_the_true_accuracy_and_judge_only_on_enough_evidence() -> None:
    b = shadow_bounds(agreements=90, n=100, mean_confidence=0.95)
    assert (b.lower, b.upper) == pytest.approx((0.85, 0.95))
    assert shadow_bounds(0, 0, 0.9) == Bounds(0, 0.0, 1.0)
    assert weaker_than(shadow_bounds(10, 100, 0.97), 0.9, min_checks=20)
    assert not weaker_than(shadow_bounds(10, 10, 0.97), 0.9, min_checks=20)  # too few checks
    assert not weaker_than(shadow_bounds(95, 100, 0.97), 0.9, min_checks=20)  # upper 0.98 >= 0.9


def test_guard_needs_a_full_window_and_a_reset_clears_it() -> None:
    registry = CollectorRegistry()
    checker = ShadowChecker(GatewayMetrics(registry), random.Random(0))
    shadow = Shadow(sample_rate=1.0, window=10)
    for _ in range(12):
        checker.escalated(shadow, "r", 0.6)
    for i in range(10):
        assert "r" not in checker.weaker, f"tripped after {i} checks"
        checker._record(shadow, "r", False, 0.95)  # the foundation disagrees with confident answers
    assert "r" in checker.weaker
    assert registry.get_sample_value("hybrid_router_foundation_weaker", {"route": "r"}) == 1.0
    assert registry.get_sample_value("hybrid_router_foundation_accuracy_estimate",
                                     {"route": "r", "bound": "upper"}) == pytest.approx(0.05)
    checker.reset("r")
    assert "r" not in checker.weaker
    assert registry.get_sample_value("hybrid_router_foundation_weaker", {"route": "r"}) == 0.0


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_policy_naming_a_missing_specialist_directory_is_refused_on_reload(
        write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
        client_for: Callable[[Settings], httpx.AsyncClient], tmp_path: Path) -> None:
    copy = tmp_path / "sentiment-copy"
    shutil.copytree(BUNDLED / "sentiment", copy)

    def named(directory: Path) -> Callable[[Any], None]:
        def edit(doc: Any) -> None:
            doc["specialists"] = {"sentiment_copy": str(directory)}
            doc["routes"]["sentiment"]["specialist"] = "sentiment_copy"
        return edit

    path = write_policy(edit=named(copy))
    client = client_for(make_settings(path, admin_token="adm"))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": "a gorgeous film"})
    assert r.status_code == 200 and r.json()["specialist_version"]
    version = r.json()["policy_version"]
    write_policy(edit=named(tmp_path / "nowhere"))
    reload = await client.post("/admin/policy/reload", headers={"authorization": "Bearer adm"})
    assert reload.status_code != 200 or reload.json().get("ok") is False, reload.text
    assert "specialists.sentiment_copy" in reload.text
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": "a gorgeous film"})
    assert r.json()["policy_version"] == version  # still serving the old policy


def test_promote_refuses_a_directory_that_is_not_a_candidate(write_policy: Callable[..., Path],
                                                             tmp_path: Path) -> None:
    path = write_policy()
    before = path.read_text()
    with pytest.raises(PromotionError, match="not a candidate"):
        promote(path, "sentiment", tmp_path / "nowhere", BUNDLED)
    with pytest.raises(PromotionError, match="not a classification route"):
        promote(path, "support", tmp_path, BUNDLED)
    with pytest.raises(PromotionError, match="nothing to roll back"):
        rollback(path, "sentiment", BUNDLED)
    assert path.read_text() == before

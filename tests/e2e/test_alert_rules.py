"""The alert rules, unit-tested with `promtool test rules` and checked against the runbook.

`deploy/prometheus/tests/healthy.yml` feeds the rules a healthy gateway (idle and fresh, busy,
restarted) and expects no alert at any of its evaluation times; `faults.yml` scripts the fault
each alert names and expects it to fire with its labels and exact annotations. The checks here
make sure those files keep covering every alert, and that every alert has a summary, a
description quoting its value and a `runbook_url` whose section exists in docs/runbook.md with
what it means, what to check and how to mitigate.

promtool comes from Debian's `prometheus` package: without it the promtool test skips with the
reason on a developer's machine and fails in CI (`CI` set), where `.ci/run` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
ALERTS_YML = RULES_DIR / "alerts.yml"
TESTS_DIR = RULES_DIR / "tests"
RUNBOOK = ROOT / "docs" / "runbook.md"


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS_YML.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _rule_tests(name: str) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((TESTS_DIR / name).read_text())["tests"]
    return tests


def test_promtool_rule_unit_tests_pass() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool not on PATH (Debian: apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must install it")
        pytest.skip(reason)
    files = sorted(str(p) for p in TESTS_DIR.glob("*.yml"))
    assert len(files) >= 2
    done = subprocess.run([promtool, "test", "rules", *files], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"promtool test rules:\n{done.stdout}\n{done.stderr}"


def test_every_alert_is_silent_when_healthy_at_every_evaluation_time() -> None:
    names = {a["alert"] for a in _alerts()}
    for group in _rule_tests("healthy.yml"):
        cases = group["alert_rule_test"]
        assert all(c["exp_alerts"] == [] for c in cases), "healthy.yml expects no alert"
        times = {c["eval_time"] for c in cases}
        assert {"1m", "10m", "1h", "3h"} <= times
        covered = {(c["alertname"], c["eval_time"]) for c in cases}
        missing = {(n, t) for n in names for t in times} - covered
        assert not missing, f"healthy.yml does not check {sorted(missing)}"


def test_every_alert_fires_on_its_fault_with_labels_and_annotations() -> None:
    alerts = {a["alert"]: a for a in _alerts()}
    fired: set[str] = set()
    for group in _rule_tests("faults.yml"):
        for case in group["alert_rule_test"]:
            for exp in case["exp_alerts"]:
                fired.add(case["alertname"])
                rule = alerts[case["alertname"]]
                assert exp["exp_labels"]["severity"] == rule["labels"]["severity"]
                assert set(exp["exp_annotations"]) == set(rule["annotations"]), case["alertname"]
    assert set(alerts) - fired == set(), "alerts without a firing test in faults.yml"


def test_every_alert_has_annotations_with_its_value_and_a_runbook_section() -> None:
    runbook = RUNBOOK.read_text()
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", runbook, flags=re.MULTILINE | re.DOTALL))
    problems = []
    for rule in _alerts():
        name = rule["alert"]
        ann = rule.get("annotations", {})
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity must be critical, warning or info")
        if "for" not in rule:
            problems.append(f"{name}: no `for:`")
        if not ann.get("summary"):
            problems.append(f"{name}: no summary")
        if "$value" not in ann.get("description", ""):
            problems.append(f"{name}: the description does not quote the value")
        anchor = name.lower()
        if ann.get("runbook_url") != f"docs/runbook.md#{anchor}":
            problems.append(f"{name}: runbook_url must be docs/runbook.md#{anchor}")
        body = sections.get(anchor, "")
        if f"**{name}**" not in body:
            problems.append(f"{name}: docs/runbook.md has no section `## {anchor}` naming it")
        elif "Check first:" not in body or len(re.findall(r"^\d\. ", body, flags=re.MULTILINE)) < 3 or "Mitigate" not in body:
            problems.append(f"{name}: its runbook section needs three checks and a mitigation")
    assert not problems, "\n".join(problems)


def test_the_availability_objective_counts_exactly_the_codes_the_gateway_creates_at_zero() -> None:
    """The gateway creates `request_errors{code}` at 0 for these codes (so rate() sees a first
    burst); a code the rules count but the gateway does not create would miss that burst."""
    from router.metrics import SLO_ERROR_CODES

    doc = yaml.safe_load(ALERTS_YML.read_text())
    exprs = [r["expr"] for g in doc["groups"] for r in g["rules"] if r.get("record", "").startswith(
        "hybrid_router:slo_errors:")]
    assert len(exprs) == 4
    for expr in exprs:
        (codes,) = set(re.findall(r'hybrid_router_request_errors_total\{code=~"([^"]+)"\}', expr))
        assert sorted(codes.split("|")) == sorted(SLO_ERROR_CODES), expr

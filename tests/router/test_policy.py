"""Policy validation: the default policy is valid; mistakes name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import main
from router.policy import ClassifyRoute, PolicyConfigError, load_policy, parse_policy
from specialists import load_specialists
from tests.conftest import ROOT

CLASSES = {"sentiment": ("negative", "positive"), "intent": ("greeting", "oos")}

BASE = """\
version: 1
aliases:
  cheap:
    model: openai/gpt-4o-mini
routes:
  sentiment:
    kind: classify
    specialist: sentiment
    min_confidence: 0.8
    escalate_to: cheap
"""


def issues(text: str) -> list[str]:
    with pytest.raises(PolicyConfigError) as info:
        parse_policy(text, "p.yaml", CLASSES)
    return info.value.issues


def test_default_policy_is_valid_against_the_bundled_specialists() -> None:
    specialists = load_specialists()
    loaded = load_policy(ROOT / "policies" / "default.yaml", {n: specialists[n].classes for n in specialists})
    assert len(loaded.version) == 12
    used = {r.specialist for r in loaded.policy.routes.values()}
    used |= {t.specialist for r in loaded.policy.routes.values() if isinstance(r, ClassifyRoute) for t in r.tiers()}
    assert used == set(specialists), "default.yaml must use every bundled specialist"


def test_version_is_a_content_hash() -> None:
    a = parse_policy(BASE, "p.yaml", CLASSES)
    b = parse_policy(BASE.replace("0.8", "0.9"), "p.yaml", CLASSES)
    assert a.version != b.version
    assert a.version == parse_policy(BASE, "other.yaml", CLASSES).version
    route = a.route("sentiment")
    assert isinstance(route, ClassifyRoute) and route.min_confidence == 0.8


def test_threshold_out_of_range_names_line_and_key() -> None:
    (issue,) = issues(BASE.replace("min_confidence: 0.8", "min_confidence: 1.5"))
    assert issue.startswith("p.yaml:9: routes.sentiment.min_confidence:")
    assert "less than or equal to 1" in issue


def test_unknown_key_is_an_error() -> None:
    (issue,) = issues(BASE.replace("    escalate_to: cheap", "    escalate_to: cheap\n    min_confidance: 0.3"))
    assert issue.startswith("p.yaml:11: routes.sentiment.min_confidance:")
    assert "Extra inputs are not permitted" in issue


def test_wrong_type_is_an_error() -> None:
    (issue,) = issues(BASE.replace("min_confidence: 0.8", "min_confidence: high"))
    assert "p.yaml:9: routes.sentiment.min_confidence" in issue


def test_unknown_alias_specialist_and_label() -> None:
    assert "unknown alias 'pricey'" in issues(BASE.replace("escalate_to: cheap", "escalate_to: pricey"))[0]
    assert "unknown specialist 'sentimant'" in issues(BASE.replace("specialist: sentiment",
                                                                   "specialist: sentimant"))[0]
    (issue,) = issues(BASE + "    escalate_labels: [neutral]\n")
    assert issue.startswith("p.yaml:11: routes.sentiment.escalate_labels:") and "'neutral'" in issue


def test_missing_version_and_bad_yaml() -> None:
    assert any("version" in i for i in issues(BASE.replace("version: 1\n", "")))
    (issue,) = issues("version: 1\nroutes: [\n")
    assert issue.startswith("p.yaml:") and "not valid YAML" in issue


def test_policy_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = ROOT / "policies" / "default.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("min_confidence: 0.8", "min_confidence: -1"))
    with pytest.raises(SystemExit) as ok:
        main(["policy", "check", str(good)])
    assert ok.value.code == 0
    assert "ok (version" in capsys.readouterr().out
    with pytest.raises(SystemExit) as failed:
        main(["policy", "check", str(bad)])
    assert failed.value.code == 1
    assert f"{bad}:9: routes.sentiment.min_confidence" in capsys.readouterr().err

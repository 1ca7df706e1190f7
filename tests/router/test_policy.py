"""Policy validation: the default policy is valid; mistakes name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.cli import main
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


# ---- hostile policy text: size, YAML bombs, secrets ---------------------------------------------

def yaml_bomb(levels: int = 12) -> str:
    """A "billion laughs" document: 9^levels strings once expanded, under 1 KB as text."""
    lines = ["version: 1", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"routes: {{sentiment: {{kind: classify, specialist: sentiment, prompt: *a{levels - 1}}}}}")
    return "\n".join(lines) + "\n"


def test_a_yaml_bomb_is_refused_at_its_first_anchor_with_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    bomb = yaml_bomb()
    assert len(bomb) < 4096
    tracemalloc.start()
    try:
        (issue,) = issues(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert issue == "p.yaml:2: YAML anchors (&name) are not allowed in a policy"
    assert peak < 5_000_000, f"parsing a 1 KB bomb peaked at {peak} bytes"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(PolicyConfigError, match="anchors"):
        load_policy(path, CLASSES)


def test_aliases_merge_keys_and_deep_nesting_are_refused() -> None:
    (issue,) = issues(BASE + "description: *nowhere\n")
    assert issue == "p.yaml:11: YAML aliases (*name) are not allowed in a policy"
    merge = BASE.replace("  cheap:\n", "  base: &base {timeout_s: 5}\n  cheap:\n    <<: *base\n")
    (issue,) = issues(merge)
    assert issue == "p.yaml:3: YAML anchors (&name) are not allowed in a policy"
    (issue,) = issues(BASE + "description: " + "[" * 40 + "]" * 40 + "\n")
    assert issue.endswith("nested deeper than 32 levels")


def test_size_limit_for_text_and_files(tmp_path: Path) -> None:
    padded = BASE + "#" + "x" * 300_000 + "\n"
    (issue,) = issues(padded)
    assert "over the 262144-byte limit" in issue
    assert parse_policy(padded, "p.yaml", CLASSES, max_bytes=400_000).version
    path = tmp_path / "big.yaml"
    path.write_text(padded)
    with pytest.raises(PolicyConfigError, match="over the 262144-byte limit"):
        load_policy(path, CLASSES)
    path.write_bytes(BASE.encode() + b"# \xff\n")
    with pytest.raises(PolicyConfigError, match="not UTF-8"):
        load_policy(path, CLASSES)


def test_api_key_env_must_be_under_the_provider_key_prefix() -> None:
    def with_key(name: str) -> str:
        return BASE.replace("    model: openai/gpt-4o-mini\n",
                            f"    model: openai/gpt-4o-mini\n    api_key_env: {name}\n")

    for name in ("ROUTER_ADMIN_TOKEN", "OPENAI_API_KEY", "ROUTER_PROVIDER_KEY_", "ROUTER_PROVIDER_KEY_a"):
        (issue,) = issues(with_key(name))
        assert issue.startswith("p.yaml:5: aliases.cheap.api_key_env: must name an environment variable "
                                "ROUTER_PROVIDER_KEY_<NAME>"), issue
    loaded = parse_policy(with_key("ROUTER_PROVIDER_KEY_OPENAI"), "p.yaml", CLASSES)
    assert loaded.policy.aliases["cheap"].api_key_env == "ROUTER_PROVIDER_KEY_OPENAI"


def test_read_secret_env_reads_only_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.settings import read_secret_env

    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("ROUTER_PROVIDER_KEY_OPENAI", "sk-provider")
    assert read_secret_env("ROUTER_ADMIN_TOKEN") is None
    assert read_secret_env("ROUTER_PROVIDER_KEY_OPENAI") == "sk-provider"


def test_api_base_is_a_plain_http_url_and_never_echoed() -> None:
    def with_base(url: str) -> str:
        return BASE.replace("    model: openai/gpt-4o-mini\n",
                            f"    model: openai/gpt-4o-mini\n    api_base: '{url}'\n")

    assert parse_policy(with_base("https://api.example.com/v1"), "p.yaml", CLASSES)
    assert parse_policy(with_base("http://127.0.0.1:8000/v1"), "p.yaml", CLASSES)
    cases = {
        "https://user:hunter2@api.example.com/v1": "must not carry credentials",
        "https://hunter2@api.example.com/v1": "must not carry credentials",
        "file:///etc/passwd": "http:// or https:// URL",
        "gopher://h/": "http:// or https:// URL",
        "http:///v1": "with a host",
        "http://h:99999/v1": "cannot parse",
        "http://h /v1": "without spaces",
    }
    for url, expected in cases.items():
        (issue,) = issues(with_base(url))
        assert issue.startswith("p.yaml:5: aliases.cheap.api_base: ") and expected in issue, (url, issue)
        assert "hunter2" not in issue


def test_policy_check_refuses_a_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(yaml_bomb())
    with pytest.raises(SystemExit) as failed:
        main(["policy", "check", str(bomb)])
    assert failed.value.code == 1
    assert f"{bomb}:2: YAML anchors (&name) are not allowed in a policy" in capsys.readouterr().err

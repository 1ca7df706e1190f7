"""A gateway for the OpenAI conformance and client-matrix tests: one route of each kind on each path.

`conformance_gateway` (module scope) serves default.yaml with its aliases on the local upstream,
plus routes that force each path: `sentiment_hard` (always escalates), `sentiment_down`,
`support_down`, `auto_down` (their alias always fails), and the aliases `catalog` (an OpenAI
catalog model name, for what litellm forwards only to OpenAI's own models) and `broken`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from router.app import create_app
from router.settings import FoundationSettings, RedisSettings, Settings
from tests.fake_upstream import Upstream
from tests.server_thread import ServerThread

ROOT = Path(__file__).resolve().parents[2]


def conformance_policy(path: Path, upstream: Upstream) -> Path:
    yaml = YAML(typ="rt")
    doc = yaml.load((ROOT / "policies" / "default.yaml").read_text())
    for spec in doc["aliases"].values():
        spec.update(model="openai/fake-ok", api_base=upstream.api_base, price_as="gpt-4o-mini", max_retries=0,
                    timeout_s=5)
    doc["aliases"]["cheap"]["fallbacks"] = []
    doc["aliases"]["catalog"] = {"model": "openai/gpt-4o-mini", "api_base": upstream.api_base, "max_retries": 0}
    doc["aliases"]["broken"] = {"model": "openai/fake-500", "api_base": upstream.api_base, "max_retries": 0,
                                "price_as": "gpt-4o-mini", "breaker_failures": 1000}
    routes = doc["routes"]
    routes["sentiment"]["min_confidence"] = 0.5

    def like(name: str, **changes: object) -> dict[str, object]:
        # deep copies: a shared object would be written as a YAML anchor, which policies refuse
        return {**copy.deepcopy(dict(routes[name])), **changes}

    routes["sentiment_hard"] = like("sentiment", min_confidence=1.0, cascade=[])  # no tier 2: always escalates
    routes["sentiment_down"] = like("sentiment", min_confidence=1.0, cascade=[], escalate_to="broken")
    routes["support_down"] = like("support", escalate_to="broken")
    routes["auto_down"] = like("auto", tiers={k: "broken" for k in routes["auto"]["tiers"]},
                               low_confidence_tier="broken")
    with path.open("w") as f:
        yaml.dump(doc, f)
    return path


@pytest.fixture(scope="module")
def conformance_gateway(tmp_path_factory: pytest.TempPathFactory, upstream_server: Upstream, redis_url: str
                        ) -> Iterator[ServerThread]:
    policy = conformance_policy(tmp_path_factory.mktemp("conformance") / "policy.yaml", upstream_server)
    settings = Settings(policy_path=policy, redis=RedisSettings(url=redis_url), foundation=FoundationSettings(),
                        _env_file=None)  # type: ignore[call-arg]
    server = ServerThread(create_app(settings)).start()
    yield server
    server.stop()

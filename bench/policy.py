"""The bench policy, written at run time: only the sentiment specialist and the fake upstream.

- `sentiment`: min_confidence 0.0, so every input is answered by the specialist (the cache is
  looked up, but only foundation answers are stored: each request is a miss);
- `sentiment_escalate`: min_confidence 1.0, so every input escalates; the answer is cached, and a
  repeated body is the cache-hit path;
- `sentiment_tier2`: the `sentiment` -> `sentiment_minilm` cascade with tier 1 unsure of everything
  (1.0) and tier 2 at 0.0, so every input is answered by the tier-2 transformer (off the event
  loop, in the cascade pool), blended with tier 1's answer as in the default policy;
- aliases `fast` (no cache: every chat request is forwarded) and `fast_cached` (cached), both
  `openai/fake-ok` at the fake upstream, priced as gpt-4o-mini.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CACHED_ALIAS", "ESCALATE_ROUTE", "FORWARD_ALIAS", "SPECIALIST_ROUTE", "TIER2_ROUTE", "write_policy"]

SPECIALIST_ROUTE = "sentiment"
ESCALATE_ROUTE = "sentiment_escalate"
TIER2_ROUTE = "sentiment_tier2"
FORWARD_ALIAS = "fast"
CACHED_ALIAS = "fast_cached"


def write_policy(path: Path, upstream_api_base: str) -> Path:
    alias = {"model": "openai/fake-ok", "api_base": upstream_api_base, "price_as": "gpt-4o-mini",
             "timeout_s": 10, "max_retries": 0, "max_concurrency": 256, "max_queue": 1024}
    policy = {
        "version": 1,
        "description": "Benchmark policy (written by python -m bench).",
        "aliases": {FORWARD_ALIAS: {**alias, "cache_ttl_s": 0}, CACHED_ALIAS: {**alias, "cache_ttl_s": 3600}},
        "routes": {
            SPECIALIST_ROUTE: {"kind": "classify", "specialist": "sentiment", "min_confidence": 0.0,
                               "escalate_to": FORWARD_ALIAS, "cache_ttl_s": 3600},
            ESCALATE_ROUTE: {"kind": "classify", "specialist": "sentiment", "min_confidence": 1.0,
                             "escalate_to": FORWARD_ALIAS, "cache_ttl_s": 3600},
            TIER2_ROUTE: {"kind": "classify", "specialist": "sentiment", "min_confidence": 1.0,
                          "cascade": [{"specialist": "sentiment_minilm", "min_confidence": 0.0}],
                          "escalate_to": FORWARD_ALIAS, "cache_ttl_s": 3600},
        },
    }
    # YAML is a superset of JSON.
    path.write_text(json.dumps(policy, indent=2) + "\n")
    return path

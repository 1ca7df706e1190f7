"""Redis-path figures in process (issue: cache-hit latency, cost of an unreachable Redis).

`python -m bench.redis_paths` builds a gateway (bundled sentiment route escalating everything to a
local fake upstream) and measures, with a monotonic clock over N calls each:

- `Gateway.classify` on a cached answer: near cache on (the default), near cache off (a Redis
  GET each time), and the in-process cache (no Redis configured);
- a cache lookup (`cache.get`) against an unreachable Redis once the breaker is open, against the
  in-process cache: the latency a dead Redis adds to a request;
- `Gateway.classify` of a confident answer with Redis unreachable (specialist first: no lookup).

Prints a table (p50 / p99 in µs); traffic only to 127.0.0.1.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from router.app import build_gateway
from router.settings import FoundationSettings, RedisSettings, Settings
from tests.fake_upstream import Upstream

N = 3000
POLICY = """version: 1
aliases:
  fast: {{model: openai/fake-ok, api_base: "{base}", price_as: gpt-4o-mini}}
routes:
  sentiment: {{kind: classify, specialist: sentiment, min_confidence: {threshold}, escalate_to: fast}}
"""


async def _time(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    for _ in range(200):
        await fn()
    samples = []
    for _ in range(N):
        t = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * len(samples))]


def _gateway(base: str, threshold: float, redis: RedisSettings) -> Any:
    path = Path(f"/tmp/hybrid-router-redis-bench-{threshold}.yaml")
    path.write_text(POLICY.format(base=base, threshold=threshold))
    return build_gateway(Settings(policy_path=path, redis=redis, foundation=FoundationSettings(),
                                  _env_file=None))  # type: ignore[call-arg]


async def main() -> None:
    upstream = Upstream().start()
    rows: list[tuple[str, float, float]] = []
    text = "the film runs two hours . [[label:negative]]"
    try:
        for label, redis in (
            ("cache hit, Redis + near cache (default)", RedisSettings(url="redis://127.0.0.1:6379/14")),
            ("cache hit, Redis only (near cache off)", RedisSettings(url="redis://127.0.0.1:6379/14",
                                                                     near_cache_ttl_s=0)),
            ("cache hit, in-process cache (no Redis)", RedisSettings()),
        ):
            gw = _gateway(upstream.api_base, 1.0, redis)
            await gw.classify("sentiment", [text])  # escalates once, stores the answer
            _, (o,) = await gw.classify("sentiment", [text])
            assert o.path == "cache", o
            rows.append((f"Gateway.classify: {label}", *await _time(lambda gw=gw: gw.classify("sentiment", [text]))))
            await gw.cache.close()

        dead = _gateway(upstream.api_base, 1.0, RedisSettings(url="redis://127.0.0.1:1/0", timeout_s=0.05,
                                                              breaker_reset_s=3600))
        for _ in range(5):
            await dead.cache.get("gw:v1:resp:{x}")  # three failures open the breaker
        memory = _gateway(upstream.api_base, 1.0, RedisSettings())
        rows.append(("cache.get, Redis unreachable, breaker open", *await _time(lambda: dead.cache.get("gw:v1:resp:{x}"))))
        rows.append(("cache.get, in-process cache (reference)", *await _time(lambda: memory.cache.get("gw:v1:resp:{x}"))))
        confident = _gateway(upstream.api_base, 0.0, RedisSettings(url="redis://127.0.0.1:1/0", timeout_s=0.05))
        rows.append(("Gateway.classify confident, Redis unreachable", *await _time(
            lambda: confident.classify("sentiment", ["a gorgeous , witty , seductive movie ."]))))
        local = _gateway(upstream.api_base, 0.0, RedisSettings())
        rows.append(("Gateway.classify confident, no Redis (reference)", *await _time(
            lambda: local.classify("sentiment", ["a gorgeous , witty , seductive movie ."]))))
    finally:
        upstream.stop()
    print(f"| measurement (N={N}, in process) | p50 µs | p99 µs |\n| --- | --- | --- |")
    for name, p50, p99 in rows:
        print(f"| {name} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())

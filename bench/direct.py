"""The baseline for gateway overhead: `litellm.acompletion` called directly from a Python loop.

Run as a subprocess (pinned like the servers under test) so that importing litellm and the loop's
CPU stay out of the harness process:

    python -m bench.direct --api-base http://127.0.0.1:P/v1 --concurrency 8 --seconds 5 --repeats 3

`concurrency` coroutines each call `acompletion` back to back with the same arguments the gateway
uses (model `openai/fake-ok`, timeout, no retries). Prints one JSON object: a list of runs with
requests/s and latency percentiles (from per-call perf_counter times).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

__all__ = ["main"]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


async def _run(litellm: Any, api_base: str, messages: list[dict[str, str]], concurrency: int,
               seconds: float) -> dict[str, float | int]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await litellm.acompletion(model="openai/fake-ok", messages=messages, api_base=api_base,
                                          api_key="unused", timeout=10.0, num_retries=0)
            except Exception:  # noqa: BLE001 - any failure is counted, as wrk counts failed requests
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "concurrency": concurrency,
        "duration_s": round(elapsed, 3),
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 50) * 1e3, 4),
        "p90_ms": round(_percentile(latencies, 90) * 1e3, 4),
        "p99_ms": round(_percentile(latencies, 99) * 1e3, 4),
        "p999_ms": round(_percentile(latencies, 99.9) * 1e3, 4),
        "mean_ms": round(sum(latencies) / max(1, len(latencies)) * 1e3, 4),
        "max_ms": round(latencies[-1] * 1e3, 4) if latencies else float("nan"),
        "errors": errors,
        "non_2xx": 0,
    }


async def _main(args: argparse.Namespace) -> list[dict[str, float | int]]:
    # As the gateway does before importing litellm: bundled price table, offline, no telemetry.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.suppress_debug_info = True
    litellm.drop_params = True
    messages = json.loads(args.messages)
    await _run(litellm, args.api_base, messages, args.concurrency, args.warmup_s)
    return [await _run(litellm, args.api_base, messages, args.concurrency, args.seconds)
            for _ in range(args.repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--messages", default='[{"role": "user", "content": "hello"}]')
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run  # the gateway's loop, for a like-for-like comparison
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    print("DIRECTJSON " + json.dumps(runner(_main(args))), flush=True)


if __name__ == "__main__":
    main()

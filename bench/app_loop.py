"""The whole ASGI app in process, no server: µs per `POST /v1/classify`, gateway vs bare endpoint.

Raw ASGI messages go straight into `router.app.create_app(...)` (bench policy, in-process cache,
log level WARNING as in `make bench`) and into `bench.bare`'s app, one request after the other on
uvloop, with GC frozen after a warm-up as the gateway does after start-up. What the gateway costs
beyond the bare app here is its own Python work (dispatch, validation, policy, decision, cache key,
metrics, headers), without uvicorn's per-request cost that both pay under wrk. Also run with the
hot-path dispatch switched off (`app.hot = None`, the full Starlette stack) and through the chat API.

    python -m bench.app_loop [--n 20000]
    python -m bench.app_loop --src ../other-checkout   # the same loop over another checkout's code

Prints one JSON object (median of 3 runs of n requests, µs per request).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["main"]

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
               Awaitable[None]]


async def _per_request_us(app: App, path: str, bodies: list[bytes], n: int) -> float:
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one(body: bytes) -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8080), "state": {}}
        await app(scope, receive, send)

    for i in range(500):
        await one(bodies[i % len(bodies)])
    if set(statuses) != {200}:
        raise RuntimeError(f"{path}: statuses {sorted(set(statuses))}")
    gc.collect()
    gc.freeze()
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            await one(bodies[i % len(bodies)])
        runs.append((time.perf_counter() - t0) / n * 1e6)
    gc.unfreeze()
    return round(sorted(runs)[1], 2)


async def _measure(n: int, policy: Path) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from router.app import create_app
    from router.settings import RedisSettings, Settings

    from .bare import build_app
    from .texts import TEXTS

    classify = [orjson.dumps({"task": "sentiment", "input": t}) for t in TEXTS]
    chat = [orjson.dumps({"model": "sentiment", "messages": [{"role": "user", "content": t}]}) for t in TEXTS]
    app: Any = create_app(Settings(policy_path=policy, redis=RedisSettings(url=None), log_level="WARNING",
                                   _env_file=None), CollectorRegistry())  # type: ignore[call-arg]
    out = {"gateway_classify_us": await _per_request_us(app, "/v1/classify", classify, n)}
    if getattr(app, "hot", None) is not None:
        hot, app.hot = app.hot, None
        out["gateway_classify_full_starlette_us"] = await _per_request_us(app, "/v1/classify", classify, n)
        app.hot = hot
    out["gateway_chat_specialist_us"] = await _per_request_us(app, "/v1/chat/completions", chat, n)
    out["bare_classify_us"] = await _per_request_us(build_app("sentiment"), "/v1/classify", classify, n)
    out["gateway_minus_bare_us"] = round(out["gateway_classify_us"] - out["bare_classify_us"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--src", type=Path, help="import router/ and specialists/ from this checkout instead")
    args = parser.parse_args()
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))
        for name in [m for m in sys.modules if m.split(".")[0] in ("router", "specialists")]:
            del sys.modules[name]
    import logging

    import uvloop

    from .policy import write_policy

    logging.disable(logging.WARNING)  # the start-up warnings of create_app (no keys, no foundation)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        policy = write_policy(Path(tmp) / "policy.yaml", "http://127.0.0.1:9/v1")
        print(json.dumps(uvloop.run(_measure(args.n, policy))))


if __name__ == "__main__":
    main()

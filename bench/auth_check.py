"""What the API-key check costs per request, in process: `python -m bench.auth_check`.

Measures `Authenticator.admit` (header -> key record: shape check, HMAC-SHA256, index lookup,
constant-time compare) plus `Authenticator.use` (route permission, spend/rate windows, counting,
the per-key Prometheus counter) with a warm key ring, as the classify handler calls them, on a
real Starlette `Request`. The ring
holds `--keys` records (default 1,000) in a keys file; no Redis (the check never waits on Redis:
counts are pushed in the background). Reports p50/p99/mean per request over N calls.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.requests import Request

from router.auth import Authenticator, Caller
from router.errors import AuthenticationError
from router.keys import FileKeyStore, KeyRecord, issue_key
from router.metrics import GatewayMetrics
from router.settings import AuthSettings

__all__ = ["main"]

SECRET = "bench-secret-" + "x" * 32


def _request(key: str | None) -> Request:
    headers = [(b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return Request({"type": "http", "method": "POST", "path": "/v1/classify", "headers": headers,
                    "query_string": b""})


def _run(coro: Coroutine[Any, Any, Caller | None]) -> Caller | None:
    """Drive a coroutine that completes without suspending (a loaded ring never awaits)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise RuntimeError("admit suspended: the key ring was not loaded")


def _measure(fn: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(1000):
        fn()
    times = []
    gc.disable()
    try:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    times.sort()
    return {"p50_us": round(times[n // 2] / 1e3, 2), "p99_us": round(times[int(n * 0.99)] / 1e3, 2),
            "mean_us": round(statistics.fmean(times) / 1e3, 2)}


async def _setup(directory: Path, keys: int) -> tuple[Authenticator, Authenticator, str, str]:
    path = directory / "keys.json"
    store = FileKeyStore(path)
    now = datetime.now(UTC)
    plain = limited = ""
    # Write the file once (issue_key rewrites it per key; fine for a few, slow for 1,000).
    for i in range(keys):
        rec = KeyRecord(name=f"k{i}", created=now)
        if i == 0:
            plain = await issue_key(store, SECRET.encode(), rec)
        elif i == 1:
            limited = await issue_key(store, SECRET.encode(), rec.model_copy(update={
                "rpm": 10**9, "tpm": 10**9, "usd_per_hour": 1e9, "usd_per_day": 1e9, "routes": ("sentiment",)}))
        else:
            break
    if keys > 2:  # pad the store with further records, digests of random keys
        import orjson

        from router.keys import key_digest, new_key
        doc = orjson.loads(path.read_bytes())
        for i in range(2, keys):
            doc["keys"][key_digest(SECRET.encode(), new_key())] = KeyRecord(
                name=f"k{i}", created=now).model_dump(mode="json")
        path.write_bytes(orjson.dumps(doc))
    metrics = GatewayMetrics(CollectorRegistry())  # the per-key counter, as the app wires it
    on = Authenticator(AuthSettings(secret=SECRET, keys_file=path), None, metrics.key_request)
    assert on.ring is not None
    await on.ring.refresh()
    off = Authenticator(AuthSettings(), None)
    return on, off, plain, limited


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        on, off, plain, limited = asyncio.run(_setup(Path(tmp), args.keys))
    req_plain, req_limited, req_off = _request(plain), _request(limited), _request(None)
    req_wrong = _request("hr-" + "A" * 32)

    def keys_off() -> None:
        _run(off.admit(req_off))

    def check(request: Request) -> Callable[[], None]:
        def one() -> None:
            caller = _run(on.admit(request))
            assert caller is not None
            on.use(caller, "route", "sentiment", "task")
        return one

    def wrong() -> None:
        try:
            _run(on.admit(req_wrong))
        except AuthenticationError:
            return
        raise AssertionError("a wrong key was admitted")

    results = {
        "keys off (admit returns None)": _measure(keys_off, args.n),
        "admit + use, key without limits": _measure(check(req_plain), args.n),
        "admit + use, key with rpm, tpm, USD/h, USD/day and a route list": _measure(check(req_limited), args.n),
        "wrong key -> 401 (raised)": _measure(wrong, args.n),
    }
    print(f"N={args.n} per row, {args.keys} keys in the ring, in process, warm")
    print("| measurement | p50 µs | p99 µs | mean µs |\n| --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['p50_us']} | {r['p99_us']} | {r['mean_us']} |")
    print("AUTHJSON " + json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

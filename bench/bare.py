"""The bare endpoint the gateway's specialist path is measured against.

A minimal ASGI app (no framework, no validation model, no metrics, no cache key) on the same
server stack as the gateway (uvicorn, uvloop, httptools, one worker): ``POST /v1/classify``
with ``{"task": ..., "input": "..."}`` runs the same bundled specialist through the same
``Specialist.predict_one`` path and answers the same JSON fields the gateway does. What the
gateway costs beyond it is its own work (routing, validation, policy, decision, metrics,
request id, headers)::

    python -m bench.bare --port 8090 --specialist sentiment
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from specialists import load_specialists

__all__ = ["build_app", "main"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
_HEADERS = [(b"content-type", b"application/json")]


def build_app(specialist: str) -> Callable[[Scope, Callable[[], Awaitable[Message]],
                                            Callable[[Message], Awaitable[None]]], Awaitable[None]]:
    spec = load_specialists()[specialist]
    spec.predict_one("warm up")

    async def app(scope: Scope, receive: Callable[[], Awaitable[Message]],
                  send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":  # lifespan: accept start-up and shut-down
            while (msg := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        t0 = time.perf_counter()
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        data = orjson.loads(body)
        pred = spec.predict_one(data["input"])
        out = orjson.dumps({
            "route": data["task"], "label": pred.label, "confidence": round(pred.confidence, 6),
            "path": "specialist", "reason": "confident", "cost_usd": 0.0, "cost_avoided_usd": 0.0,
            "latency_ms": round((time.perf_counter() - t0) * 1000.0, 3), "policy_version": "bare",
            "specialist_version": pred.version, "novelty": round(pred.novelty, 4), "foundation_alias": None,
        })
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*_HEADERS, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--specialist", default="sentiment")
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(build_app(args.specialist), host="127.0.0.1", port=args.port, access_log=False, log_level="warning",
                loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()

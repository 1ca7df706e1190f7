"""A local OpenAI-compatible upstream for tests, demos and benchmarks (loopback only).

The requested model name picks the behaviour:

    fake-ok        answers (a label when asked to classify, else an echo); streams when asked
    fake-slow      like fake-ok after `slow_s` seconds (default 2)
    fake-429       429 rate limited, with Retry-After
    fake-500       500 server error
    fake-garbage   200 with a body that is not JSON
    fake-badlabel  answers a label outside any allowed set
    fake-strict    like fake-ok, but 400 for what a real provider refuses: temperature over 1,
                   max_tokens over 4096, `[[reject]]` in the text (a content-policy hit); the
                   message quotes the key it was sent, as some providers do
    fake-401       401: the key is refused (quoted in the message)
    (any)          answers `n` choices when asked (usage counts each)
    fake-hang      never answers: holds the request until the client goes away (at most `hang_s`)
    fake-stall     streams its first chunk, then nothing (at most `hang_s`); not streaming: fake-hang
    fake-flaky     fails 30% of requests: 10% 500, 10% 429, 10% hang (the caller's timeout);
                   the rest like fake-ok

A classification answer is the label written in the text as ``[[label:X]]`` if present, else the
first label of the JSON-schema enum or of the prompt's label list. Every request body is kept in
`Upstream.received`, and its headers (names lower-cased) in `Upstream.received_headers`. Run standalone: ``python tests/fake_upstream.py [--host 127.0.0.1] --port 9100 [--latency-ms 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
import uuid
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

try:
    from tests.server_thread import ServerThread
except ModuleNotFoundError:  # run as a script: python tests/fake_upstream.py
    from server_thread import ServerThread  # type: ignore[no-redef]

_LABELS_IN_PROMPT = re.compile(r"these labels: (.+?)\. Reply", re.DOTALL)
_MARKER = re.compile(r"\[\[label:([^\]]+)\]\]")


def _fill(schema: Any) -> Any:
    """A value satisfying a simple JSON schema (first enum value, empty-ish scalars, required keys)."""
    if not isinstance(schema, dict):
        return "x"
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return _fill(options[0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _fill(v) for k, v in props.items()}
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "x"


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == name), None)
    if choice == "required" and tools:
        return tools[0]
    return None


def _structured(body: dict[str, Any]) -> str | None:
    """JSON content for a caller's own json_schema / json_object request (not the label schema)."""
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_object":
        return orjson.dumps({"answer": "echo"}).decode()
    schema = (rf.get("json_schema") or {}).get("schema") or {}
    if rf.get("type") == "json_schema" and "label" not in (schema.get("properties") or {}):
        return orjson.dumps(_fill(schema)).decode()
    return None


def _answer(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    model = body.get("model", "")
    if model.endswith("fake-badlabel"):
        return "definitely-not-a-label"
    marker = _MARKER.search(text)
    rf = body.get("response_format") or {}
    enum = (((rf.get("json_schema") or {}).get("schema") or {}).get("properties") or {}).get("label", {}).get("enum")
    if marker:
        label = marker.group(1)
    elif enum:
        label = enum[0]
    elif m := _LABELS_IN_PROMPT.search(text):
        label = m.group(1).split(", ")[0]
    else:
        last = messages[-1].get("content", "") if messages else ""
        return f"echo: {last}"
    return orjson.dumps({"label": label}).decode() if enum else label


def _strict_problem(body: dict[str, Any]) -> str | None:
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and temperature > 1:
        return f"temperature: {temperature} is greater than the maximum of 1"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 4096:
        return f"max_tokens: {max_tokens} is greater than the maximum of 4096"
    if "[[reject]]" in orjson.dumps(body.get("messages")).decode():
        return "the request was rejected by the content policy"
    return None


def _error(status: int, message: str, kind: str) -> Response:
    return Response(orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}),
                    status_code=status, media_type="application/json")


async def _hang(request: Request, hang_s: float) -> None:
    """Wait until the client disconnects (or `hang_s` passes): a hung upstream that frees its slot."""
    end = time.monotonic() + hang_s
    while time.monotonic() < end and not await request.is_disconnected():
        await asyncio.sleep(0.05)


def create_upstream_app(received: list[dict[str, Any]], latency_s: float = 0.0, slow_s: float = 2.0,
                        hang_s: float = 600.0, seed: int | None = None,
                        received_headers: list[dict[str, str]] | None = None) -> Starlette:
    rng = random.Random(seed)

    async def completions(request: Request) -> Response:
        body = orjson.loads(await request.body())
        received.append(body)
        if received_headers is not None:
            received_headers.append(dict(request.headers))
        model = str(body.get("model", ""))
        if latency_s:
            await asyncio.sleep(latency_s)
        if model.endswith("fake-slow"):
            await asyncio.sleep(slow_s)
        if model.endswith("fake-flaky"):
            roll = rng.random()
            model = ("fake-500" if roll < 0.1 else "fake-429" if roll < 0.2 else "fake-hang" if roll < 0.3
                     else "fake-ok")
        if model.endswith("fake-hang") or (model.endswith("fake-stall") and not body.get("stream")):
            await _hang(request, hang_s)
            return Response(b"", status_code=504)
        if model.endswith("fake-429"):
            return Response(orjson.dumps({"error": {"message": "slow down", "type": "rate_limit_error"}}),
                            status_code=429, headers={"retry-after": "1"}, media_type="application/json")
        if model.endswith("fake-500"):
            return Response(orjson.dumps({"error": {"message": "boom", "type": "server_error"}}),
                            status_code=500, media_type="application/json")
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if model.endswith("fake-401"):
            return _error(401, f"Incorrect API key provided: {key}", "invalid_request_error")
        if model.endswith("fake-strict") and (problem := _strict_problem(body)) is not None:
            return _error(400, f"{problem} (request made with key {key})", "invalid_request_error")
        if model.endswith("fake-garbage"):
            return Response(b"<html>not json", media_type="application/json")
        tool = _forced_tool(body)
        content = _structured(body) or _answer(body)
        tool_call = None if tool is None else {
            "id": "call_" + uuid.uuid4().hex[:12], "type": "function",
            "function": {"name": tool.get("name", ""), "arguments": orjson.dumps(_fill(tool.get("parameters"))).decode()}}
        n = int(body.get("n") or 1)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = max(1, len(content.split()))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        if body.get("stream"):
            async def events() -> Any:
                base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
                if tool_call is not None:
                    yield b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": {
                        "role": "assistant", "content": None, "tool_calls": [{"index": 0, **tool_call}]},
                        "finish_reason": None}]}) + b"\n\n"
                    yield b"data: " + orjson.dumps({**base, "choices": [
                        {"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}) + b"\n\n"
                    if (body.get("stream_options") or {}).get("include_usage"):
                        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
                    yield b"data: [DONE]\n\n"
                    return
                words = content.split(" ")
                for i, w in enumerate(words):
                    delta = {"content": (w if i == 0 else " " + w)}
                    if i == 0:
                        delta["role"] = "assistant"
                    yield b"data: " + orjson.dumps({**base, "choices": [
                        {"index": 0, "delta": delta, "finish_reason": None}]}) + b"\n\n"
                    if model.endswith("fake-stall"):
                        await asyncio.sleep(hang_s)
                yield b"data: " + orjson.dumps({**base, "choices": [
                    {"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        usage = {**usage, "completion_tokens": completion_tokens * n,
                 "total_tokens": prompt_tokens + completion_tokens * n}
        return Response(orjson.dumps({
            "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                        if tool_call is None else
                        {"index": i, "message": {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                         "finish_reason": "tool_calls"} for i in range(n)],
            "usage": usage,
        }), media_type="application/json")

    async def models(request: Request) -> Response:
        names = ["fake-ok", "fake-slow", "fake-429", "fake-500", "fake-garbage", "fake-badlabel", "fake-strict",
                 "fake-401", "fake-hang", "fake-stall", "fake-flaky"]
        return Response(orjson.dumps({"object": "list", "data": [{"id": n, "object": "model"} for n in names]}),
                        media_type="application/json")

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/chat/completions", completions, methods=["POST"]),
        Route("/v1/models", models), Route("/models", models),
    ])


class Upstream(ServerThread):
    """The fake upstream served by uvicorn in a daemon thread on 127.0.0.1."""

    def __init__(self, latency_s: float = 0.0, slow_s: float = 2.0, port: int = 0, hang_s: float = 600.0,
                 seed: int | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.received_headers: list[dict[str, str]] = []
        super().__init__(create_upstream_app(self.received, latency_s, slow_s, hang_s, seed, self.received_headers),
                         port=port,
                         lifespan="off")
        self.api_base = f"{self.url}/v1"

    def start(self) -> Upstream:
        super().start()
        return self


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(create_upstream_app([], args.latency_ms / 1000), host=args.host, port=args.port,
                log_level="warning", access_log=False)

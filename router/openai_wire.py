"""OpenAI's wire format for chat completions: bodies and stream chunks as the official spec has them.

Two sources of answers reach callers:

- answers made here (a specialist's label, a canned answer, a structured rendering of either):
  `completion()` and `completion_chunks()` build them, every required field present (`logprobs`,
  `message.refusal` as null), `n` identical choices when asked;
- answers relayed from litellm: `relay_completion()` and `relay_chunk()` keep what the spec
  defines and drop litellm's own additions (`provider_specific_fields`, `citations`, ...) and the
  nulls the spec does not allow (`role: null` in a delta, `tool_calls: null`), while keeping the
  nulls it requires (`content`, `refusal`, `logprobs`, `finish_reason` in chunks).

`restamp()` gives a cached body its own `id` and `created`: each response is its own.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LocalAnswer",
    "completion",
    "completion_chunks",
    "label_logprobs",
    "new_completion_id",
    "relay_chunk",
    "relay_completion",
    "restamp",
]

_TOP = ("id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier")
_MESSAGE_OPTIONAL = ("tool_calls", "function_call", "annotations", "audio")
_DELTA_KEYS = ("role", "content", "refusal", "tool_calls", "function_call")
_FINISH = {"stop", "length", "tool_calls", "content_filter", "function_call"}


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """What a locally answered choice says: text content, or one forced tool call."""

    content: str | None
    tool_call: tuple[str, str] | None = None
    """(function name, JSON arguments) when the caller forced a tool call."""
    logprobs: dict[str, Any] | None = None
    """The choice's `logprobs` object when the caller asked for it (`{"content": [...], "refusal": None}`)."""

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_call is not None else "stop"


def _message(answer: LocalAnswer, call_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
    if answer.tool_call is not None:
        name, arguments = answer.tool_call
        message["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}}]
    return message


def completion(model: str, answer: LocalAnswer, n: int = 1, usage: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A non-streaming completion with `n` identical choices."""
    call_id = "call_" + uuid.uuid4().hex[:24]
    prompt = int((usage or {}).get("prompt_tokens", 0))
    completion_tokens = int((usage or {}).get("completion_tokens", 0))
    return {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": _message(answer, call_id), "logprobs": answer.logprobs,
                     "finish_reason": answer.finish_reason} for i in range(n)],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                  "total_tokens": prompt + completion_tokens},
    }


def completion_chunks(model: str, answer: LocalAnswer, n: int = 1, include_usage: bool = False,
                      usage: Mapping[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """The same answer as stream chunks: a delta with the content (or the tool call), then the finish."""
    base = {"id": new_completion_id(), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}
    call_id = "call_" + uuid.uuid4().hex[:24]
    for i in range(n):
        delta: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
        if answer.tool_call is not None:
            name, arguments = answer.tool_call
            delta["tool_calls"] = [{"index": 0, "id": call_id, "type": "function",
                                    "function": {"name": name, "arguments": arguments}}]
        yield {**base, "choices": [{"index": i, "delta": delta, "logprobs": answer.logprobs, "finish_reason": None}]}
    for i in range(n):
        yield {**base, "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": answer.finish_reason}]}
    if include_usage:
        prompt = int((usage or {}).get("prompt_tokens", 0))
        completion_tokens = int((usage or {}).get("completion_tokens", 0))
        yield {**base, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                                                "total_tokens": prompt + completion_tokens}}


def restamp(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored completion with its own id and creation time (a cache hit is a new response)."""
    return {**body, "id": new_completion_id(), "created": int(time.time())}


# ---- relayed answers ------------------------------------------------------------------------
def _clean(node: Any) -> Any:
    """Drop None values in nested objects (where the spec has no nullable fields: usage details)."""
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    if not isinstance(calls, list) or not calls:
        return None
    return [_clean(c) for c in calls if isinstance(c, dict)]


def _finish(value: Any, default: str | None) -> str | None:
    return value if isinstance(value, str) and value in _FINISH else default


def _top(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: data[k] for k in _TOP if data.get(k) is not None}
    if isinstance(out.get("usage"), dict):
        out["usage"] = _clean(out["usage"])
    return out


def relay_completion(data: Mapping[str, Any], model: str) -> dict[str, Any]:
    """litellm's `ModelResponse.model_dump()` -> a spec-shaped `chat.completion` named `model`."""
    out = _top(data)
    choices = []
    for i, choice in enumerate(data.get("choices") or []):
        msg = dict(choice.get("message") or {})
        message: dict[str, Any] = {"role": "assistant", "content": msg.get("content"),
                                   "refusal": msg.get("refusal")}
        for key in _MESSAGE_OPTIONAL:
            value = _tool_calls(msg.get(key)) if key == "tool_calls" else msg.get(key)
            if value is not None and value != []:
                message[key] = _clean(value)
        choices.append({"index": int(choice.get("index", i)), "message": message,
                        "logprobs": choice.get("logprobs"),
                        "finish_reason": _finish(choice.get("finish_reason"),
                                                 "tool_calls" if "tool_calls" in message else "stop")})
    out.update(object="chat.completion", model=model, choices=choices)
    return out


def relay_chunk(data: Mapping[str, Any], model: str) -> dict[str, Any]:
    """litellm's stream chunk dump -> a spec-shaped `chat.completion.chunk` named `model`."""
    out = _top(data)
    choices = []
    for i, choice in enumerate(data.get("choices") or []):
        raw = dict(choice.get("delta") or {})
        delta: dict[str, Any] = {}
        for key in _DELTA_KEYS:
            value = raw.get(key)
            if key == "tool_calls":
                value = _tool_calls(value)
            if value is not None:
                delta[key] = _clean(value) if isinstance(value, dict | list) else value
        choices.append({"index": int(choice.get("index", i)), "delta": delta,
                        "logprobs": choice.get("logprobs"),
                        "finish_reason": _finish(choice.get("finish_reason"), None)})
    out.update(object="chat.completion.chunk", model=model, choices=choices)
    return out


def label_logprobs(label: str, confidence: float, probabilities: Mapping[str, float] | None,
                   top: int) -> dict[str, Any]:
    """A `logprobs` object for a specialist's answer: its calibrated probability as the one token's."""

    def lp(p: float) -> float:
        return math.log(p) if p > 0 else -9999.0

    ranked: Sequence[tuple[str, float]] = sorted((probabilities or {label: confidence}).items(),
                                                 key=lambda kv: -kv[1])[:top]
    return {"content": [{"token": label, "logprob": lp(confidence), "bytes": list(label.encode()),
                         "top_logprobs": [{"token": t, "logprob": lp(p), "bytes": list(t.encode())}
                                          for t, p in ranked]}],
            "refusal": None}

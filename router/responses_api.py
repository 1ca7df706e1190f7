"""OpenAI's Responses API (`POST /v1/responses`) as a view of chat completions.

A Responses request is translated into a chat request (instructions -> a system message, input
items -> messages, `text.format` -> `response_format`, function tools and tool choice -> their
chat forms) and answered by the same routing as `/v1/chat/completions`: the same routes and
aliases, headers, caching, budgets and metrics. The chat answer is translated back into a
`response` object, or, when streaming, chat chunks become Responses events
(`response.created` ... `response.output_text.delta` ... `response.completed`).

Stateless only: `previous_response_id`, `conversation`, stored responses and item references
answer 400 naming the parameter (nothing is stored; `store` is accepted and reported as false).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .params import MAX_DESCRIPTION, MAX_MESSAGES, MAX_PARTS, MAX_TOKENS, MAX_TOOLS, FunctionName, JsonObject

__all__ = ["ResponsesRequest", "events_from_chunks", "response_from_completion", "to_chat_request"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class InputText(_Closed):
    type: Literal["input_text"]
    text: str


class OutputText(_Closed):
    type: Literal["output_text"]
    text: str
    annotations: list[JsonObject] | None = None
    logprobs: list[JsonObject] | None = None


class InputImage(_Closed):
    type: Literal["input_image"]
    image_url: Annotated[str, Field(pattern=r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")]
    detail: Literal["auto", "low", "high"] | None = None


class Refusal(_Closed):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | OutputText | InputImage | Refusal, Field(discriminator="type")]


class MessageItem(_Closed):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | Annotated[list[Part], Field(min_length=1, max_length=MAX_PARTS)]
    id: Annotated[str, Field(max_length=256)] | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    phase: str | None = None


class FunctionCallItem(_Closed):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    name: FunctionName
    arguments: str
    id: Annotated[str, Field(max_length=256)] | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(_Closed):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    output: str
    id: Annotated[str, Field(max_length=256)] | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


def _item_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("type", "message"))
    return str(getattr(value, "type", "message"))


Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_kind),
]


class FunctionTool(_Closed):
    type: Literal["function"]
    name: FunctionName
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class TextFormatText(_Closed):
    type: Literal["text"]


class TextFormatJsonObject(_Closed):
    type: Literal["json_object"]


class TextFormatJsonSchema(_Closed):
    type: Literal["json_schema"]
    name: FunctionName
    schema_: JsonObject = Field(alias="schema")
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] | None = None
    strict: bool | None = None


class TextConfig(_Closed):
    format: Annotated[TextFormatText | TextFormatJsonObject | TextFormatJsonSchema,
                      Field(discriminator="type")] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ToolChoiceFunction(_Closed):
    type: Literal["function"]
    name: FunctionName


class ResponsesRequest(_Closed):
    """The stateless subset of `CreateResponse` the gateway serves."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: Annotated[str, Field(min_length=1)] | Annotated[list[Item], Field(min_length=1, max_length=MAX_MESSAGES)]
    instructions: str | None = None
    stream: bool = False
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    text: TextConfig | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    metadata: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                        Field(max_length=16)] | None = None
    store: bool | None = None
    """Accepted for clients that always send it; nothing is stored (reported as false)."""
    truncation: Literal["disabled"] | None = None


def _parts_to_chat(content: str | list[Any]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for p in content:
        if isinstance(p, InputText | OutputText):
            parts.append({"type": "text", "text": p.text})
        elif isinstance(p, InputImage):
            image: dict[str, Any] = {"url": p.image_url}
            if p.detail is not None:
                image["detail"] = p.detail
            parts.append({"type": "image_url", "image_url": image})
        elif isinstance(p, Refusal):
            parts.append({"type": "refusal", "refusal": p.refusal})
    return parts


def to_chat_request(req: ResponsesRequest) -> dict[str, Any]:
    """The chat-completions request (as JSON) that answers `req`; validated again as a chat request."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        messages.append({"role": "user", "content": req.input})
    else:
        for item in req.input:
            if isinstance(item, MessageItem):
                content = _parts_to_chat(item.content)
                if item.role == "assistant" and isinstance(content, list):
                    content = " ".join(str(p.get("text", p.get("refusal", ""))) for p in content)
                messages.append({"role": item.role, "content": content})
            elif isinstance(item, FunctionCallItem):
                call = {"id": item.call_id, "type": "function",
                        "function": {"name": item.name, "arguments": item.arguments}}
                if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                    messages[-1]["tool_calls"].append(call)
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            else:
                messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    chat: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("max_output_tokens", "max_tokens"),
                     ("parallel_tool_calls", "parallel_tool_calls"), ("user", "user"), ("metadata", "metadata")):
        value = getattr(req, src)
        if value is not None:
            chat[dst] = value
    fmt = req.text.format if req.text is not None else None
    if isinstance(fmt, TextFormatJsonObject):
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, TextFormatJsonSchema):
        spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.description is not None:
            spec["description"] = fmt.description
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    if req.tools:
        chat["tools"] = [{"type": "function", "function": {
            k: v for k, v in (("name", t.name), ("description", t.description), ("parameters", t.parameters),
                              ("strict", t.strict)) if v is not None}} for t in req.tools]
        if isinstance(req.tool_choice, ToolChoiceFunction):
            chat["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
        elif req.tool_choice is not None:
            chat["tool_choice"] = req.tool_choice
    return chat


# ---- answers --------------------------------------------------------------------------------
def _envelope(req: ResponsesRequest, rid: str, created: int, status: str, output: list[dict[str, Any]],
              usage: dict[str, Any] | None) -> dict[str, Any]:
    fmt: dict[str, Any] = {"type": "text"}
    if req.text is not None and req.text.format is not None:
        fmt = req.text.format.model_dump(by_alias=True, exclude_none=True)
    tool_choice: Any = req.tool_choice.model_dump() if isinstance(req.tool_choice, ToolChoiceFunction) else (
        req.tool_choice or "auto")
    body: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": req.model,
        "output": output,
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "previous_response_id": None,
        "store": False,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": {"format": fmt},
        "tool_choice": tool_choice,
        "tools": [t.model_dump(exclude_none=True) | {"strict": bool(t.strict)} for t in req.tools or []],
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": "disabled",
        "metadata": dict(req.metadata or {}),
    }
    if usage is not None:
        body["usage"] = usage
    if status == "completed":
        body["completed_at"] = int(time.time())
    if req.user is not None:
        body["user"] = req.user
    return body


def _usage(chat_usage: Mapping[str, Any] | None) -> dict[str, Any]:
    u = chat_usage or {}
    prompt = int(u.get("prompt_tokens") or 0)
    completion = int(u.get("completion_tokens") or 0)
    cached = int(((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    reasoning = int(((u.get("completion_tokens_details") or {}).get("reasoning_tokens")) or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


def response_from_completion(req: ResponsesRequest, body: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion -> a `response` object (the first choice; Responses has no `n`)."""
    output: list[dict[str, Any]] = []
    choices = body.get("choices") or []
    message = (choices[0].get("message") or {}) if choices else {}
    content = message.get("content")
    if isinstance(content, str) and content:
        output.append(_message_item(_new_id("msg"), content))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        output.append(_call_item(_new_id("fc"), str(call.get("id") or _new_id("call")), str(fn.get("name", "")),
                                 str(fn.get("arguments", ""))))
    if not output:
        output.append(_message_item(_new_id("msg"), ""))
    return _envelope(req, _new_id("resp"), int(time.time()), "completed", output, _usage(body.get("usage")))


async def events_from_chunks(req: ResponsesRequest, chunks: AsyncIterator[dict[str, Any]]
                             ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Chat stream chunks -> (event type, event) of the Responses stream, numbered in order.

    Text deltas of the first choice become one message item; tool-call deltas become
    function_call items (arguments streamed as deltas). An error chunk (`{"error": ...}`) ends
    the stream with an `error` event.
    """
    rid, created = _new_id("resp"), int(time.time())
    seq = 0

    def ev(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        nonlocal seq
        event = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        return kind, event

    yield ev("response.created", response=_envelope(req, rid, created, "in_progress", [], None))
    yield ev("response.in_progress", response=_envelope(req, rid, created, "in_progress", [], None))
    output: list[dict[str, Any]] = []
    text_index: int | None = None
    text_id = _new_id("msg")
    text = ""
    calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> output item
    usage: Mapping[str, Any] | None = None
    async for chunk in chunks:
        if "error" in chunk and "choices" not in chunk:
            err = chunk["error"] or {}
            yield ev("error", code=err.get("code"), message=str(err.get("message", "error")), param=err.get("param"))
            return
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(piece, str) and piece:
                if text_index is None:
                    text_index = len(output)
                    output.append(_message_item(text_id, "", "in_progress"))
                    yield ev("response.output_item.added", output_index=text_index,
                             item={**_message_item(text_id, "", "in_progress"), "content": []})
                    yield ev("response.content_part.added", item_id=text_id, output_index=text_index,
                             content_index=0, part={"type": "output_text", "text": "", "annotations": [],
                                                    "logprobs": []})
                text += piece
                yield ev("response.output_text.delta", item_id=text_id, output_index=text_index, content_index=0,
                         delta=piece, logprobs=[])
            for call in delta.get("tool_calls") or []:
                idx = int(call.get("index", 0))
                fn = call.get("function") or {}
                item = calls.get(idx)
                if item is None:
                    item = _call_item(_new_id("fc"), str(call.get("id") or _new_id("call")), str(fn.get("name", "")),
                                      "", "in_progress")
                    item["_index"] = len(output)
                    calls[idx] = item
                    output.append(item)
                    yield ev("response.output_item.added", output_index=item["_index"],
                             item={k: v for k, v in item.items() if k != "_index"})
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    item["arguments"] += args
                    yield ev("response.function_call_arguments.delta", item_id=item["id"],
                             output_index=item["_index"], delta=args)
    final: list[dict[str, Any]] = []
    for i, item in enumerate(output):
        if item["type"] == "message":
            done = _message_item(text_id, text)
            part = done["content"][0]
            yield ev("response.output_text.done", item_id=text_id, output_index=i, content_index=0, text=text,
                     logprobs=[])
            yield ev("response.content_part.done", item_id=text_id, output_index=i, content_index=0, part=part)
        else:
            done = _call_item(item["id"], item["call_id"], item["name"], item["arguments"])
            yield ev("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                     name=item["name"], arguments=item["arguments"])
        yield ev("response.output_item.done", output_index=i, item=done)
        final.append(done)
    if not final:
        empty = _message_item(text_id, "")
        yield ev("response.output_item.added", output_index=0, item={**empty, "status": "in_progress",
                                                                     "content": []})
        yield ev("response.output_item.done", output_index=0, item=empty)
        final.append(empty)
    yield ev("response.completed", response=_envelope(req, rid, created, "completed", final, _usage(usage)))

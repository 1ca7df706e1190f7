"""Every answer of the OpenAI-compatible API validates against the official OpenAPI description.

One real gateway (uvicorn on 127.0.0.1, real Redis, litellm over HTTP to the local upstream)
serves each route kind on each path:

    classification  specialist / foundation / cache / degraded
    chat route      specialist (canned answer) / foundation / cache / 503 when the alias is down
    auto            foundation / cache / 503
    alias           foundation / cache / 502

and each answer — non-streaming completions, every stream chunk and the `[DONE]` terminator,
Responses API objects and stream events, models list and retrieve, errors — is checked with
`tests.openai_spec.violations` (0 violations expected).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_upstream import Upstream
from tests.openai_spec import requires_spec, sse_events, violations
from tests.server_thread import ServerThread

pytestmark = [pytest.mark.redis, requires_spec]

POSITIVE = "a gorgeous , witty , seductive movie ."


@pytest.fixture(scope="module")
def http(conformance_gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=conformance_gateway.url, timeout=30) as client:
        yield client


# (model, user text, expected x-router-path of the first call, of the same call again)
CASES: list[tuple[str, str, str, str]] = [
    ("sentiment", POSITIVE, "specialist", "specialist"),
    ("sentiment_hard", "the film runs two hours [[label:negative]]", "foundation", "cache"),
    ("sentiment_down", "the film runs two hours", "degraded", "degraded"),
    ("support", "hello", "specialist", "specialist"),
    ("support", "write me a poem about the sea and its waves", "foundation", "cache"),
    ("auto", "write a short story about a dragon who learns to bake", "foundation", "cache"),
    ("cheap", "hello there, how are you", "foundation", "cache"),
]
FAILING: list[tuple[str, int]] = [("support_down", 502), ("auto_down", 502), ("broken", 502),
                                  ("no-such-model", 404)]


def _ids(cases: list[Any]) -> list[str]:
    return [f"{c[0]}-{c[2]}" if len(c) > 2 else f"{c[0]}-{c[1]}" for c in cases]


def _chat(http: httpx.Client, model: str, text: str, **extra: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": text}], **extra})


def _check_stream(raw: bytes) -> list[dict[str, Any]]:
    events = sse_events(raw)
    assert events and events[-1] == (None, "[DONE]"), "a chat stream ends with data: [DONE]"
    chunks = [data for _, data in events[:-1]]
    for chunk in chunks:
        assert violations("CreateChatCompletionStreamResponse", chunk) == [], chunk
    return chunks


@pytest.mark.parametrize(("model", "text", "first", "again"), CASES, ids=_ids(CASES))
def test_completions_validate_on_every_route_kind_and_path(http: httpx.Client, model: str, text: str,
                                                           first: str, again: str) -> None:
    a = _chat(http, model, text, temperature=0)
    assert a.status_code == 200, a.text
    assert a.headers["x-router-path"] == first
    assert violations("CreateChatCompletionResponse", a.json()) == []
    b = _chat(http, model, text, temperature=0)
    assert b.headers["x-router-path"] == again
    assert violations("CreateChatCompletionResponse", b.json()) == []
    assert b.json()["id"] != a.json()["id"], "each response has its own id"


@pytest.mark.parametrize(("model", "text", "first", "again"), CASES, ids=_ids(CASES))
def test_stream_chunks_validate_on_every_route_kind_and_path(http: httpx.Client, model: str, text: str,
                                                             first: str, again: str) -> None:
    r = _chat(http, model, text, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200, r.text
    chunks = _check_stream(r.content)
    assert all(c["model"] == model for c in chunks)
    with_choices = [c for c in chunks if c["choices"]]
    assert all("finish_reason" in ch for c in with_choices for ch in c["choices"])
    assert with_choices[-1]["choices"][0]["finish_reason"] in ("stop", "tool_calls", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] >= 0
    text_out = "".join(ch["delta"].get("content") or "" for c in with_choices for ch in c["choices"])
    assert text_out


EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "error": "ResponseErrorEvent",
}


@pytest.mark.parametrize(("model", "text", "first", "again"), CASES, ids=_ids(CASES))
def test_responses_api_validates_on_every_route_kind_and_path(http: httpx.Client, model: str, text: str,
                                                              first: str, again: str) -> None:
    r = http.post("/v1/responses", json={"model": model, "input": text, "instructions": "be brief"})
    assert r.status_code == 200, r.text
    assert r.headers["x-router-path"] in (first, again)
    body = r.json()
    assert violations("Response", body) == []
    assert body["output"][0]["content"][0]["text"]
    s = http.post("/v1/responses", json={"model": model, "input": [{"role": "user", "content": text}],
                                         "stream": True})
    assert s.status_code == 200, s.text
    events = sse_events(s.content)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "response.output_text.delta" in kinds
    for kind, event in events:
        assert event["type"] == kind
        assert violations(EVENT_SCHEMAS[kind], event) == [], kind
        assert violations("ResponseStreamEvent", event) == [], kind
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    done = events[-1][1]["response"]
    assert done["status"] == "completed" and done["usage"]["total_tokens"] >= 0


@pytest.mark.parametrize(("model", "status"), FAILING, ids=_ids(FAILING))
def test_errors_validate(http: httpx.Client, model: str, status: int) -> None:
    text = "write me a poem about the sea and its waves"
    for path, body in (("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": text}]}),
                       ("/v1/responses", {"model": model, "input": text})):
        r = http.post(path, json=body)
        assert r.status_code == status, r.text
        assert violations("ErrorResponse", r.json()) == []


def test_models_list_and_retrieve_validate(http: httpx.Client) -> None:
    listed = http.get("/v1/models").json()
    assert violations("ListModelsResponse", listed) == []
    names = {m["id"] for m in listed["data"]}
    assert {"sentiment", "support", "auto", "cheap"} <= names
    one = http.get("/v1/models/sentiment")
    assert one.status_code == 200 and violations("Model", one.json()) == [] and one.json()["id"] == "sentiment"
    missing = http.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_specialist_answers_n_identical_choices_with_logprobs(http: httpx.Client) -> None:
    r = _chat(http, "sentiment", POSITIVE, n=3, logprobs=True, top_logprobs=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert violations("CreateChatCompletionResponse", body) == []
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {"positive"}
    lp = body["choices"][0]["logprobs"]["content"][0]
    confidence = float(r.headers["x-router-confidence"])
    assert lp["token"] == "positive" and abs(lp["logprob"] - __import__("math").log(confidence)) < 1e-3


def test_alias_forwards_n_and_user_where_the_provider_takes_it(http: httpx.Client, upstream_server: Upstream) -> None:
    meta = {"metadata": {"team": "a"}}
    r = _chat(http, "catalog", "two answers please", n=2, user="user-42", seed=7, **meta)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 2
    assert violations("CreateChatCompletionResponse", r.json()) == []
    sent = upstream_server.received[-1]
    assert sent["n"] == 2 and sent["user"] == "user-42" and "metadata" not in sent
    # litellm sends `user` to OpenAI's own models only (other OpenAI-compatible servers may reject it)
    _chat(http, "cheap", "two answers please", user="user-42")
    assert "user" not in upstream_server.received[-1]


SCHEMA = {"type": "object", "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
          "required": ["sentiment"], "additionalProperties": False}


def test_structured_output_rendered_from_the_specialist(http: httpx.Client) -> None:
    r = _chat(http, "sentiment", POSITIVE, response_format={
        "type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}})
    assert r.status_code == 200, r.text
    assert r.headers["x-router-path"] == "specialist"
    assert r.json()["choices"][0]["message"]["content"] == '{"sentiment":"positive"}'
    tool = {"type": "function", "function": {"name": "record", "parameters": SCHEMA}}
    t = _chat(http, "sentiment", POSITIVE, tools=[tool], tool_choice={"type": "function", "function": {"name": "record"}})
    assert t.status_code == 200, t.text
    assert violations("CreateChatCompletionResponse", t.json()) == []
    choice = t.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "record", "arguments": '{"sentiment":"positive"}'}
    s = _chat(http, "sentiment", POSITIVE, tools=[tool], tool_choice="required", stream=True)
    chunks = _check_stream(s.content)
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "record"


def test_structured_output_the_label_cannot_fill_goes_to_the_foundation_model(http: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"sentiment": {"type": "string"}, "score": {"type": "number"}},
              "required": ["sentiment", "score"]}
    r = _chat(http, "sentiment", POSITIVE, response_format={"type": "json_schema",
                                                             "json_schema": {"name": "v", "schema": schema}})
    assert r.status_code == 200, r.text
    assert (r.headers["x-router-path"], r.headers["x-router-reason"]) == ("foundation", "structured_output")
    assert violations("CreateChatCompletionResponse", r.json()) == []
    down = _chat(http, "sentiment_down", POSITIVE, response_format={"type": "json_schema",
                                                                    "json_schema": {"name": "v", "schema": schema}})
    assert down.status_code == 502 and violations("ErrorResponse", down.json()) == []


def test_conversation_without_a_user_message(http: httpx.Client, upstream_server: Upstream) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "developer", "content": POSITIVE}]
    alias = http.post("/v1/chat/completions", json={"model": "cheap", "messages": messages})
    assert alias.status_code == 200 and upstream_server.received[-1]["messages"][0]["role"] == "system"
    route = http.post("/v1/chat/completions", json={"model": "sentiment", "messages": messages})
    assert route.status_code == 200 and route.json()["choices"][0]["message"]["content"] == "positive"
    empty = http.post("/v1/chat/completions", json={"model": "sentiment", "messages": [
        {"role": "system", "content": " "}]})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"


def test_stateful_responses_parameters_are_a_clear_400(http: httpx.Client) -> None:
    r = http.post("/v1/responses", json={"model": "cheap", "input": "hi", "previous_response_id": "resp_1"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "previous_response_id" and "stateless" in err["message"]
    assert violations("ErrorResponse", r.json()) == []


def test_error_params_are_written_as_openai_does(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json={"model": "cheap", "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].role", r.json()
    t = http.post("/v1/chat/completions", json={"model": "cheap", "temperature": 3,
                                                "messages": [{"role": "user", "content": "x"}]})
    assert t.status_code == 400 and t.json()["error"]["param"] == "temperature"
    assert t.json()["error"]["code"] == "decimal_above_max_value"

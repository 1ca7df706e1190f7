"""Client compatibility matrix: openai-python and LangChain's ChatOpenAI, unchanged, against the gateway.

Each feature runs against one route of each kind: a classification route (`sentiment`, answered
by its specialist), a chat route (`support`, a canned answer), `auto` and an alias (`cheap`),
the last two answered by the foundation model through litellm. Structured output from a route is
rendered from the specialist's answer (no foundation call); the Vercel AI SDK's side of the
matrix is in `test_clients_node.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.openai_spec import requires_spec, violations
from tests.server_thread import ServerThread

pytestmark = [pytest.mark.redis]

# (model, prompt, the path that answers)
MATRIX: list[tuple[str, str, str]] = [
    ("sentiment", "a gorgeous , witty , seductive movie .", "specialist"),
    ("support", "hello", "specialist"),
    ("auto", "write a short story about a dragon who learns to bake", "foundation"),
    ("cheap", "say something nice", "foundation"),
]
IDS = [m[0] for m in MATRIX]


class Verdict(BaseModel):
    """What the caller wants back: one string field (a label fills it; so does a canned answer)."""

    answer: str


@pytest.fixture(scope="module")
def sdk(conformance_gateway: ServerThread) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=conformance_gateway.url + "/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


@pytest.mark.parametrize(("model", "prompt", "path"), MATRIX, ids=IDS)
def test_openai_create_and_stream_with_usage(sdk: openai.OpenAI, model: str, prompt: str, path: str) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-router-path"] in (path, "cache")
    assert raw.parse().choices[0].message.content
    stream = sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].choices == []


@pytest.mark.parametrize(("model", "prompt", "path"), MATRIX, ids=IDS)
def test_openai_parse_with_a_pydantic_model(sdk: openai.OpenAI, model: str, prompt: str, path: str) -> None:
    raw = sdk.chat.completions.with_raw_response.parse(model=model, messages=[{"role": "user", "content": prompt}],
                                                       response_format=Verdict)
    parsed = raw.parse().choices[0].message.parsed
    assert isinstance(parsed, Verdict) and parsed.answer
    assert raw.headers["x-router-path"] in (path, "cache")
    if model == "sentiment":
        assert parsed.answer == "positive"


@pytest.mark.parametrize(("model", "prompt", "path"), MATRIX, ids=IDS)
def test_openai_forced_tool_call(sdk: openai.OpenAI, model: str, prompt: str, path: str) -> None:
    tool: Any = {"type": "function", "function": {"name": "record", "description": "Record the answer.",
                                                  "parameters": Verdict.model_json_schema()}}
    completion = sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                             tools=[tool], tool_choice="required")
    calls = completion.choices[0].message.tool_calls
    assert calls and calls[0].type == "function" and calls[0].function.name == "record"
    assert Verdict.model_validate_json(calls[0].function.arguments).answer
    assert completion.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(("model", "prompt", "path"), MATRIX, ids=IDS)
def test_openai_responses_create_and_stream(sdk: openai.OpenAI, model: str, prompt: str, path: str) -> None:
    response = sdk.responses.create(model=model, input=prompt, instructions="Answer briefly.")
    assert response.status == "completed" and response.output_text
    events = list(sdk.responses.create(model=model, input=[{"role": "user", "content": prompt}], stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == events[-1].response.output_text


@requires_spec
@pytest.mark.parametrize(("model", "prompt", "path"), MATRIX, ids=IDS)
def test_openai_models_retrieve(sdk: openai.OpenAI, model: str, prompt: str, path: str) -> None:
    retrieved = sdk.models.retrieve(model)
    assert retrieved.id == model
    assert violations("Model", retrieved.model_dump(exclude_unset=True)) == []


# ---- LangChain -----------------------------------------------------------------------------
langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai is in the test extra")


def _chat_model(gateway: ServerThread, model: str, **kwargs: Any) -> Any:
    return langchain_openai.ChatOpenAI(model=model, base_url=gateway.url + "/v1", api_key="unused",  # type: ignore[arg-type]
                                       max_retries=0, **kwargs)


@pytest.mark.parametrize(("model", "prompt", "path"), MATRIX, ids=IDS)
def test_langchain_invoke_and_stream(conformance_gateway: ServerThread, model: str, prompt: str, path: str) -> None:
    llm = _chat_model(conformance_gateway, model)
    assert llm.invoke(prompt).content
    assert "".join(str(chunk.content) for chunk in llm.stream(prompt))


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
@pytest.mark.parametrize(("model", "prompt", "path"), MATRIX, ids=IDS)
def test_langchain_with_structured_output(conformance_gateway: ServerThread, model: str, prompt: str, path: str,
                                          method: str) -> None:
    structured = _chat_model(conformance_gateway, model).with_structured_output(Verdict, method=method)
    result = structured.invoke(prompt)
    assert isinstance(result, Verdict) and result.answer
    if model == "sentiment":
        assert result.answer == "positive"


@pytest.mark.parametrize(("model", "prompt", "path"), MATRIX, ids=IDS)
def test_langchain_responses_api(conformance_gateway: ServerThread, model: str, prompt: str, path: str) -> None:
    llm = _chat_model(conformance_gateway, model, use_responses_api=True)
    message = llm.invoke(prompt)
    assert message.text

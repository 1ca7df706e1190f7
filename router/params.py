"""The chat parameter surface: every shape a caller may send, and the allowlist of what reaches litellm.

A chat request is a closed set. Each accepted OpenAI parameter is declared here with its type
and range; any other name is refused with a 400 that names it (`schemas.ChatRequest` forbids
extras at every level, messages included). What goes to the foundation model is built from
`FORWARDED` only, never from what the caller sent as is, so nothing a caller writes can reach
litellm's own keyword arguments (`api_base`, `base_url`, `api_key`, `mock_response`,
`extra_headers`, `extra_body`, `custom_llm_provider`, `timeout`, `num_retries`, `fallbacks`,
`metadata`, ...). Those come from the policy alone, in `escalation.py`.

Every field of `ChatRequest` is either in `FORWARDED` or in `LOCAL` (used by the gateway, never
sent on); a test holds that split, so a new parameter has to be placed in one of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

__all__ = [
    "FORWARDED",
    "LOCAL",
    "MAX_N",
    "Message",
    "NonBlank",
    "ResponseFormat",
    "StreamOptions",
    "Tool",
    "ToolChoice",
    "message_text",
]

MAX_N = 8
"""Most choices one request may ask for (`n`), each billed by the provider."""
MAX_MESSAGES = 2048
MAX_PARTS = 64
MAX_TOOLS = 128
MAX_TOKENS = 1_000_000
MAX_NAME = 256
MAX_DESCRIPTION = 8192
MAX_STOP = 4
MAX_LOGIT_BIAS = 300
MAX_METADATA = 16

FORWARDED: tuple[str, ...] = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
)
"""Parameters passed to the foundation model (when set), after validation."""

LOCAL: tuple[str, ...] = ("model", "messages", "stream", "stream_options", "user", "metadata")
"""Parameters the gateway uses itself. `user` and `metadata` are accepted for OpenAI clients'
sake and never forwarded: litellm reads `metadata` as its own configuration, and per-caller
values would split the shared cache."""


class _Closed(BaseModel):
    # strict: "0.5" is not a temperature and 1 is not `true`, as in OpenAI's API.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank", "must contain text, not only whitespace")
    return text


NonBlank = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
"""A text that is more than whitespace: what a specialist or a paid model is asked about."""
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
JsonObject = Annotated[dict[str, Any], Field(max_length=256)]


# ---- messages ------------------------------------------------------------------------------
class TextPart(_Closed):
    type: Literal["text"]
    text: str


class ImageURL(_Closed):
    # Inline images only: a remote URL would be fetched by litellm for several providers, from
    # the gateway's network (a request forgery into the operator's network).
    url: Annotated[str, Field(pattern=r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")]
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Closed):
    type: Literal["image_url"]
    image_url: ImageURL


class RefusalPart(_Closed):
    type: Literal["refusal"]
    refusal: str


TextParts = Annotated[list[TextPart], Field(min_length=1, max_length=MAX_PARTS)]
UserParts = Annotated[
    list[Annotated[TextPart | ImagePart, Field(discriminator="type")]], Field(min_length=1, max_length=MAX_PARTS)
]
AssistantParts = Annotated[
    list[Annotated[TextPart | RefusalPart, Field(discriminator="type")]], Field(min_length=1, max_length=MAX_PARTS)
]


class FunctionCall(_Closed):
    name: FunctionName
    arguments: str


class ToolCall(_Closed):
    id: Name
    type: Literal["function"]
    function: FunctionCall


class SystemMessage(_Closed):
    role: Literal["system"]
    content: str | TextParts
    name: Name | None = None


class DeveloperMessage(_Closed):
    role: Literal["developer"]
    content: str | TextParts
    name: Name | None = None


class UserMessage(_Closed):
    role: Literal["user"]
    content: str | UserParts
    name: Name | None = None


class AssistantMessage(_Closed):
    role: Literal["assistant"]
    content: str | AssistantParts | None = None
    name: Name | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    refusal: str | None = None
    function_call: FunctionCall | None = None


class ToolMessage(_Closed):
    role: Literal["tool"]
    content: str | TextParts
    tool_call_id: Name


class FunctionMessage(_Closed):
    role: Literal["function"]
    name: FunctionName
    content: str | None = None


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]
Messages = Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]


def message_text(message: BaseModel) -> str:
    """The text of a message (text parts joined by spaces; images and refusals left out)."""
    content = getattr(message, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.text for p in content if isinstance(p, TextPart))
    return ""


# ---- sampling and output -------------------------------------------------------------------
class StreamOptions(_Closed):
    include_usage: bool | None = None


class FunctionDef(_Closed):
    name: FunctionName
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] | None = None
    parameters: JsonObject | None = None
    """A JSON Schema object; its content is the provider's to judge."""
    strict: bool | None = None


class Tool(_Closed):
    type: Literal["function"]
    function: FunctionDef


class _NamedFunction(_Closed):
    name: FunctionName


class NamedToolChoice(_Closed):
    type: Literal["function"]
    function: _NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class TextFormat(_Closed):
    type: Literal["text"]


class JsonObjectFormat(_Closed):
    type: Literal["json_object"]


class JsonSchemaSpec(_Closed):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    name: FunctionName
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] | None = None
    schema_: JsonObject | None = Field(None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(_Closed):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]
Stop = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
TokenId = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]
Bias = Annotated[float, Field(ge=-100, le=100)]
MetadataKey = Annotated[str, Field(min_length=1, max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]


class ChatParameters(_Closed):
    """The OpenAI parameters besides model/messages, each with its type and range."""

    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    stop: Stop | Annotated[list[Stop], Field(min_length=1, max_length=MAX_STOP)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: Annotated[dict[TokenId, Bias], Field(max_length=MAX_LOGIT_BIAS)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    user: Annotated[str, Field(max_length=MAX_NAME)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA)] | None = None

    def forwarded(self) -> dict[str, Any]:
        """The validated parameters the foundation model gets: `FORWARDED` names only, as plain JSON."""
        out: dict[str, Any] = {}
        for name in FORWARDED:
            value = getattr(self, name)
            if value is not None:
                out[name] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True, by_alias=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value

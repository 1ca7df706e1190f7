"""Wire formats: the classify API and the OpenAI chat-completions request, as closed pydantic models.

Both are closed sets: an unknown field is a 400 naming it, every accepted field is checked for
type and range (`params.py` declares the chat parameters and which of them reach the foundation
model). Inputs a specialist or a paid model would be asked about must hold text, not only
whitespace.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .params import ChatParameters, Message, Messages, NonBlank, UserMessage, message_text

__all__ = ["ChatRequest", "ClassifyRequest", "FieldError"]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    task: Annotated[str, Field(min_length=1, max_length=256)]
    """A classification route of the policy (e.g. `sentiment`)."""
    input: NonBlank | Annotated[list[NonBlank], Field(min_length=1)]
    """One text, or a batch of texts answered in order (the batch size is capped by settings)."""


class ChatRequest(ChatParameters):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Messages

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, v: list[Message]) -> list[Message]:
        if not any(isinstance(m, UserMessage) for m in v):
            raise ValueError("at least one message must have role 'user'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        # As OpenAI's API: options that only make sense together are refused alone.
        if self.stream_options is not None and not self.stream:
            raise _field_error("stream_options", "only allowed when stream is true")
        if self.top_logprobs is not None and not self.logprobs:
            raise _field_error("top_logprobs", "requires logprobs: true")
        if self.tools is None and self.tool_choice is not None:
            raise _field_error("tool_choice", "only allowed when tools are given")
        if self.tools is None and self.parallel_tool_calls is not None:
            raise _field_error("parallel_tool_calls", "only allowed when tools are given")
        return self

    def last_user_text(self) -> str:
        return next(message_text(m) for m in reversed(self.messages) if isinstance(m, UserMessage))

    def include_usage(self) -> bool:
        return bool(self.stream_options is not None and self.stream_options.include_usage)


class FieldError(ValueError):
    """A cross-field check that names the parameter at fault (`routes._parse` reads `param`)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def _field_error(param: str, message: str) -> FieldError:
    return FieldError(param, message)

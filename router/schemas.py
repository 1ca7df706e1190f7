"""Wire formats: the classify API and the OpenAI chat-completions request, as closed pydantic models.

Both are closed sets: an unknown field is a 400 naming it, every accepted field is checked for
type and range (`params.py` declares the chat parameters and which of them reach the foundation
model). Inputs a specialist or a paid model would be asked about must hold text, not only
whitespace.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .params import ChatParameters, Messages, NonBlank, UserMessage, message_text

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
        """The text a route's specialist reads: the last user message, else the last message with text.

        A conversation of system or developer messages only (valid in OpenAI's API) is classified
        by its last message; an empty result is the caller's 400, raised by the chat handler.
        """
        user = next((m for m in reversed(self.messages) if isinstance(m, UserMessage)), None)
        if user is not None:
            return message_text(user)
        return next((t for t in (message_text(m) for m in reversed(self.messages)) if t.strip()), "")

    def include_usage(self) -> bool:
        return bool(self.stream_options is not None and self.stream_options.include_usage)


class FieldError(ValueError):
    """A cross-field check that names the parameter at fault (`routes._parse` reads `param`)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def _field_error(param: str, message: str) -> FieldError:
    return FieldError(param, message)

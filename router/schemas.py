"""Wire formats: the classify API and the OpenAI chat-completions subset, as pydantic models.

Requests are validated strictly enough to answer bad input with a 400 that names the field, and
loosely enough that OpenAI clients' extra parameters (temperature, max_tokens, tools, ...) pass
through to the foundation model unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ChatMessage", "ChatRequest", "ClassifyRequest"]

NonEmptyText = Annotated[str, Field(min_length=1)]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: NonEmptyText
    """A classification route of the policy (e.g. `sentiment`)."""
    input: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]
    """One text, or a batch of texts answered in order."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: NonEmptyText
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(None, ge=1, le=1)

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" for m in v):
            raise ValueError("at least one message must have role 'user'")
        return v

    def last_user_text(self) -> str:
        return next(m.text() for m in reversed(self.messages) if m.role == "user")

    def passthrough_params(self) -> dict[str, Any]:
        """Parameters other than model/messages/stream that go to the foundation model."""
        extra = dict(self.model_extra or {})
        for key in ("user", "metadata"):
            extra.pop(key, None)
        return extra

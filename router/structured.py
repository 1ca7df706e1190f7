"""Structured output from a specialist: render its label to satisfy `response_format` or a forced tool.

OpenAI clients parse what they asked for (`parse()` with a Pydantic model, LangChain's
`with_structured_output`, the AI SDK's `generateObject`): a bare label breaks them. A label can
be rendered when the requested JSON schema admits it: an object whose only required property (or
only property) takes a string, and the label passes that property's `enum`/`const`/length/pattern
constraints. Anything richer (several required fields, numbers, nested objects) cannot be filled
from a label, and the request goes to the foundation model with reason `structured_output`.

    json_object                    -> {"label": <label>}
    json_schema {prop: string}     -> {<prop>: <label>}
    tool_choice forces function F  -> a tool call of F with the same rendering of F's parameters
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

__all__ = ["StructuredRequest", "render", "wants_structure"]


class StructuredRequest:
    """The structure-related fields of a chat request (already validated for shape)."""

    __slots__ = ("response_format", "tool_choice", "tools")

    def __init__(self, response_format: Mapping[str, Any] | None, tools: Sequence[Mapping[str, Any]] | None,
                 tool_choice: str | Mapping[str, Any] | None) -> None:
        self.response_format = response_format
        self.tools = tools or ()
        self.tool_choice = tool_choice


def _forced_tool(req: StructuredRequest) -> Mapping[str, Any] | None:
    """The function the caller forces, if any (`required` with one tool, or a named function)."""
    choice = req.tool_choice
    functions = [t.get("function") or {} for t in req.tools if t.get("type") == "function"]
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        return next((f for f in functions if f.get("name") == name), None)
    if choice == "required" and len(functions) == 1:
        return functions[0]
    return None


def wants_structure(req: StructuredRequest) -> bool:
    """True when a bare text answer would not satisfy the caller."""
    fmt = (req.response_format or {}).get("type")
    return fmt in ("json_object", "json_schema") or req.tool_choice == "required" or isinstance(
        req.tool_choice, Mapping)


def _admits(schema: Mapping[str, Any], value: str) -> bool:
    if "const" in schema:
        return bool(schema["const"] == value)
    if "enum" in schema:
        return value in schema["enum"]
    types = schema.get("type")
    if isinstance(types, list):
        ok = "string" in types
    elif types is None:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        return any(isinstance(o, Mapping) and _admits(o, value) for o in options)
    else:
        ok = types == "string"
    if not ok or "format" in schema:
        return False
    if len(value) < int(schema.get("minLength", 0)) or len(value) > int(schema.get("maxLength", len(value))):
        return False
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            return re.search(pattern, value) is not None
        except re.error:
            return False
    return True


def _fill(schema: Mapping[str, Any] | None, label: str) -> str | None:
    """JSON text of an object satisfying `schema` with the label in its one string property."""
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        return None
    props = schema.get("properties")
    if not isinstance(props, Mapping) or not props:
        return None
    required = [r for r in schema.get("required") or [] if isinstance(r, str)]
    if len(required) > 1:
        return None
    name = required[0] if required else (next(iter(props)) if len(props) == 1 else None)
    if name is None or name not in props or not isinstance(props[name], Mapping):
        return None
    if not _admits(props[name], label):
        return None
    return orjson.dumps({name: label}).decode()


def render(req: StructuredRequest, label: str) -> tuple[str | None, tuple[str, str] | None] | None:
    """(content, tool call) satisfying the request with `label`, or None when it cannot be done."""
    tool = _forced_tool(req)
    if req.tool_choice is not None and req.tool_choice not in ("auto", "none") and tool is None:
        return None
    if tool is not None:
        arguments = _fill(tool.get("parameters"), label)
        return None if arguments is None else (None, (str(tool.get("name")), arguments))
    fmt = req.response_format or {}
    kind = fmt.get("type")
    if kind == "json_object":
        return orjson.dumps({"label": label}).decode(), None
    if kind == "json_schema":
        content = _fill((fmt.get("json_schema") or {}).get("schema"), label)
        return None if content is None else (content, None)
    return label, None

"""Validate what the gateway answers against the official OpenAI OpenAPI description.

`../shared/specs/openai-openapi/openapi.json` (OpenAPI 3.1, JSON Schema 2020-12) is loaded once;
its older-style `nullable: true` is read as "null allowed" (SOURCE.md beside the file says so).
`violations(name, instance)` returns one line per schema violation (empty = valid); tests that
use it skip with a visible reason where `../shared` is absent.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "specs" / "openai-openapi" / "openapi.json"
_URI = "urn:openai-openapi"

requires_spec = pytest.mark.skipif(not SPEC.exists(), reason=f"{SPEC} not present (a fresh clone without "
                                   "../shared): OpenAI spec validation skipped")


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` -> JSON Schema's `anyOf [..., null]`."""
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@cache
def _registry() -> tuple[Registry, dict[str, Any]]:
    doc = _nullable(orjson.loads(SPEC.read_bytes()))
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    return Registry().with_resource(_URI, resource), doc


@cache
def _validator(name: str) -> Draft202012Validator:
    registry, doc = _registry()
    if name not in doc["components"]["schemas"]:
        raise KeyError(f"no schema {name!r} in the OpenAI spec")
    schema = {"$ref": f"{_URI}#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=registry)


def violations(name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the spec's schema `name` ('' path = the whole document)."""
    errors = sorted(_validator(name).iter_errors(copy.deepcopy(instance)), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors]


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) for each server-sent event; data `[DONE]` is kept as the string."""
    out: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        text = "\n".join(data)
        out.append((event, text if text == "[DONE]" else orjson.loads(text)))
    return out

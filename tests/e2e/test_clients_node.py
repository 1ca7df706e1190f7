"""Client compatibility matrix, Node side: the Vercel AI SDK (`ai` 6) against the gateway.

`tests/node/matrix.mjs` runs `generateText`, `streamText` and `generateObject` with the default
OpenAI provider (`openai(model)`, which speaks the Responses API) and with
`@ai-sdk/openai-compatible` (chat completions), against one route of each kind. Runs where
Node.js is installed (`.ci/run` installs it when missing); the packages come from
`tests/node/package-lock.json` with `npm ci`. Elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.server_thread import ServerThread

pytestmark = [pytest.mark.redis]

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
MATRIX: list[tuple[str, str, str | None]] = [
    ("sentiment", "a gorgeous , witty , seductive movie .", "positive"),
    ("support", "hello", "Hello! How can I help you today?"),
    ("auto", "write a short story about a dragon who learns to bake", None),
    ("cheap", "say something nice", None),
]
CALLS = [f"{provider}.{call}" for provider in ("openai", "compatible")
         for call in ("generateText", "streamText", "generateObject")]


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js is missing in CI (.ci/run installs it)")
        pytest.skip("Node.js is not installed: the Vercel AI SDK matrix runs where it is (.ci/run installs it)")
    if not (NODE_DIR / "node_modules" / "ai").exists():
        npm = shutil.which("npm")
        result = subprocess.run([npm or "npm", "ci", "--no-audit", "--no-fund"], check=False, cwd=NODE_DIR, capture_output=True,
                                text=True, timeout=300) if npm else None
        if result is None or result.returncode != 0:
            reason = "npm ci failed in tests/node: " + ((result.stderr or "")[-500:] if result else "npm missing")
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    return binary


@pytest.mark.parametrize(("model", "prompt", "expected"), MATRIX, ids=[m[0] for m in MATRIX])
def test_vercel_ai_sdk(node: str, conformance_gateway: ServerThread, model: str, prompt: str,
                       expected: str | None) -> None:
    run = subprocess.run([node, "matrix.mjs", conformance_gateway.url + "/v1", model], check=False,
                         cwd=NODE_DIR, capture_output=True, text=True, timeout=120, env={**os.environ, "PROMPT": prompt})
    assert run.returncode == 0, run.stderr[-2000:]
    results: dict[str, Any] = orjson.loads(run.stdout.strip().splitlines()[-1])
    failed = {call: r["error"] for call, r in results.items() if not r["ok"]}
    assert failed == {}
    assert sorted(results) == sorted(CALLS)
    for call, r in results.items():
        value = r["value"]
        if call.endswith("generateObject"):
            assert isinstance(value, dict) and isinstance(value["answer"], str) and value["answer"]
            if expected is not None:
                assert value["answer"] == expected
        else:
            assert isinstance(value, str) and value
            if expected is not None:
                assert value == expected

"""A replay upstream for the learning-loop tests: the fake upstream answering from a table.

`OracleUpstream(answers)` serves `tests.fake_upstream`'s app behind a thin ASGI layer: when the
last user message of a request is a text in `answers`, the request reaches the fake as if that
text carried the marker ``[[label:X]]`` with the table's label, so the fake answers it (a real
replay of recorded answers: gold labels for a strong foundation model, wrong ones for a weak
one). Other texts get the fake's usual first label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tests.fake_upstream import create_upstream_app
from tests.server_thread import ServerThread


class _Replay:
    def __init__(self, app: Any, answers: Mapping[str, str]) -> None:
        self._app = app
        self._answers = answers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = orjson.loads(b"".join(chunks))
        users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1].get("content"), str) and users[-1]["content"] in self._answers:
            users[-1]["content"] += f" [[label:{self._answers[users[-1]['content']]}]]"
        data = orjson.dumps(body)
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(data)).encode())]}
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}

        await self._app(scope, replay, send)


class OracleUpstream(ServerThread):
    def __init__(self, answers: Mapping[str, str]) -> None:
        self.received: list[dict[str, Any]] = []
        super().__init__(_Replay(create_upstream_app(self.received), answers), lifespan="off")
        self.api_base = f"{self.url}/v1"

    def start(self) -> OracleUpstream:
        super().start()
        return self

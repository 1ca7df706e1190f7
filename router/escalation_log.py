"""The escalation log: one Redis stream entry per foundation answer, for the learning loop.

Stream ``gw:v1:escalations`` (capped at the policy's `max_entries`, approximately). An entry holds
route, reason, the specialist's label and confidence, the foundation's label, alias, policy and
specialist versions, the request id (as in the access log and the upstream's `x-request-id`) and
a timestamp; the input text only when the policy's `escalation_log.keep_inputs` or the route's
`keep_inputs` is on, and then entries older than `input_ttl_s` are trimmed. Writes happen off the
request path and fail open; with no Redis there is no log.

`kind` tells the two sources apart: `escalation` (the specialist was unsure, the foundation
model answered the caller) and `shadow` (the specialist answered confidently; a sampled shadow
check asked the foundation model too, off the request path). `hybrid-router distill` learns from
the first and measures the foundation model with the second.
"""

from __future__ import annotations

import asyncio
import time

from .access import current
from .policy import EscalationLog as EscalationLogPolicy
from .redis_state import RedisState

__all__ = ["STREAM", "EscalationLog"]

STREAM = "gw:v1:escalations"
_MAX_PENDING = 256


class EscalationLog:
    def __init__(self, state: RedisState | None) -> None:
        self._state = state
        self._pending: set[asyncio.Task[bool]] = set()

    def record(self, policy: EscalationLogPolicy, *, route: str, reason: str, specialist_label: str | None,
               confidence: float | None, foundation_label: str, alias: str, policy_version: str,
               specialist_version: str | None, text: str, keep_input: bool = False,
               kind: str = "escalation") -> None:
        if self._state is None or not policy.enabled or len(self._pending) >= _MAX_PENDING:
            return
        fields: dict[str, str | float] = {
            "route": route, "reason": reason, "specialist_label": specialist_label or "",
            "confidence": -1.0 if confidence is None else round(confidence, 6), "foundation_label": foundation_label,
            "alias": alias, "policy_version": policy_version, "specialist_version": specialist_version or "",
            "ts": round(time.time(), 3), "kind": kind,
        }
        ctx = current()
        fields["request_id"] = ctx.request_id if ctx is not None else ""
        min_id = None
        if policy.keep_inputs or keep_input:
            fields["text"] = text
            min_id = f"{int((time.time() - policy.input_ttl_s) * 1000)}-0"
        task = asyncio.get_running_loop().create_task(
            self._state.append_stream(STREAM, fields, policy.max_entries, min_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

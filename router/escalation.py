"""Foundation-model calls through litellm: the only module that imports litellm.

`Escalator` owns one `AliasClient` per policy alias: the resolved model, key and price name, a
concurrency limit with a bounded wait queue, and a consecutive-failure circuit breaker. A call
walks the alias and then its fallbacks; each attempt gets the alias timeout and up to
`max_retries` retries with exponential backoff and jitter for retryable failures (timeouts, 429,
5xx, connection errors). litellm's own errors are translated here, with ``raise ... from``:

    all options timed out            -> UpstreamTimeoutError (504)
    all options rate limited / full  -> RateLimitedError (429, Retry-After)
    no option configured or breakers -> ServiceUnavailableError (503, Retry-After)
    anything else                    -> UpstreamError (502)

litellm is imported once, off the event loop, at start-up (`start()`), with the price table that
ships with the pinned version (`LITELLM_LOCAL_MODEL_COST_MAP`) and offline mode on, so nothing
leaves the network unasked. Costs come from the same bundled table via `pricing.PriceTable`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .access import current
from .errors import (
    GatewayError,
    RateLimitedError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from .policy import AliasSpec
from .pricing import PriceTable
from .settings import FoundationSettings

__all__ = ["AliasClient", "ChatResult", "Escalator", "InvalidLabelError", "LabelResult", "Usage"]

log = logging.getLogger("router.escalation")

_CLASSIFY_SYSTEM = (
    "You are a text classifier. Classify the user's text into exactly one of these labels: {labels}. "
    "Reply with the label only, exactly as written, and nothing else."
)


class InvalidLabelError(UpstreamError):
    code = "invalid_label"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class LabelResult:
    label: str
    alias: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class ChatResult:
    body: dict[str, Any]
    alias: str
    usage: Usage


@dataclass
class _Breaker:
    failures: int
    reset_s: float
    consecutive: int = 0
    open_until: float = 0.0

    def allows(self) -> bool:
        return self.consecutive < self.failures or time.monotonic() >= self.open_until

    def record(self, ok: bool) -> str | None:
        """Count an attempt; returns "opened" or "closed" when the state changes."""
        was_open = self.consecutive >= self.failures
        if ok:
            self.consecutive = 0
            return "closed" if was_open else None
        self.consecutive += 1
        if self.consecutive >= self.failures:
            self.open_until = time.monotonic() + self.reset_s
            return "opened"  # also a failed trial call after the reset time: open again
        return None


@dataclass
class AliasClient:
    name: str
    spec: AliasSpec
    model: str | None
    api_base: str | None
    api_key: str | None
    price_as: str | None
    breaker: _Breaker
    semaphore: asyncio.Semaphore
    waiting: int = 0
    supports_schema: bool = False
    warned_price: bool = field(default=False)

    @property
    def configured(self) -> bool:
        return self.model is not None


Outcome = Callable[[str, str], None]
"""(alias, outcome) -> None: metrics hook for every attempt."""


class Escalator:
    def __init__(
        self,
        aliases: Mapping[str, AliasSpec],
        env_foundation: FoundationSettings,
        read_secret: Callable[[str], str | None],
        on_outcome: Outcome,
        prices: PriceTable,
    ) -> None:
        self._on_outcome = on_outcome
        self._prices = prices
        self._read_secret = read_secret
        self._env = env_foundation
        self._litellm: Any = None
        self._loading: asyncio.Task[None] | None = None
        self.clients: dict[str, AliasClient] = {}
        self.configure(aliases)

    # ---- life cycle -------------------------------------------------------------------------
    def configure(self, aliases: Mapping[str, AliasSpec]) -> None:
        """(Re)build alias clients, e.g. after a policy reload. Unchanged aliases keep their state."""
        clients: dict[str, AliasClient] = {}
        for name, spec in aliases.items():
            old = self.clients.get(name)
            if old is not None and old.spec == spec:
                clients[name] = old
                continue
            uses_env = spec.model is None
            key = self._read_secret(spec.api_key_env) if spec.api_key_env else None
            if key is None and uses_env and self._env.api_key is not None:
                key = self._env.api_key.get_secret_value()
            clients[name] = AliasClient(
                name=name,
                spec=spec,
                model=self._env.model if uses_env else spec.model,
                api_base=spec.api_base or (self._env.api_base if uses_env else None),
                api_key=key,
                price_as=spec.price_as or (self._env.price_as if uses_env else None),
                breaker=_Breaker(spec.breaker_failures, spec.breaker_reset_s),
                semaphore=asyncio.Semaphore(spec.max_concurrency),
            )
        for client in clients.values():
            price = self._prices.get(client.model)
            client.supports_schema = price is not None and price.supports_response_schema
        self.clients = clients

    def any_configured(self) -> bool:
        return any(c.configured for c in self.clients.values())

    def start(self) -> None:
        """Import litellm in a worker thread; requests that need it wait for it."""
        if self._loading is None and self.any_configured():
            self._loading = asyncio.get_running_loop().create_task(asyncio.to_thread(self._import))

    def _import(self) -> None:
        # Before the first import: the bundled price table, no network fetches, no telemetry.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
        os.environ.setdefault("LITELLM_TELEMETRY", "False")
        t0 = time.perf_counter()
        import litellm

        from .logs import quiet_libraries

        litellm.suppress_debug_info = True
        litellm.drop_params = True
        quiet_libraries()  # litellm's import attached its own log handler
        self._litellm = litellm
        log.info("litellm %s loaded in %.2fs", getattr(litellm, "version", "?"), time.perf_counter() - t0)

    async def wait_loaded(self) -> None:
        """Return once the background litellm import (if one was started) has finished."""
        if self._loading is not None:
            await asyncio.shield(self._loading)

    @property
    def ready(self) -> bool:
        return self._litellm is not None or not self.any_configured()

    async def _lib(self) -> Any:
        if self._litellm is None:
            if self._loading is None:
                self.start()
            if self._loading is not None:
                await asyncio.shield(self._loading)
        return self._litellm

    # ---- public calls -----------------------------------------------------------------------
    def available(self, alias: str | None) -> bool:
        """True when the alias or one of its fallbacks is configured and its breaker is closed."""
        return any(c.configured and c.breaker.allows() for c in self._chain(alias))

    async def classify(
        self, alias: str, labels: Sequence[str], text: str, prompt: str | None, deadline_s: float | None = None
    ) -> LabelResult:
        """Ask for one label of `labels`; only an allowed label is accepted."""
        if prompt is None:
            messages = [
                {"role": "system", "content": _CLASSIFY_SYSTEM.format(labels=", ".join(labels))},
                {"role": "user", "content": text},
            ]
        else:
            messages = [{"role": "user", "content": prompt.replace("{labels}", ", ".join(labels))
                         .replace("{input}", text)}]

        async def attempt(client: AliasClient) -> LabelResult:
            params: dict[str, Any] = {"temperature": 0, "max_tokens": client.spec.max_tokens or 32}
            mode = client.spec.structured_output
            if mode == "json_schema" or (mode == "auto" and client.supports_schema):
                params["response_format"] = _label_schema(labels)
            resp = await self._call(client, messages, params)
            content = _content(resp)
            label = _parse_label(content, labels)
            if label is None:
                self._on_outcome(client.name, "invalid_label")
                raise InvalidLabelError(f"foundation alias {client.name!r} answered outside the label set")
            return LabelResult(label, client.name, self._usage(client, resp))

        result: LabelResult = await self._within(deadline_s, alias, attempt)
        return result

    async def chat(self, alias: str, messages: list[dict[str, Any]], params: dict[str, Any],
                   deadline_s: float | None = None) -> ChatResult:
        async def attempt(client: AliasClient) -> ChatResult:
            resp = await self._call(client, messages, params)
            return ChatResult(resp.model_dump(exclude_none=True), client.name, self._usage(client, resp))

        result: ChatResult = await self._within(deadline_s, alias, attempt)
        return result

    async def stream(
        self, alias: str, messages: list[dict[str, Any]], params: dict[str, Any], deadline_s: float | None = None
    ) -> tuple[str, AsyncIterator[dict[str, Any]], Callable[[], Usage]]:
        """Open a stream (with fallbacks while nothing has been sent); yields chunk dicts.

        Returns the alias used, the chunk iterator and a function giving the usage once the
        stream is finished (from the provider's final usage chunk).
        """
        box: dict[str, Any] = {}

        async def attempt(client: AliasClient) -> tuple[str, AsyncIterator[dict[str, Any]]]:
            wrapper = await self._call(
                client, messages, {**params, "stream": True, "stream_options": {"include_usage": True}}
            )
            return client.name, self._chunks(client, wrapper, box)

        used, chunks = await self._within(deadline_s, alias, attempt)
        return used, chunks, lambda: box.get("usage", Usage())

    async def _chunks(
        self, client: AliasClient, wrapper: Any, box: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in wrapper:
                data = chunk.model_dump(exclude_none=True)
                usage = data.get("usage")
                if usage:
                    box["usage"] = self._usage_from(client, usage.get("prompt_tokens", 0),
                                                    usage.get("completion_tokens", 0))
                yield data
        except Exception as exc:
            raise self._translate(client, exc) from exc

    def estimate_cost(self, alias: str | None, prompt_tokens: int, completion_tokens: int) -> float:
        """What a call to `alias` would cost, from litellm's price table (0.0 when unknown)."""
        client = self.clients.get(alias) if alias else None
        if client is None or client.model is None:
            return 0.0
        return self._usage_from(client, prompt_tokens, completion_tokens).cost_usd

    # ---- machinery --------------------------------------------------------------------------
    def _chain(self, alias: str | None) -> list[AliasClient]:
        if alias is None or alias not in self.clients:
            return []
        names = [alias, *self.clients[alias].spec.fallbacks]
        return [self.clients[n] for n in dict.fromkeys(names) if n in self.clients]

    async def _within(self, deadline_s: float | None, alias: str, attempt: Callable[[AliasClient], Any]) -> Any:
        """`_with_fallbacks` under one deadline for the whole walk (retries, backoff, queueing and
        fallbacks included). Past it the call in flight is cancelled (its concurrency slot is
        released) and the caller gets a 504 naming the alias it was waiting for."""
        if deadline_s is None:
            return await self._with_fallbacks(alias, attempt)
        current = [alias]

        def tracked(client: AliasClient) -> Any:
            current[0] = client.name
            return attempt(client)

        bound = asyncio.timeout(max(0.0, deadline_s))
        try:
            async with bound:
                return await self._with_fallbacks(alias, tracked)
        except TimeoutError as exc:
            if not bound.expired():
                raise
            self._on_outcome(current[0], "deadline")
            raise UpstreamTimeoutError(f"foundation alias {current[0]!r} did not answer before the request's "
                                       "deadline", code="deadline_exceeded") from exc

    async def _with_fallbacks(self, alias: str, attempt: Callable[[AliasClient], Any]) -> Any:
        errors: list[GatewayError] = []
        for client in self._chain(alias):
            if not client.configured:
                errors.append(ServiceUnavailableError(f"foundation alias {client.name!r} has no model configured",
                                                      retry_after_s=30))
                continue
            if not client.breaker.allows():
                self._on_outcome(client.name, "breaker_open")
                errors.append(ServiceUnavailableError(f"foundation alias {client.name!r} is failing; "
                                                      "circuit open", retry_after_s=client.spec.breaker_reset_s))
                continue
            if client.waiting >= client.spec.max_queue and client.semaphore.locked():
                self._on_outcome(client.name, "queue_full")
                errors.append(RateLimitedError(f"foundation alias {client.name!r} is at its concurrency "
                                               "limit", retry_after_s=1))
                continue
            ctx = current()
            if ctx is not None:
                ctx.alias = client.name
            try:
                client.waiting += 1
                try:
                    await client.semaphore.acquire()
                finally:
                    client.waiting -= 1
                try:
                    result = await attempt(client)
                finally:
                    client.semaphore.release()
            except GatewayError as exc:
                self._breaker_log(client, client.breaker.record(ok=False))
                errors.append(exc)
                continue
            self._breaker_log(client, client.breaker.record(ok=True))
            return result
        if not errors:
            raise ServiceUnavailableError("no foundation model is configured for this route", retry_after_s=30)
        raise _summarize(errors)

    def _breaker_log(self, client: AliasClient, change: str | None) -> None:
        if change == "opened":
            log.warning("breaker opened: foundation alias %r refuses calls for %.0fs after %d failures in a row",
                        client.name, client.spec.breaker_reset_s, client.breaker.consecutive,
                        extra={"alias": client.name, "event": "breaker_opened"})
        elif change == "closed":
            log.warning("breaker closed: foundation alias %r answers again", client.name,
                        extra={"alias": client.name, "event": "breaker_closed"})

    def breakers_open(self) -> dict[str, bool]:
        """Alias -> True from its breaker's opening until a call succeeds again (this process)."""
        return {n: c.breaker.consecutive >= c.breaker.failures for n, c in self.clients.items() if c.configured}

    def unavailable_cause(self, alias: str | None) -> str:
        """Why `alias` (with its fallbacks) cannot be called now, for a 503's message."""
        chain = self._chain(alias)
        if not chain or not any(c.configured for c in chain):
            return f"no foundation model is configured for alias {alias!r}"
        waits = [c.breaker.open_until - time.monotonic() for c in chain if c.configured and not c.breaker.allows()]
        if waits:
            return (f"the circuit breaker of foundation alias {alias!r} is open after repeated failures "
                    f"(retry in {max(1, round(min(waits)))} s)")
        return f"foundation alias {alias!r} is unavailable"

    async def _call(self, client: AliasClient, messages: list[dict[str, Any]], params: dict[str, Any]) -> Any:
        litellm = await self._lib()
        spec = client.spec
        ctx = current()
        # Set here only, never from the caller's parameters: the provider can match its logs to ours.
        headers = {"x-request-id": ctx.request_id} if ctx is not None else None
        for attempt_no in range(spec.max_retries + 1):
            try:
                async with asyncio.timeout(spec.timeout_s + 1.0):
                    resp = await litellm.acompletion(
                        model=client.model,
                        messages=messages,
                        api_base=client.api_base,
                        api_key=client.api_key or "unused",
                        timeout=spec.timeout_s,
                        num_retries=0,
                        **{**params, "extra_headers": headers},
                    )
                self._on_outcome(client.name, "ok")
                return resp
            except Exception as exc:  # translated below; litellm raises many unrelated classes
                err = self._translate(client, exc)
                retryable = isinstance(err, UpstreamTimeoutError | RateLimitedError) or (
                    type(err) is UpstreamError and getattr(exc, "status_code", 500) >= 500
                )
                last = not retryable or attempt_no == spec.max_retries
                # The exception's class and status only: its text can quote the upstream's body.
                status = getattr(exc, "status_code", None)
                log.warning("foundation call failed: alias %r, %s (%s%s)%s", client.name, err.code, type(exc).__name__,
                            f" {status}" if status else "",
                            "" if last else ", retrying",
                            extra={"alias": client.name, "event": "foundation_failed", "outcome": err.code,
                                   "attempt": attempt_no + 1})
                if last:
                    raise err from exc
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt_no) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _translate(self, client: AliasClient, exc: BaseException) -> GatewayError:
        name = type(exc).__name__
        status = getattr(exc, "status_code", None)
        if isinstance(exc, TimeoutError) or name in ("Timeout", "APITimeoutError"):
            self._on_outcome(client.name, "timeout")
            return UpstreamTimeoutError(f"foundation alias {client.name!r} timed out")
        if name == "RateLimitError" or status == 429:
            self._on_outcome(client.name, "rate_limited")
            return RateLimitedError(f"foundation alias {client.name!r} is rate limited upstream", retry_after_s=1)
        self._on_outcome(client.name, "error")
        return UpstreamError(f"foundation alias {client.name!r} failed ({name}{f' {status}' if status else ''})")

    def _usage(self, client: AliasClient, resp: Any) -> Usage:
        usage = getattr(resp, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        return self._usage_from(client, prompt, completion, cached)

    def _usage_from(self, client: AliasClient, prompt: int, completion: int, cached: int = 0) -> Usage:
        price = self._prices.get(client.price_as or client.model)
        if price is None:
            if not client.warned_price:
                log.warning("no price for alias %r in litellm's table; set price_as", client.name)
                client.warned_price = True
            return Usage(prompt, completion, 0.0)
        return Usage(prompt, completion, price.cost(prompt, completion, cached))


def _summarize(errors: list[GatewayError]) -> GatewayError:
    for kind in (UpstreamTimeoutError, RateLimitedError, InvalidLabelError, UpstreamError):
        if all(isinstance(e, kind | ServiceUnavailableError) for e in errors) and any(
            isinstance(e, kind) for e in errors
        ):
            return next(e for e in reversed(errors) if isinstance(e, kind))
    return errors[-1]


def _label_schema(labels: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "classification",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": list(labels)}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
    }


def _content(resp: Any) -> str:
    try:
        return str(resp.choices[0].message.content or "")
    except (AttributeError, IndexError, TypeError):
        return ""


_STRIP = re.compile(r"^[\s\"'`*.:]+|[\s\"'`*.:]+$")


def _parse_label(content: str, labels: Sequence[str]) -> str | None:
    """The label in a reply: JSON {"label": ...} or bare text; exact, then case-insensitive."""
    text = content.strip()
    if text.startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("label"), str):
            text = data["label"]
    text = _STRIP.sub("", text)
    if text in labels:
        return text
    folded = {label.casefold(): label for label in labels}
    return folded.get(text.casefold())

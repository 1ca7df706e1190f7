"""Foundation-model calls through litellm: the only module that imports litellm.

`Escalator` owns one `AliasClient` per policy alias: the resolved model, key and price name, a
concurrency limit with a bounded wait queue, and a consecutive-failure circuit breaker. A call
walks the alias and then its fallbacks; each attempt gets the alias timeout and up to
`max_retries` retries with exponential backoff and jitter for retryable failures. litellm's
exceptions are sorted by class and provider status (never by what a caller can influence), and
only upstream faults count toward a breaker, so no caller can switch an alias off for others:

    outcome        cause                                  caller gets           retried fallback breaker
    timeout        timeout, 408, 504                      504 upstream_timeout  yes     yes      counts
    error          connection error, 5xx, garbage         502 upstream_error    yes     yes      counts
    refused        401/402/403/404: our key or model      502 upstream_refused  no      yes      counts
    rate_limited   429                                    429 rate_limited      yes     yes      -
    rejected       400/413/422, other 4xx: the request    400 upstream_rejected no      no       -
    invalid_label  an answer outside the label set        degraded or the fallback (route policy) -
    (a bug)        an exception that is not litellm's     500, logged           no      no       -

With several options failing the caller gets the most telling error (all timed out: 504; all
rate limited or full: 429; no option configured or all breakers open: 503 with Retry-After).

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
from enum import Enum
from typing import Any

import orjson

from .access import current
from .errors import (
    GatewayError,
    RateLimitedError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRefusedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from .params import FORWARDED
from .policy import AliasSpec
from .pricing import PriceTable
from .settings import FoundationSettings

__all__ = ["AliasClient", "ChatResult", "Escalator", "InvalidLabelError", "LabelResult", "Usage"]

log = logging.getLogger("router.escalation")

_ALLOWED = frozenset(FORWARDED) | {"stream", "stream_options"}
"""Keyword arguments of `acompletion` besides the ones the policy sets (model, key, base, limits)."""

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
        # litellm's own debug and info lines quote whole requests (prompts): never below WARNING.
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        litellm.drop_params = True
        quiet_libraries()  # litellm's import attached its own log handler (a second copy of each line)
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
        self, alias: str, labels: Sequence[str], text: str, prompt: str | None, fallback_on_invalid: bool = True,
        deadline_s: float | None = None,
    ) -> LabelResult:
        """Ask for one label of `labels`; only an allowed label is accepted.

        An answer outside the set is outcome `invalid_label`: never a breaker failure; the next
        alias of the chain is asked when `fallback_on_invalid` (the route's `on_invalid_label`).
        """
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

        result: LabelResult = await self._within(deadline_s, alias, attempt, fallback_on_invalid)
        return result

    async def chat(self, alias: str, messages: list[dict[str, Any]], params: dict[str, Any],
                   deadline_s: float | None = None) -> ChatResult:
        async def attempt(client: AliasClient) -> ChatResult:
            resp = await self._call(client, messages, params)
            return ChatResult(resp.model_dump(), client.name, self._usage(client, resp))

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
                data = chunk.model_dump()
                usage = data.get("usage")
                if usage:
                    box["usage"] = self._usage_from(client, usage.get("prompt_tokens", 0),
                                                    usage.get("completion_tokens", 0))
                yield data
        except Exception as exc:
            if not _from_provider(exc):
                log.error("bug while streaming from alias %s: %s", client.name, type(exc).__name__, exc_info=exc)
                raise GatewayError("internal error while streaming the answer") from exc
            raise self._translate(client, exc)[0] from exc

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

    async def _within(self, deadline_s: float | None, alias: str, attempt: Callable[[AliasClient], Any],
                      fallback_on_invalid: bool = True) -> Any:
        """`_with_fallbacks` under one deadline for the whole walk (retries, backoff, queueing and
        fallbacks included). Past it the call in flight is cancelled (its concurrency slot is
        released) and the caller gets a 504 naming the alias it was waiting for."""
        if deadline_s is None:
            return await self._with_fallbacks(alias, attempt, fallback_on_invalid)
        current = [alias]

        def tracked(client: AliasClient) -> Any:
            current[0] = client.name
            return attempt(client)

        bound = asyncio.timeout(max(0.0, deadline_s))
        try:
            async with bound:
                return await self._with_fallbacks(alias, tracked, fallback_on_invalid)
        except TimeoutError as exc:
            if not bound.expired():
                raise
            self._on_outcome(current[0], "deadline")
            raise UpstreamTimeoutError(f"foundation alias {current[0]!r} did not answer before the request's "
                                       "deadline", code="deadline_exceeded") from exc

    async def _with_fallbacks(
        self, alias: str, attempt: Callable[[AliasClient], Any], fallback_on_invalid: bool = True
    ) -> Any:
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
            except UpstreamRejectedError:
                raise  # the request's own fault: another alias would refuse it too; counts nowhere
            except InvalidLabelError as exc:
                errors.append(exc)  # the upstream answered: not a breaker failure
                if not fallback_on_invalid:
                    break
                continue
            except RateLimitedError as exc:
                errors.append(exc)  # back off, not broken
                continue
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
        if not params.keys() <= _ALLOWED:
            # A bug, never a caller: requests are rebuilt from `params.FORWARDED` before this point.
            raise TypeError(f"parameters outside the allowlist: {sorted(params.keys() - _ALLOWED)}")
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
            except Exception as exc:
                if not _from_provider(exc):
                    # A bug of ours (or litellm's): the app logs it with its traceback and answers
                    # 500 with the request id; never retried, never counted against the alias.
                    log.error("bug in a call to alias %s: %s", client.name, type(exc).__name__)
                    raise
                err, retryable = self._translate(client, exc)
                last = not retryable or attempt_no == spec.max_retries
                # The exception's class and status only: its text can quote the upstream's body.
                status = getattr(exc, "status_code", None)
                log.warning("foundation call failed: alias %r, %s (%s%s)%s", client.name, err.code, type(exc).__name__,
                            f" {status}" if status else "", "" if last else ", retrying",
                            extra={"alias": client.name, "event": "foundation_failed", "outcome": err.code,
                                   "attempt": attempt_no + 1})
                if last:
                    raise err from exc
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt_no) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _translate(self, client: AliasClient, exc: BaseException) -> tuple[GatewayError, bool]:
        """A provider exception as (gateway error, retryable), counting the attempt's outcome."""
        kind = _kind(exc)
        self._on_outcome(client.name, kind.value)
        status = _status(exc)
        where = f"foundation alias {client.name!r}"
        if kind is _Kind.TIMEOUT:
            return UpstreamTimeoutError(f"{where} timed out"), True
        if kind is _Kind.RATE_LIMITED:
            return RateLimitedError(f"{where} is rate limited upstream", retry_after_s=1), True
        if kind is _Kind.REJECTED:
            detail = _sanitize(exc, secrets=(client.api_key, client.api_base))
            return UpstreamRejectedError(f"the foundation model rejected the request (HTTP {status or 400})"
                                         + (f": {detail}" if detail else "")), False
        if kind is _Kind.REFUSED:
            return UpstreamRefusedError(f"{where} was refused by its provider (HTTP {status}): the operator's "
                                        "key, model or account needs attention"), False
        return UpstreamError(f"{where} failed ({type(exc).__name__}{f' {status}' if status else ''})"), True

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


class _Kind(Enum):
    """What a provider exception means for the breaker; values are metric outcomes."""

    TIMEOUT = "timeout"
    FAULT = "error"
    REFUSED = "refused"
    RATE_LIMITED = "rate_limited"
    REJECTED = "rejected"


# litellm's exception classes (litellm.exceptions, subclasses of openai's), looked up along the
# class hierarchy, most specific first; the provider status decides for generic `APIError`s.
_BY_CLASS: dict[str, _Kind] = {
    "Timeout": _Kind.TIMEOUT,
    "APITimeoutError": _Kind.TIMEOUT,
    "RateLimitError": _Kind.RATE_LIMITED,
    # BadRequestError subclasses that are about the deployment, not the request:
    "LiteLLMUnknownProvider": _Kind.REFUSED,
    "UnsupportedEndpointError": _Kind.REFUSED,
    "EndpointNotSupportedByModelError": _Kind.REFUSED,
    "PaymentRequiredError": _Kind.REFUSED,
    "AuthenticationError": _Kind.REFUSED,
    "PermissionDeniedError": _Kind.REFUSED,
    "NotFoundError": _Kind.REFUSED,
    "BadRequestError": _Kind.REJECTED,
    "UnprocessableEntityError": _Kind.REJECTED,
    "APIConnectionError": _Kind.FAULT,
    "InternalServerError": _Kind.FAULT,
    "ServiceUnavailableError": _Kind.FAULT,
    "BadGatewayError": _Kind.FAULT,
    "APIResponseValidationError": _Kind.FAULT,
}
_PROVIDER_MODULES = ("litellm", "openai", "httpx", "httpcore")


def _from_provider(exc: BaseException) -> bool:
    """True for what a provider call raises (litellm/openai errors, timeouts, transport errors)."""
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    return any(c.__module__.startswith(_PROVIDER_MODULES) for c in type(exc).__mro__[:-2])


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _kind(exc: BaseException) -> _Kind:
    if isinstance(exc, TimeoutError):
        return _Kind.TIMEOUT
    for cls in type(exc).__mro__:
        kind = _BY_CLASS.get(cls.__name__)
        if kind is not None and cls.__module__.startswith(("litellm", "openai")):
            return kind
    status = _status(exc)
    if status in (408, 504):
        return _Kind.TIMEOUT
    if status == 429:
        return _Kind.RATE_LIMITED
    if status in (401, 402, 403, 404):
        return _Kind.REFUSED
    if status is not None and 400 <= status < 500:
        return _Kind.REJECTED  # 413, 409, ...: about this request, so not the alias's failure
    return _Kind.FAULT


_SECRET_LIKE = re.compile(r"(?i)\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{6,}|bearer\s+\S+|(?:api[_-]?key|token)\W+\S+")
_PREFIX = re.compile(r"^.*?Exception - ", re.DOTALL)


def _sanitize(exc: BaseException, secrets: Sequence[str | None]) -> str:
    """The provider's own words about a rejected request: unwrapped, keys redacted, bounded."""
    text = str(getattr(exc, "message", None) or exc)
    text = _PREFIX.sub("", text, count=1)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = " ".join(_SECRET_LIKE.sub("[redacted]", text).split())
    return text[:300] + ("…" if len(text) > 300 else "")


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

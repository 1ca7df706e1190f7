"""Routing policies: YAML file -> validated, immutable `Policy` with a content-hash version.

A policy names foundation *aliases* (litellm model strings plus limits) and *routes* (what the
`model` / `task` of a request selects: a classification route, a chat route gated by an intent
specialist, or the `auto` route that picks a foundation tier by request type). Validation is
strict: unknown keys, wrong types, thresholds outside [0, 1], unknown specialists, labels or
aliases are `PolicyConfigError`s naming file, line and key. The schema is documented in
`policies/README.md`.

Policy text is hostile input (a file an operator edits, or an announcement read from Redis), so
parsing is bounded before any YAML object is built: at most `max_bytes` (256 KiB by default),
no anchors or aliases (`&a` / `*a` / `<<: *a`, which let 4 KB expand to gigabytes when walked),
and nesting at most `MAX_DEPTH` levels (the composer recurses). An alias may only read its key
from an environment variable under `ROUTER_PROVIDER_KEY_`, and `api_base` must be a plain
http(s) URL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, NodeEvent

from .settings import PROVIDER_KEY_PREFIX as API_KEY_ENV_PREFIX

__all__ = [
    "MAX_POLICY_BYTES",
    "MAX_TIERS",
    "AliasSpec",
    "AutoRoute",
    "Budgets",
    "Candidate",
    "CascadeTier",
    "ChatRoute",
    "ClassifyRoute",
    "EscalationLog",
    "LoadedPolicy",
    "Policy",
    "PolicyConfigError",
    "Route",
    "load_policy",
    "parse_policy",
    "policy_version",
    "read_policy_text",
]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
MAX_TIERS = 3
"""Specialist tiers in one classification route (the route's own specialist + its `cascade`)."""

MAX_POLICY_BYTES = 256 * 1024
"""Default size limit of a policy file or announcement (`ROUTER_POLICY_MAX_BYTES`)."""
MAX_DEPTH = 32
"""Deepest nesting of mappings/sequences accepted (real policies use 4)."""
# `api_key_env` may only name variables under this prefix, so a policy (or whoever can write one)
# cannot send the admin token or any other secret of the process to a provider.
_API_KEY_ENV = re.compile(re.escape(API_KEY_ENV_PREFIX) + r"[A-Z0-9_]{1,64}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AliasSpec(_Strict):
    """One foundation model the gateway may call, with its limits."""

    model: str | None = None
    """litellm model string; omitted = the model configured by environment (ROUTER_FOUNDATION__*)."""
    api_base: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable that holds the key (never the key itself)."""
    price_as: str | None = None
    timeout_s: float = Field(30.0, gt=0, le=600)
    max_retries: int = Field(1, ge=0, le=5)
    max_concurrency: int = Field(16, ge=1)
    max_queue: int = Field(64, ge=0)
    fallbacks: tuple[str, ...] = ()
    structured_output: Literal["auto", "json_schema", "prompt"] = "auto"
    breaker_failures: int = Field(5, ge=1)
    breaker_reset_s: float = Field(30.0, gt=0)
    max_tokens: int | None = Field(None, ge=1)
    """Cap on completion tokens for label escalations (chat requests pass their own)."""
    cache_ttl_s: int = Field(3600, ge=0)
    """TTL of cached answers when this alias is named directly as `model`."""
    deadline_s: float = Field(60.0, gt=0, le=600)
    """Whole-request deadline when this alias is named directly as `model` (retries and fallbacks
    included): past it the caller gets 504 naming the alias that did not answer."""

    @field_validator("api_key_env")
    @classmethod
    def _key_env_prefixed(cls, value: str | None) -> str | None:
        if value is not None and not _API_KEY_ENV.fullmatch(value):
            shown = value if len(value) <= 80 and value.isprintable() else "(not shown)"
            raise ValueError(f"must name an environment variable {API_KEY_ENV_PREFIX}<NAME> (upper case, "
                             f"digits, _), e.g. {API_KEY_ENV_PREFIX}OPENAI; got {shown!r}")
        return value

    @field_validator("api_base")
    @classmethod
    def _plain_http_url(cls, value: str | None) -> str | None:
        # The value is never echoed: a URL with credentials in it must not reach the logs.
        if value is None:
            return None
        if len(value) > 2048 or not value.isprintable() or any(c.isspace() for c in value):
            raise ValueError("must be an http(s) URL of at most 2048 printable characters without spaces")
        try:
            parts = urlsplit(value)
            port = parts.port  # raises on a malformed port
        except ValueError:
            raise ValueError("must be an http(s) URL (cannot parse it)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise ValueError("must not carry credentials (user:password@); name the key with api_key_env")
        del port
        return value


class _SpecialistGate(_Strict):
    specialist: str
    min_confidence: Probability = 0.8
    """Accept the specialist's answer only at or above this calibrated confidence."""
    max_novelty: Probability = 1.0
    """Escalate when more than this share of the input's words were never seen in training."""
    escalate_labels: tuple[str, ...] = ()
    """Labels that always escalate (e.g. the out-of-scope label)."""
    cache_ttl_s: int = Field(3600, ge=0)
    on_specialist_error: Literal["escalate", "fail"] = "escalate"


class CascadeTier(_Strict):
    """A further specialist of a classification route, asked only when the tier before is unsure."""

    specialist: str
    min_confidence: Probability = 0.8
    max_novelty: Probability = 1.0


class Candidate(_Strict):
    """A candidate specialist and/or threshold run in shadow on a sample of the route's traffic
    (off the request path; see `router/candidates.py`)."""

    specialist: str | None = None
    """A specialist with the route's labels (bundled, or named under `specialists:`); None = the
    route's own specialist (a candidate threshold only)."""
    min_confidence: Probability | None = None
    """The candidate's threshold; None = the route's `min_confidence`."""
    sample_rate: Probability = 0.1
    """Share of the inputs the route's specialist ran on that the candidate also answers."""
    max_queue: int = Field(256, ge=1, le=100_000)
    """Samples waiting for the candidate at most; past it samples are dropped (and counted)."""

    @model_validator(mode="after")
    def _names_something(self) -> Candidate:
        if self.specialist is None and self.min_confidence is None:
            raise ValueError("a candidate names a specialist, a min_confidence or both")
        return self


class ClassifyRoute(_SpecialistGate):
    kind: Literal["classify"] = "classify"
    escalate_to: str | None = None
    deadline_s: float = Field(2.0, gt=0, le=600)
    """How long a caller waits for the foundation model; past it the specialist's answer is
    served `degraded` with reason `deadline` (the foundation call may finish in the background
    and fill the cache)."""
    prompt: str | None = None
    """Escalation prompt; `{labels}` and `{input}` are substituted. None = the built-in prompt."""
    on_invalid_label: Literal["fallback", "degrade"] = "fallback"
    """A foundation answer outside the label set: ask the alias's fallback, or answer degraded
    from the specialist. Either way it never counts toward the alias's circuit breaker."""
    keep_inputs: bool = False
    """Keep the input text of this route's escalations and shadow checks in the escalation stream
    (for `hybrid-router distill`), for `escalation_log.input_ttl_s`. Off by default: entries then
    hold labels and confidences only."""
    when_foundation_weaker: Literal["escalate", "answer"] = "escalate"
    """`answer`: while the shadow checks measure the foundation model weaker than the specialist
    (see `router/foundation_quality.py`), low-confidence inputs are answered by the specialist,
    flagged degraded with reason `foundation_weaker`, instead of escalating."""
    candidate: Candidate | None = None
    """A candidate run in shadow on a sample of this route's traffic (metrics only, never an answer)."""
    rollback_to: str | None = None
    """The specialist this route served before the last `hybrid-router promote` (written by it;
    `hybrid-router rollback` switches back)."""
    cascade: tuple[CascadeTier, ...] = Field((), max_length=MAX_TIERS - 1)
    """Tiers 2.. in order: an input the previous tier is unsure of (low confidence, novel input, or a
    failed specialist) goes to the next tier, and to `escalate_to` after the last one."""

    def tiers(self) -> tuple[CascadeTier, ...]:
        """Every tier in order, the route's own specialist first."""
        first = CascadeTier(
            specialist=self.specialist, min_confidence=self.min_confidence, max_novelty=self.max_novelty
        )
        return (first, *self.cascade)


class ChatRoute(_SpecialistGate):
    kind: Literal["chat"]
    escalate_to: str
    deadline_s: float = Field(60.0, gt=0, le=600)
    """One deadline for the whole request (retries and fallbacks included), then 504."""
    answers: Mapping[str, str] = Field(default_factory=dict)
    """Canned answer per intent; a confident intent without an answer escalates too."""


class AutoRoute(_Strict):
    kind: Literal["auto"]
    specialist: str
    min_confidence: Probability = 0.5
    tiers: Mapping[str, str]
    """Request category -> alias."""
    low_confidence_tier: str
    cache_ttl_s: int = Field(3600, ge=0)
    deadline_s: float = Field(60.0, gt=0, le=600)
    """One deadline for the whole request (retries and fallbacks included), then 504."""
    on_specialist_error: Literal["escalate", "fail"] = "escalate"


Route = Annotated[ClassifyRoute | ChatRoute | AutoRoute, Field(discriminator="kind")]


class Budgets(_Strict):
    usd_per_hour: float | None = Field(None, ge=0)
    usd_per_day: float | None = Field(None, ge=0)
    when_spent: Literal["degrade"] = "degrade"
    """Classification requests get the specialist's answer flagged degraded; open-ended ones 503."""


class Shadow(_Strict):
    """Population-level drift check: a sample of specialist answers is re-asked of the foundation model."""

    sample_rate: Probability = 0.0
    """Share of specialist-answered classification requests also sent to the route's alias."""
    window: int = Field(200, ge=10)
    """Agreement is measured over the last `window` shadowed answers of a route."""
    min_agreement: Probability = 0.85
    on_low_agreement: Literal["alert", "escalate_route"] = "alert"
    """`alert`: metrics only. `escalate_route`: every request of the route escalates until an
    operator resets it (POST /admin/shadow/reset) or reloads the policy."""
    max_in_flight: int = Field(8, ge=1)


class EscalationLog(_Strict):
    """What escalations are recorded in the Redis stream `gw:v1:escalations` (the learning loop)."""

    enabled: bool = True
    keep_inputs: bool = False
    """Store the input text with each entry. Off by default: entries then hold no user content."""
    input_ttl_s: int = Field(7 * 86400, ge=60)
    """With `keep_inputs`, entries older than this are trimmed from the stream."""
    max_entries: int = Field(100_000, ge=100)


class Policy(_Strict):
    version: Literal[1]
    """Schema version of this file format."""
    description: str | None = None
    aliases: Mapping[str, AliasSpec] = Field(default_factory=dict)
    routes: Mapping[str, Route]
    budgets: Budgets = Budgets()
    shadow: Shadow = Shadow()
    escalation_log: EscalationLog = EscalationLog()
    specialists: Mapping[str, str] = Field(default_factory=dict)
    """Extra specialists by name -> directory (a promoted candidate), loaded besides the bundled
    ones; a relative directory is relative to the policy file."""

    @model_validator(mode="after")
    def _names_resolve(self) -> Policy:
        for name, alias in self.aliases.items():
            for fb in alias.fallbacks:
                if fb not in self.aliases:
                    raise ValueError(f"aliases.{name}.fallbacks: unknown alias {fb!r}")
        for name in self.routes:
            if name in self.aliases:
                raise ValueError(f"routes.{name}: the name is also an alias; model names must be unique")
        for name, route in self.routes.items():
            targets: list[tuple[str, str]] = []
            if isinstance(route, AutoRoute):
                targets += [(f"tiers.{k}", v) for k, v in route.tiers.items()]
                targets.append(("low_confidence_tier", route.low_confidence_tier))
            elif route.escalate_to is not None:
                targets.append(("escalate_to", route.escalate_to))
            for key, alias_name in targets:
                if alias_name not in self.aliases:
                    raise ValueError(f"routes.{name}.{key}: unknown alias {alias_name!r}")
        return self


class PolicyConfigError(Exception):
    """The policy file is invalid; `issues` lists `file:line: key: problem` lines."""

    def __init__(self, path: str, issues: list[str]) -> None:
        self.path = path
        self.issues = issues
        super().__init__(f"invalid policy {path}:\n  " + "\n  ".join(issues))


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: Policy
    version: str
    """Content hash of the file (first 12 hex of sha256): in every response, metric and cache key."""
    path: str
    text: str = field(repr=False, default="")

    def route(self, name: str) -> ClassifyRoute | ChatRoute | AutoRoute | None:
        return self.policy.routes.get(name)


def _line_of(doc: Any, loc: Iterable[Any]) -> int | None:
    line: int | None = None
    node = doc
    for part in loc:
        try:
            if hasattr(node, "lc") and isinstance(node, dict) and part in node:
                line = node.lc.key(part)[0] + 1  # type: ignore[attr-defined]  # ruamel's CommentedMap
                node = node[part]
            elif hasattr(node, "lc") and isinstance(node, list) and isinstance(part, int):
                line = node.lc.item(part)[0] + 1  # type: ignore[attr-defined]  # ruamel's CommentedSeq
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return line


def _check_shape(text: str, path: str) -> None:
    """Refuse anchors, aliases and deep nesting from the event stream, before anything is built.

    The parser is an iterative state machine (no recursion, no object graph), so even a YAML bomb
    costs only the scan up to its first anchor.
    """
    depth = 0
    for event in YAML(typ="rt").parse(text):
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, AliasEvent):
            raise PolicyConfigError(path, [f"{path}:{line}: YAML aliases (*name) are not allowed in a policy"])
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise PolicyConfigError(path, [f"{path}:{line}: YAML anchors (&name) are not allowed in a policy"])
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise PolicyConfigError(path, [f"{path}:{line}: nested deeper than {MAX_DEPTH} levels"])
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def parse_policy(
    text: str,
    path: str = "<policy>",
    specialist_classes: Mapping[str, tuple[str, ...]] | None = None,
    max_bytes: int = MAX_POLICY_BYTES,
) -> LoadedPolicy:
    """Validate policy text. With `specialist_classes`, also check specialists and labels exist.

    CPU-bound (ruamel is pure Python): callers on the event loop run it in a thread.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise PolicyConfigError(path, [f"{path}: {size} bytes, over the {max_bytes}-byte limit for a policy"])
    try:
        _check_shape(text, path)
        doc = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise PolicyConfigError(path, [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if not isinstance(doc, dict):
        raise PolicyConfigError(path, [f"{path}:1: the policy must be a mapping with version and routes"])
    try:
        policy = Policy.model_validate(_plain(doc))
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p in ("classify", "chat", "auto"))]
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(doc, loc)
            where = f"{path}:{line}" if line else path
            msg = err["msg"].removeprefix("Value error, ")
            issues.append(f"{where}: {key}: {msg}")
        raise PolicyConfigError(path, issues) from exc
    if specialist_classes is not None:
        issues = _check_specialists(policy, specialist_classes, doc, path)
        if issues:
            raise PolicyConfigError(path, issues)
    return LoadedPolicy(policy=policy, version=policy_version(text), path=path, text=text)


def policy_version(text: str) -> str:
    """The version of a policy: the first 12 hex digits of the SHA-256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _check_specialists(
    policy: Policy, classes: Mapping[str, tuple[str, ...]], doc: Any, path: str
) -> list[str]:
    issues = []

    def add(loc: list[Any], msg: str) -> None:
        line = _line_of(doc, loc)
        issues.append(f"{path}:{line}: {'.'.join(map(str, loc))}: {msg}" if line else f"{path}: {msg}")

    for name, route in policy.routes.items():
        if isinstance(route, ClassifyRoute) and route.rollback_to is not None and route.rollback_to not in classes:
            add(["routes", name, "rollback_to"], f"unknown specialist {route.rollback_to!r}")
        cand = route.candidate.specialist if isinstance(route, ClassifyRoute) and route.candidate else None
        if cand is not None and cand not in classes:
            add(["routes", name, "candidate", "specialist"], f"unknown specialist {cand!r} "
                f"(bundled: {', '.join(sorted(classes))}; a candidate directory goes under specialists:)")
        elif (cand is not None and route.specialist in classes
              and set(classes[cand]) != set(classes[route.specialist])):
            add(["routes", name, "candidate", "specialist"], f"specialist {cand!r} has other labels than "
                f"{route.specialist!r}; a candidate must answer with the route's label set")
        if route.specialist not in classes:
            add(["routes", name, "specialist"], f"unknown specialist {route.specialist!r} "
                f"(bundled: {', '.join(sorted(classes))})")
            continue
        labels = set(classes[route.specialist])
        seen = {route.specialist}
        for k, tier in enumerate(route.cascade if isinstance(route, ClassifyRoute) else ()):
            loc = ["routes", name, "cascade", k, "specialist"]
            if tier.specialist not in classes:
                add(loc, f"unknown specialist {tier.specialist!r} (bundled: {', '.join(sorted(classes))})")
            elif tier.specialist in seen:
                add(loc, f"specialist {tier.specialist!r} is already a tier of this route")
            elif set(classes[tier.specialist]) != labels:
                add(loc, f"specialist {tier.specialist!r} has other labels than {route.specialist!r}; "
                    "every tier of a cascade must answer with the same label set")
            seen.add(tier.specialist)
        keyed: list[tuple[str, Iterable[str]]] = []
        if not isinstance(route, AutoRoute):
            keyed.append(("escalate_labels", route.escalate_labels))
        if isinstance(route, ChatRoute):
            keyed.append(("answers", route.answers.keys()))
        if isinstance(route, AutoRoute):
            keyed.append(("tiers", route.tiers.keys()))
        for key, values in keyed:
            for label in values:
                if label not in labels:
                    add(["routes", name, key], f"{label!r} is not a label of specialist {route.specialist!r}")
    return issues


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_policy(path: Path, specialist_classes: Mapping[str, tuple[str, ...]] | None = None,
                max_bytes: int = MAX_POLICY_BYTES) -> LoadedPolicy:
    return parse_policy(read_policy_text(path, max_bytes), str(path), specialist_classes, max_bytes)


def read_policy_text(path: Path, max_bytes: int = MAX_POLICY_BYTES) -> str:
    """The text of a policy file, read with the size limit (never more than the limit in memory)."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise PolicyConfigError(str(path), [f"{path}: cannot read: {exc}"]) from exc
    if len(data) > max_bytes:
        raise PolicyConfigError(str(path), [f"{path}: over the {max_bytes}-byte limit for a policy"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyConfigError(str(path), [f"{path}: not UTF-8 (byte {exc.start})"]) from exc
    return text

"""Prometheus metrics of the gateway: the only prometheus_client importer.

`GatewayMetrics(registry)` builds every metric once per app against an injected registry (tests
pass a fresh `CollectorRegistry`). With several workers, prometheus_client's multiprocess mode is
used (`multiprocess_dir`, set by `hybrid-router serve` through PROMETHEUS_MULTIPROC_DIR before
any worker starts): each worker writes its values to files there and `/metrics`, whichever worker
answers it, aggregates all of them. Gauges use the `live*` modes, and each scrape drops the files
of workers that are no longer running, so a dead worker's gauges leave with it (its counters
stay: they were counted). State read from the gateway at scrape time (budget, shadow floor) is
not kept in files at all, so a removed budget limit disappears from the next scrape.

Label values come only from closed sets: route and alias names from the loaded policy, paths,
reasons (`decision.REASONS`), stages, outcomes and token kinds listed here, API key *names* from
the key store (capped). Never prompts, keys, user ids or free model strings. The full set is
documented in `docs/metrics.md`.
"""

from __future__ import annotations

import logging
import os
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client import values as _values
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from .policy import Policy

__all__ = ["CANDIDATE_OUTCOMES", "CONTENT_TYPE_LATEST", "CUT_REASONS", "FOUNDATION_OUTCOMES", "PATHS",
           "SLO_ERROR_CODES", "STAGES", "TIERS", "GatewayMetrics"]

log = logging.getLogger("router.metrics")

PATHS = ("specialist", "foundation", "cache", "degraded")
CUT_REASONS = ("header_timeout", "body_timeout", "header_too_large", "overloaded")
"""Why the server cut a connection or request (`router.connections`); `overloaded` = 503 past
`max_connections`."""
STAGES = ("cache", "specialist", "foundation")
STAGE_CACHE, STAGE_SPECIALIST, STAGE_FOUNDATION = STAGES
# Specialist tiers of a classification route (policy.MAX_TIERS): "1" is the route's own specialist.
TIERS = ("1", "2", "3")
# 50 µs .. 600 s, roughly x2.5 per step: fine enough for the specialist path, long enough for LLMs.
# The top bucket is the largest deadline a policy may set (`deadline_s` <= 600), so every request
# the gateway ends on time falls in a finite bucket.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
PROBABILITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
SLO_ERROR_CODES = ("upstream_error", "upstream_refused", "upstream_timeout", "deadline_exceeded", "invalid_label",
                   "foundation_unavailable", "specialist_unavailable", "key_store_unavailable", "internal_error")
"""The error codes that count against the availability objective (deploy/prometheus/alerts.yml
matches exactly these): server-side failures, not refusals such as `budget_spent`."""
CANDIDATE_OUTCOMES = ("compared", "dropped", "error")
"""What became of an input sampled for a route's shadow candidate (`router.candidates`)."""
FOUNDATION_OUTCOMES = ("ok", "timeout", "rate_limited", "error", "invalid_label", "breaker_open", "queue_full")

_P = "hybrid_router_"
_LIVE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def _multiprocess_values() -> bool:
    """True when prometheus_client writes values to files (PROMETHEUS_MULTIPROC_DIR was set
    before it was imported); otherwise they live in this process only."""
    return _values.ValueClass is not _values.MutexValue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _observe(hist: Any, amount: float) -> None:
    """``Histogram.observe`` of a labelled child, with a binary search for the bucket.

    prometheus_client finds the bucket with a Python loop over every bound (up to 17 here) and
    checks the child's labels on each call; on the specialist path's four observations a request
    that was a tenth of the gateway's own work (issue 15). Same values, same storage (also the
    multiprocess files): the sum and the first bucket whose bound is >= the amount (none for NaN).
    Relies on the child's ``_sum``, ``_buckets`` and ``_upper_bounds`` (prometheus_client 0.26,
    pinned); `tests/router/test_metrics_observe.py` checks it against ``Histogram.observe``.
    """
    bounds = hist._upper_bounds
    i = bisect_left(bounds, amount)
    hist._sum.inc(amount)
    if i < len(bounds) and amount <= bounds[i]:
        hist._buckets[i].inc(1)


def _inc(counter: Any, amount: float = 1.0) -> None:
    """``Counter.inc`` of a labelled child without its per-call label check (the request path's
    counters are children by construction); same value store as ``inc``."""
    if amount < 0:
        raise ValueError("counters only go up")
    counter._value.inc(amount)


class _Children(dict[tuple[str, ...], Any]):
    """A metric's labelled children by label values, each made on first use and kept: `.labels()`
    costs ~1.5 µs a call on the request path, and the label sets are closed, so this stays small."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self._metric = metric

    def __missing__(self, key: tuple[str, ...]) -> Any:
        child = self[key] = self._metric.labels(*key)
        return child


class _ScrapeState:
    """Gauges computed from the gateway's state at each scrape, never stored in files."""

    def __init__(self) -> None:
        self.budget: dict[str, dict[str, float | None]] = {}
        self.shadow_floor: float | None = None
        self.breakers: dict[str, bool] = {}

    def collect(self) -> Iterator[Metric]:
        limit = GaugeMetricFamily(_P + "budget_limit_usd", "The policy's foundation budget for the window "
                                  "(absent = no limit).", labels=["window"])
        spent = GaugeMetricFamily(_P + "budget_spent_usd", "Foundation spend in the current budget window "
                                  "(shared across replicas with Redis).", labels=["window"])
        for window, v in self.budget.items():
            if v["limit"] is not None:
                limit.add_metric([window], v["limit"])
            spent.add_metric([window], v["spent"] or 0.0)
        floor = GaugeMetricFamily(_P + "shadow_min_agreement", "The policy's shadow.min_agreement while shadow "
                                  "checks are on (absent otherwise).")
        if self.shadow_floor is not None:
            floor.add_metric([], self.shadow_floor)
        breaker = GaugeMetricFamily(_P + "foundation_breaker_open", "1 while the alias's circuit breaker is open "
                                    "(from its opening until a call succeeds again).", labels=["alias"])
        for alias, is_open in self.breakers.items():
            breaker.add_metric([alias], 1.0 if is_open else 0.0)
        yield from (limit, spent, floor, breaker)

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, multiprocess_dir: Path | None = None) -> None:
        self.registry = registry
        if multiprocess_dir is not None and not _multiprocess_values():
            # One process whose values are in memory (the directory was named after
            # prometheus_client was imported): reading the directory would export nothing.
            log.info("metrics directory %s unused: this process keeps its metrics in memory", multiprocess_dir)
            multiprocess_dir = None
        self._multiprocess_dir = multiprocess_dir
        self._state = _ScrapeState()
        registry.register(self._state)
        self._policy_version: str | None = None
        self._prediction_hists: dict[str, tuple[Any, Any]] = {}
        self.requests = Counter(
            _P + "requests", "Answered requests (one per input) by route, path taken and reason.",
            ["route", "path", "reason"], registry=registry)
        self.latency = Histogram(
            _P + "request_duration_seconds", "Time to answer one request, by path taken.",
            ["path"], buckets=LATENCY_BUCKETS, registry=registry)
        self.stage_latency = Histogram(
            _P + "stage_duration_seconds", "Time spent in one stage of a request.",
            ["stage"], buckets=LATENCY_BUCKETS, registry=registry)
        self.cost = Counter(
            _P + "cost_usd", "Money spent answering, by route, path and foundation alias ('none' off the "
            "foundation path).", ["route", "path", "alias"], registry=registry)
        self.cost_avoided = Counter(
            _P + "cost_avoided_usd",
            "Estimated foundation cost avoided by answering from a specialist or the cache.",
            ["route", "path"], registry=registry)
        self.escalations = Counter(
            _P + "escalations", "Requests escalated to a foundation model, by route and reason.",
            ["route", "reason"], registry=registry)
        self.foundation_calls = Counter(
            _P + "foundation_calls",
            "Foundation model calls by alias and outcome (ok, timeout, rate_limited, error, refused, "
            "rejected, invalid_label, breaker_open, queue_full, deadline).",
            ["alias", "outcome"], registry=registry)
        self.foundation_tokens = Counter(
            _P + "foundation_tokens", "Foundation tokens by alias and kind (prompt, completion).",
            ["alias", "kind"], registry=registry)
        self.cache_events = Counter(
            _P + "cache_events", "Cache lookups and stores: hit, miss, store, error, skipped (breaker open).",
            ["event"], registry=registry)
        self.confidence = Histogram(
            _P + "specialist_confidence", "Calibrated confidence of specialist predictions.",
            ["route"], buckets=PROBABILITY_BUCKETS, registry=registry)
        self.novelty = Histogram(
            _P + "specialist_novelty", "Share of an input's words unseen in the specialist's training.",
            ["route"], buckets=PROBABILITY_BUCKETS, registry=registry)
        self.tier_input_count = Counter(
            _P + "tier_inputs", "Inputs a specialist tier of a classification route evaluated, by route and "
            "tier (1 = the route's own specialist, 2.. = its cascade).", ["route", "tier"], registry=registry)
        self.tier_answer_count = Counter(
            _P + "tier_answers", "Inputs a specialist tier answered (confident), by route and tier.",
            ["route", "tier"], registry=registry)
        self.tier_latency = Histogram(
            _P + "tier_duration_seconds", "Time of one cascade tier (2..) over a batch's unsure inputs, "
            "thread-pool wait included.", ["tier"], buckets=LATENCY_BUCKETS, registry=registry)
        self.specialist_errors = Counter(
            _P + "specialist_errors", "Specialist inference failures by route.", ["route"], registry=registry)
        self.shadow = Counter(
            _P + "shadow_checks", "Shadow comparisons of specialist answers with the foundation model, by "
            "route and outcome (agree, disagree, error).", ["route", "outcome"], registry=registry)
        self.shadow_agreement = Gauge(
            _P + "shadow_agreement", "Agreement over the route's last shadow window (0..1).", ["route"],
            registry=registry, multiprocess_mode="livemostrecent")
        self.shadow_tripped = Gauge(
            _P + "shadow_tripped", "1 while a route escalates every request after low shadow agreement.",
            ["route"], registry=registry, multiprocess_mode="livemax")
        self.foundation_accuracy = Gauge(
            _P + "foundation_accuracy_estimate", "The route's foundation model accuracy estimated from its last "
            "shadow window (bound: lower, upper; see router/foundation_quality.py).", ["route", "bound"],
            registry=registry, multiprocess_mode="livemostrecent")
        self.foundation_weaker = Gauge(
            _P + "foundation_weaker", "1 while the route's foundation model is measured weaker than its "
            "specialist on the inputs it would escalate.", ["route"], registry=registry,
            multiprocess_mode="livemax")
        self.candidate_samples = Counter(
            _P + "candidate_samples", "Inputs sampled for a route's shadow candidate, by outcome (compared, "
            "dropped: the bounded queue was full, error: the candidate failed).", ["route", "outcome"],
            registry=registry)
        self.candidate_compared = Gauge(
            _P + "candidate_compared", "Samples compared since the route's current candidate was set.", ["route"],
            registry=registry, multiprocess_mode="livemostrecent")
        self.candidate_agreement = Gauge(
            _P + "candidate_agreement", "Share of sampled inputs where the candidate gives the same label as the "
            "serving specialist or the foundation answer (against: serving, foundation).", ["route", "against"],
            registry=registry, multiprocess_mode="livemostrecent")
        self.candidate_escalation_rate = Gauge(
            _P + "candidate_projected_escalation_rate", "Share of sampled inputs the serving specialist and the "
            "candidate would escalate (version: serving, candidate).", ["route", "version"], registry=registry,
            multiprocess_mode="livemostrecent")
        self.candidate_cost_per_1k = Gauge(
            _P + "candidate_projected_cost_per_1k_usd", "Foundation cost per 1,000 sampled inputs of the "
            "escalations each version would make (version: serving, candidate).", ["route", "version"],
            registry=registry, multiprocess_mode="livemostrecent")
        self.policy_info = Gauge(
            _P + "policy_info", "1 for the policy version being served.", ["version"], registry=registry,
            multiprocess_mode="livemax")
        self.policy_reloads = Counter(
            _P + "policy_reloads", "Policy reload attempts by result (ok, invalid: a file that failed "
            "validation, rejected_announcement: an announcement from Redis refused).", ["result"],
            registry=registry)
        self.request_errors = Counter(
            _P + "request_errors", "Requests answered with an error status, by route ('unknown' when the "
            "name is not in the policy) and error code.", ["route", "code"], registry=registry)
        self.connections_cut = Counter(
            _P + "connections_cut", "Connections or requests cut by the server: header_timeout, body_timeout, "
            "header_too_large (431), overloaded (503 past max_connections).", ["reason"], registry=registry)
        self.client_disconnects = Counter(
            _P + "client_disconnects", "Requests whose client went away before the request body was read.",
            registry=registry)
        self.key_requests = Counter(
            _P + "key_requests", "Requests on /v1/* by API key name ('none' without a valid key, 'other' past "
            "ROUTER_AUTH__METRIC_KEYS names) and outcome (ok, invalid_key, revoked, forbidden, over_budget, "
            "rate_limited).", ["key", "outcome"], registry=registry)
        # Known label sets start at 0, so the first event is visible to increase() and alerts.
        for result in ("ok", "invalid", "rejected_announcement"):
            self.policy_reloads.labels(result)
        for reason in CUT_REASONS:
            self.connections_cut.labels(reason)
        if multiprocess_dir is None:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        # The request path's children (see `_Children`).
        self._requests = _Children(self.requests)
        self._latency = _Children(self.latency)
        self._cost = _Children(self.cost)
        self._avoided = _Children(self.cost_avoided)
        self._stages = _Children(self.stage_latency)
        self._key_requests = _Children(self.key_requests)
        self._tier_inputs = _Children(self.tier_input_count)
        self._tier_answers = _Children(self.tier_answer_count)
        self._tier_latency = _Children(self.tier_latency)

    def set_policy_version(self, version: str) -> None:
        # Set the old version to 0 rather than clearing: with several workers the value lives in
        # files, and `max` across workers then shows every version still being served somewhere.
        if self._policy_version is not None:
            self.policy_info.labels(self._policy_version).set(0)
        self._policy_version = version
        self.policy_info.labels(version).set(1)

    # Hot-path helpers: label children are looked up once per label set and kept (the label sets
    # are closed, so these dicts stay small); `.labels()` on every request was ~2% of the profile.
    def answered(self, route: str, path: str, reason: str, seconds: float, cost: float, alias: str,
                 avoided: float) -> None:
        _inc(self._requests[(route, path, reason)])
        _observe(self._latency[(path,)], seconds)
        if cost:
            _inc(self._cost[(route, path, alias)], cost)
        if avoided:
            _inc(self._avoided[(route, path)], avoided)

    def stage(self, stage: str, seconds: float) -> None:
        _observe(self._stages[(stage,)], seconds)

    def tier_inputs(self, route: str, tier: str, n: int) -> None:
        _inc(self._tier_inputs[(route, tier)], n)

    def tier_answered(self, route: str, tier: str) -> None:
        _inc(self._tier_answers[(route, tier)])

    def tier_duration(self, tier: str, seconds: float) -> None:
        _observe(self._tier_latency[(tier,)], seconds)

    def observe_predictions(self, route: str, preds: list[Any]) -> None:
        pair = self._prediction_hists.get(route)
        if pair is None:
            pair = self._prediction_hists[route] = (self.confidence.labels(route), self.novelty.labels(route))
        for p in preds:
            _observe(pair[0], p.confidence)
            _observe(pair[1], p.novelty)

    def prepare(self, routes: Iterable[str], aliases: Iterable[str], shadow_floor: float | None) -> None:
        """Create a policy's per-route and per-alias series at 0 (after start-up and every reload),
        so that increase() sees their first event; `shadow_floor` is min_agreement when shadow
        checks are on, else None."""
        # request_errors: the availability objective's codes too. Without them a burst of errors
        # on a new series (say 60 within one scrape interval) is its first sample, which rate()
        # never counts: the SLO burn alert would miss exactly the outage that created it.
        for route in routes:
            self.specialist_errors.labels(route)
            if shadow_floor is not None:
                self.shadow_tripped.labels(route)
                self.foundation_weaker.labels(route)
            for code in SLO_ERROR_CODES:
                self.request_errors.labels(route, code)
        for alias in aliases:
            for outcome in FOUNDATION_OUTCOMES:
                self.foundation_calls.labels(alias, outcome)
            for code in SLO_ERROR_CODES:
                self.request_errors.labels(alias, code)
        for code in SLO_ERROR_CODES:
            self.request_errors.labels("unknown", code)
        self._state.shadow_floor = shadow_floor

    def prepare_policy(self, policy: Policy) -> None:
        shadow = policy.shadow
        self.prepare(policy.routes, policy.aliases, shadow.min_agreement if shadow.sample_rate > 0 else None)
        for name, route in policy.routes.items():
            if getattr(route, "candidate", None) is not None:
                for outcome in CANDIDATE_OUTCOMES:
                    self.candidate_samples.labels(name, outcome)

    def set_breakers(self, states: dict[str, bool]) -> None:
        """Alias -> breaker open, as exported by the next scrape."""
        self._state.breakers = states

    def set_budget(self, snapshot: dict[str, dict[str, float | None]]) -> None:
        """The budget windows as exported by the next scrape (a window without limit has no limit series)."""
        self._state.budget = snapshot

    def connection_cut(self, reason: str) -> None:
        self.connections_cut.labels(reason).inc()

    def key_request(self, key: str, outcome: str) -> None:
        """`key` is a key *name* from the key store (a closed, capped set), never a key."""
        _inc(self._key_requests[(key, outcome)])

    def cache_event(self, event: str) -> None:
        self.cache_events.labels(event).inc()

    def render(self) -> bytes:
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        self._forget_dead_workers()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        merged.register(self._state)
        return generate_latest(merged)

    def _forget_dead_workers(self) -> None:
        """Drop the live-gauge files of worker processes that have exited (a restarted worker
        has a new pid), so their gauges (e.g. an old policy version) leave with them."""
        assert self._multiprocess_dir is not None
        dead = set()
        for f in os.listdir(self._multiprocess_dir):
            m = _LIVE_FILE.match(f)
            if m and not _alive(int(m.group(1))):
                dead.add(int(m.group(1)))
        for pid in dead:
            mark_process_dead(pid, str(self._multiprocess_dir))  # type: ignore[no-untyped-call]

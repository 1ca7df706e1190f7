"""Offline replay of labelled traffic through a route: shares, accuracy, cost and latency per threshold.

In: a policy route, its specialist, labelled texts and `FoundationOutcomes` (replay, assumed
accuracy or live answers, see `ops.replay`). Out: a `Simulation` with one `SweepPoint` per
`min_confidence` in the sweep, the point of the policy as written and the everything-to-the-
foundation reference, plus a plain-text table.

The specialist runs once over the whole data set, in batches; the sweep is then numpy over the
cached predictions. The sweep's escalation rule is `decide()`'s, vectorised: escalate when the
label is in `escalate_labels`, confidence < threshold, novelty > `max_novelty` or (chat routes) the
label has no canned answer. `simulate` checks that equivalence on every row by running `decide()`
itself for the policy's own threshold, and fails loudly if the two ever disagree.

Accounting (every figure is over the *evaluated* rows: rows whose foundation outcome is unknown,
e.g. missing from a replay without an assumed accuracy, are left out and counted in `excluded`):

- accuracy = (specialist answers that are right + expected right foundation answers) / rows;
- cost = litellm price x tokens of the escalated rows; cost fraction = cost / cost of escalating all;
- latency = specialist p50 + escalated share x foundation latency (an assumption, stated).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from router.decision import Answer, decide, next_tier
from router.policy import AutoRoute, ChatRoute, ClassifyRoute
from specialists import Prediction, Specialist

from .replay import FoundationOutcomes, LabeledData, Pricing

__all__ = [
    "DEFAULT_SWEEP",
    "Simulation",
    "SimulationError",
    "SweepPoint",
    "describe",
    "format_table",
    "parse_sweep",
    "predict_all",
    "render_rows",
    "simulate",
    "simulate_cascade",
    "specialist_latency_ms",
    "table_rows",
]

DEFAULT_SWEEP = "0:0.99:0.01"
_BATCH = 512


class SimulationError(Exception):
    """The simulation cannot run as asked (unsupported route, bad sweep, decide() mismatch)."""


@dataclass(frozen=True, slots=True)
class SweepPoint:
    min_confidence: float
    specialist_share: float
    escalated_share: float
    specialist_accuracy: float | None
    """Accuracy of the answers the specialist gave; None when it answered nothing."""
    foundation_accuracy: float | None
    """Expected accuracy of the escalated share; None when nothing escalated."""
    accuracy: float
    cost_usd: float
    cost_fraction: float
    """Foundation cost relative to sending every evaluated row to the foundation model."""
    latency_ms: float
    thresholds: tuple[float, ...] = ()
    """Cascade routes: every tier's min_confidence (the swept one is the last tier's)."""
    tier_shares: tuple[float, ...] = ()
    """Cascade routes: share of rows each tier answers."""


@dataclass(frozen=True, slots=True)
class Simulation:
    route: str
    kind: str
    specialist: str
    specialist_version: str
    rows: int
    evaluated: int
    excluded: int
    policy: SweepPoint
    points: list[SweepPoint]
    all_foundation: SweepPoint
    foundation_source: str
    pricing: Pricing
    specialist_latency_ms: float
    specialist_latency_source: str
    foundation_latency_ms: float
    decide_checked_rows: int
    notes: list[str] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    """Cascade routes: the specialist of each tier, in order (empty for a single-tier route)."""
    tier_latency_ms: list[float] = field(default_factory=list)
    first_tier_only: SweepPoint | None = None
    """Cascade routes: the route without its cascade (tier 1 at its threshold, then the foundation)."""
    grid: list[SweepPoint] = field(default_factory=list)
    """Cascade routes, when asked (tune): every combination of swept thresholds over all tiers."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_sweep(spec: str) -> list[float]:
    """Comma-separated parts, each ``START:STOP:STEP`` (STOP included) or one number -> sorted thresholds."""
    values: set[float] = set()
    try:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if ":" not in part:
                values.add(float(part))
                continue
            start, stop, step = (float(x) for x in part.split(":"))
            if step <= 0 or stop < start:
                raise ValueError(part)
            count = round((stop - start) / step) + 1
            values.update(v for v in (round(start + i * step, 6) for i in range(count)) if v <= stop + 1e-9)
    except ValueError as exc:
        raise SimulationError(f"--sweep {spec!r}: expected START:STOP:STEP parts or numbers, comma-separated") \
            from exc
    if not values or min(values) < 0:
        raise SimulationError(f"--sweep {spec!r}: thresholds must be >= 0")
    return sorted(values)


def predict_all(specialist: Specialist, texts: Sequence[str], batch: int = _BATCH) -> list[Prediction]:
    """One pass of the specialist over all texts, `batch` at a time."""
    out: list[Prediction] = []
    for start in range(0, len(texts), batch):
        out.extend(specialist.predict(texts[start:start + batch]))
    return out


def specialist_latency_ms(specialist: Specialist, texts: Sequence[str]) -> tuple[float, str]:
    """p50 of one request: the manifest's `latency_p50_us`, else measured here with `predict_one`."""
    p50_us = specialist.manifest.metrics.get("latency_p50_us")
    if isinstance(p50_us, int | float) and p50_us > 0:
        return float(p50_us) / 1000.0, "manifest latency_p50_us"
    sample = list(texts[:200])
    for text in sample[:10]:  # warm-up
        specialist.predict_one(text)
    timings = []
    for text in sample:
        t0 = time.perf_counter()
        specialist.predict_one(text)
        timings.append(time.perf_counter() - t0)
    return statistics.median(timings) * 1000.0, f"measured here (predict_one, {len(sample)} texts)"


def _forced(route: ClassifyRoute | ChatRoute, preds: Sequence[Prediction]) -> npt.NDArray[np.bool_]:
    """Rows that escalate whatever min_confidence is (escalate label, novelty, no canned answer)."""
    escalate_labels = set(route.escalate_labels)
    canned = set(route.answers) if isinstance(route, ChatRoute) else None
    return np.array([
        p.label in escalate_labels or p.novelty > route.max_novelty or (canned is not None and p.label not in canned)
        for p in preds
    ], dtype=bool)


def _check_decide(route: ClassifyRoute | ChatRoute, preds: Sequence[Prediction],
                  escalated: npt.NDArray[np.bool_]) -> None:
    by_decide = np.array([not isinstance(decide(route, p), Answer) for p in preds], dtype=bool)
    if not np.array_equal(by_decide, escalated):
        bad = int(np.flatnonzero(by_decide != escalated)[0])
        raise SimulationError(f"the vectorised sweep disagrees with decide() on row {bad + 1} "
                              f"({preds[bad]!r}); this is a bug in ops.simulate")


def _points(thresholds: npt.NDArray[np.float64], confidence: npt.NDArray[np.float64],
            forced: npt.NDArray[np.bool_], spec_correct: npt.NDArray[np.float64],
            fm_correct: npt.NDArray[np.float64], cost: npt.NDArray[np.float64],
            spec_ms: float, fm_ms: float) -> list[SweepPoint]:
    n = len(confidence)
    escalated = forced[None, :] | (confidence[None, :] < thresholds[:, None])  # (thresholds, rows)
    answered = ~escalated
    n_esc = escalated.sum(axis=1)
    n_ans = n - n_esc
    spec_right = (answered * spec_correct[None, :]).sum(axis=1)
    fm_right = (escalated * fm_correct[None, :]).sum(axis=1)
    esc_cost = (escalated * cost[None, :]).sum(axis=1)
    total_cost = float(cost.sum())
    points = []
    for k, t in enumerate(thresholds):
        share = float(n_esc[k]) / n
        points.append(SweepPoint(
            min_confidence=float(t),
            specialist_share=float(n_ans[k]) / n,
            escalated_share=share,
            specialist_accuracy=float(spec_right[k] / n_ans[k]) if n_ans[k] else None,
            foundation_accuracy=float(fm_right[k] / n_esc[k]) if n_esc[k] else None,
            accuracy=float((spec_right[k] + fm_right[k]) / n),
            cost_usd=float(esc_cost[k]),
            cost_fraction=float(esc_cost[k]) / total_cost if total_cost > 0 else share,
            latency_ms=spec_ms + share * fm_ms,
        ))
    return points


@dataclass(frozen=True, slots=True)
class _TierData:
    confidence: npt.NDArray[np.float64]
    ok: npt.NDArray[np.bool_]
    """Not novel and not an escalate label: the tier may answer at a low enough threshold."""
    stop: npt.NDArray[np.bool_]
    """An escalate label: goes to the foundation model, skipping later tiers."""
    correct: npt.NDArray[np.float64]


def _tier_data(route: ClassifyRoute, tier: int, preds: Sequence[Prediction], labels: Sequence[str]) -> _TierData:
    gate = route.tiers()[tier]
    stop = np.array([p.label in route.escalate_labels for p in preds], dtype=bool)
    novel = np.array([p.novelty > gate.max_novelty for p in preds], dtype=bool)
    return _TierData(np.array([p.confidence for p in preds], dtype=np.float64), ~stop & ~novel, stop,
                     np.array([p.label == g for p, g in zip(preds, labels)], dtype=np.float64))


def _assign(tiers: Sequence[_TierData], thresholds: Sequence[float]) -> npt.NDArray[np.int64]:
    """0-based tier answering each row, -1 for escalated: `decide()` + `next_tier()`, vectorised."""
    n = len(tiers[0].confidence)
    who = np.full(n, -1, dtype=np.int64)
    remaining = np.ones(n, dtype=bool)
    for k, (t, th) in enumerate(zip(tiers, thresholds)):
        answer = remaining & t.ok & (t.confidence >= th)
        who[answer] = k
        remaining &= ~answer & ~t.stop
    return who


def _cascade_point(tiers: Sequence[_TierData], thresholds: Sequence[float], fm_correct: npt.NDArray[np.float64],
                   cost: npt.NDArray[np.float64], tier_ms: Sequence[float], fm_ms: float) -> SweepPoint:
    who = _assign(tiers, thresholds)
    n = len(who)
    escalated = who < 0
    answered = ~escalated
    spec_right = sum(float(t.correct[who == k].sum()) for k, t in enumerate(tiers))
    fm_right = float(fm_correct[escalated].sum())
    total_cost = float(cost.sum())
    esc_cost = float(cost[escalated].sum())
    # tier k runs on every row not answered (nor stopped) by the tiers before it
    reached = [1.0]
    remaining = np.ones(n, dtype=bool)
    for k, t in enumerate(tiers[:-1]):
        remaining &= (who != k) & ~t.stop
        reached.append(float(remaining.mean()))
    share = float(escalated.mean())
    return SweepPoint(
        min_confidence=float(thresholds[-1]), specialist_share=float(answered.mean()), escalated_share=share,
        specialist_accuracy=spec_right / int(answered.sum()) if answered.any() else None,
        foundation_accuracy=fm_right / int(escalated.sum()) if escalated.any() else None,
        accuracy=(spec_right + fm_right) / n, cost_usd=esc_cost,
        cost_fraction=esc_cost / total_cost if total_cost > 0 else share,
        latency_ms=sum(r * ms for r, ms in zip(reached, tier_ms)) + share * fm_ms,
        thresholds=tuple(float(x) for x in thresholds),
        tier_shares=tuple(float((who == k).mean()) for k in range(len(tiers))),
    )


def _check_cascade(route: ClassifyRoute, per_tier: Sequence[Sequence[Prediction]],
                   who: npt.NDArray[np.int64]) -> None:
    for row in range(len(who)):
        answered = -1
        for k in range(len(per_tier)):
            decision = decide(route, per_tier[k][row], k)
            if isinstance(decision, Answer):
                answered = k
                break
            if not next_tier(route, k, decision):
                break
        if answered != int(who[row]):
            raise SimulationError(f"the vectorised cascade disagrees with decide() on row {row + 1}; this is a "
                                  "bug in ops.simulate")


def simulate_cascade(
    route_name: str,
    route: ClassifyRoute,
    specialists: Sequence[Specialist],
    data: LabeledData,
    outcomes: FoundationOutcomes,
    pricing: Pricing,
    thresholds: Sequence[float],
    foundation_latency_ms: float,
    grid: bool = False,
) -> Simulation:
    """A route with a cascade: every tier runs once over all rows; the sweep moves the last tier's
    threshold (the others stay at the policy's); `grid` adds every combination of `thresholds` over
    all tiers (for `tune`). Accounting as in the module docstring; latency = sum over tiers of the
    share of rows reaching the tier x its p50, plus escalated share x foundation latency."""
    gates = route.tiers()
    if len(specialists) != len(gates):
        raise SimulationError("one specialist per cascade tier is needed")
    per_tier = [predict_all(specialists[0], data.texts)]
    for s in specialists[1:]:  # each further tier sees the answers of the one before (a fitted blend uses them)
        per_tier.append(s.follow(per_tier[-1], predict_all(s, data.texts)))
    if len(outcomes.correct) != len(data.texts):
        raise SimulationError("predictions, outcomes and data differ in length")
    keep = ~np.isnan(outcomes.correct)
    if not keep.any():
        raise SimulationError("no row has a known foundation outcome (nothing in the replay matched?)")
    tiers_all = [_tier_data(route, k, p, data.labels) for k, p in enumerate(per_tier)]
    policy_t = [g.min_confidence for g in gates]
    _check_cascade(route, per_tier, _assign(tiers_all, policy_t))
    tiers = [_TierData(t.confidence[keep], t.ok[keep], t.stop[keep], t.correct[keep]) for t in tiers_all]
    tier_ms = [specialist_latency_ms(s, data.texts)[0] for s in specialists]
    cost = pricing.cost(outcomes.prompt_tokens, outcomes.completion_tokens)[keep]
    fm = outcomes.correct[keep]
    args = (fm, cost, tier_ms, foundation_latency_ms)
    points = [_cascade_point(tiers, [*policy_t[:-1], t], *args) for t in thresholds]
    combos: list[SweepPoint] = []
    if grid:
        import itertools

        combos = [_cascade_point(tiers, list(ts), *args) for ts in itertools.product(thresholds, repeat=len(tiers))]
    first = _cascade_point(tiers[:1], policy_t[:1], *args)
    notes = [(f"cascade: {' -> '.join(s.name for s in specialists)} -> {route.escalate_to or 'no foundation'}; "
             "the sweep moves the last tier's min_confidence")]
    if pricing.note:
        notes.append(pricing.note)
    return Simulation(
        route=route_name, kind=route.kind, specialist=specialists[0].name,
        specialist_version="+".join(s.version for s in specialists), rows=len(data.texts),
        evaluated=int(keep.sum()), excluded=int((~keep).sum()), policy=_cascade_point(tiers, policy_t, *args),
        points=points, all_foundation=_cascade_point(tiers, [np.inf] * len(tiers), *args),
        foundation_source=outcomes.source, pricing=pricing, specialist_latency_ms=tier_ms[0],
        specialist_latency_source="manifest latency_p50_us of each tier (or measured here)",
        foundation_latency_ms=foundation_latency_ms, decide_checked_rows=len(data.texts), notes=notes,
        tiers=[s.name for s in specialists], tier_latency_ms=tier_ms, first_tier_only=first, grid=combos,
    )


def simulate(
    route_name: str,
    route: ClassifyRoute | ChatRoute | AutoRoute,
    specialist: Specialist,
    data: LabeledData,
    outcomes: FoundationOutcomes,
    pricing: Pricing,
    thresholds: Sequence[float],
    foundation_latency_ms: float,
    predictions: Sequence[Prediction] | None = None,
) -> Simulation:
    """Sweep `thresholds` over one prediction pass; see the module docstring for the accounting."""
    if isinstance(route, AutoRoute):
        raise SimulationError(f"route {route_name!r} is an auto route: its specialist picks a foundation "
                              "tier, it never answers, so there is no threshold to simulate")
    preds = list(predictions) if predictions is not None else predict_all(specialist, data.texts)
    if len(preds) != len(data.texts) or len(outcomes.correct) != len(data.texts):
        raise SimulationError("predictions, outcomes and data differ in length")
    notes: list[str] = []
    unknown = sorted(set(data.labels) - set(specialist.classes))
    if unknown:
        notes.append(f"{len(unknown)} gold label(s) are not classes of {specialist.name!r} (the specialist "
                     f"is always wrong on them): {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    if isinstance(route, ChatRoute):
        notes.append("chat route: the specialist share is scored by intent-label correctness of the canned "
                     "answer; the escalated share by the foundation outcome")

    confidence = np.array([p.confidence for p in preds], dtype=np.float64)
    forced = _forced(route, preds)
    policy_t = np.array([route.min_confidence])
    _check_decide(route, preds, forced | (confidence < route.min_confidence))

    keep = ~np.isnan(outcomes.correct)
    if not keep.any():
        raise SimulationError("no row has a known foundation outcome (nothing in the replay matched?)")
    spec_correct = np.array([p.label == g for p, g in zip(preds, data.labels)], dtype=np.float64)
    cost = pricing.cost(outcomes.prompt_tokens, outcomes.completion_tokens)
    spec_ms, spec_source = specialist_latency_ms(specialist, data.texts)
    args = (confidence[keep], forced[keep], spec_correct[keep], outcomes.correct[keep], cost[keep],
            spec_ms, foundation_latency_ms)
    points = _points(np.asarray(thresholds, dtype=np.float64), *args)
    policy = _points(policy_t, *args)[0]
    everything = _points(np.array([np.inf]), *args)[0]
    if pricing.note:
        notes.append(pricing.note)
    return Simulation(
        route=route_name, kind=route.kind, specialist=specialist.name, specialist_version=specialist.version,
        rows=len(preds), evaluated=int(keep.sum()), excluded=int((~keep).sum()), policy=policy, points=points,
        all_foundation=everything, foundation_source=outcomes.source, pricing=pricing,
        specialist_latency_ms=spec_ms, specialist_latency_source=spec_source,
        foundation_latency_ms=foundation_latency_ms, decide_checked_rows=len(preds), notes=notes,
    )


# ---- presentation ---------------------------------------------------------------------------------
_COLUMNS = ("min_conf", "specialist", "escalated", "spec acc", "FM acc", "overall", "FM USD", "USD/1k",
            "cost vs FM", "latency ms")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _row(label: str, p: SweepPoint, rows: int) -> list[str]:
    share = _pct(p.specialist_share)
    if len(p.tier_shares) > 1:
        share += " (" + " + ".join(_pct(x) for x in p.tier_shares) + ")"
    return [label, share, _pct(p.escalated_share), _pct(p.specialist_accuracy),
            _pct(p.foundation_accuracy), _pct(p.accuracy), f"{p.cost_usd:.4f}",
            f"{1000 * p.cost_usd / rows:.4f}", _pct(p.cost_fraction), f"{p.latency_ms:.1f}"]


def render_rows(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_rows(sim: Simulation, every: float | None = 0.05,
               extra: Sequence[tuple[str, SweepPoint]] = ()) -> list[list[str]]:
    """Header, policy row, `extra` rows, sweep rows at multiples of `every` (None: none), all-escalated.

    Consecutive sweep rows with the same outcome are merged into one ``a-b`` row.
    """
    def name(p: SweepPoint) -> str:
        return "/".join(f"{t:g}" for t in p.thresholds) if p.thresholds else f"{p.min_confidence:g}"

    rows = [list(_COLUMNS), _row(f"{name(sim.policy)} (policy)", sim.policy, sim.evaluated)]
    if sim.first_tier_only is not None:
        rows.append(_row(f"{name(sim.first_tier_only)} ({sim.tiers[0]} only)", sim.first_tier_only, sim.evaluated))
    rows += [_row(label, p, sim.evaluated) for label, p in extra]
    shown = [p for p in sim.points if every and (abs(p.min_confidence / every - round(p.min_confidence / every))
                                                 < 1e-6 or p is sim.points[-1])]
    runs: list[list[SweepPoint]] = []
    for p in shown:
        if runs and (runs[-1][0].escalated_share, runs[-1][0].accuracy) == (p.escalated_share, p.accuracy):
            runs[-1].append(p)
        else:
            runs.append([p])
    for run in runs:
        label = f"{run[0].min_confidence:g}" + (f"-{run[-1].min_confidence:g}" if len(run) > 1 else "")
        rows.append(_row(label, run[0], sim.evaluated))
    rows.append(_row("all escalated", sim.all_foundation, sim.evaluated))
    return rows


def describe(sim: Simulation) -> str:
    """The header lines: what was simulated and every assumption behind the numbers."""
    lines = [
        f"route {sim.route!r} ({sim.kind}), specialist {sim.specialist}@{sim.specialist_version}",
        f"rows: {sim.rows}" + (f", evaluated {sim.evaluated}, excluded {sim.excluded}" if sim.excluded else ""),
        f"foundation: {sim.foundation_source}",
        (f"prices: litellm table, {sim.pricing.model} (${sim.pricing.usd_per_prompt_token * 1e6:.3f} / "
        f"${sim.pricing.usd_per_completion_token * 1e6:.3f} per 1M prompt / completion tokens)"),
        (f"latency: specialist p50 {sim.specialist_latency_ms:.3f} ms ({sim.specialist_latency_source}) + "
        f"escalated share x foundation {sim.foundation_latency_ms:g} ms (ASSUMED, --foundation-latency-ms)"),
        *(["tiers: " + ", ".join(f"{n} p50 {ms:.3f} ms" for n, ms in zip(sim.tiers, sim.tier_latency_ms))
           + " (a tier's latency counts for the share of rows that reach it)"] if sim.tiers else []),
        (f"decide() check: policy point recomputed with router.decision.decide on all {sim.decide_checked_rows} "
        "rows: identical"),
    ]
    lines += [f"note: {n}" for n in sim.notes]
    return "\n".join(lines)


def format_table(sim: Simulation, every: float | None = 0.05) -> str:
    return describe(sim) + "\n\n" + render_rows(table_rows(sim, every))

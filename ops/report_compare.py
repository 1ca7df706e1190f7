"""The hybrid pattern's own comparison, per route: the specialist alone, the foundation model
alone, and the hybrid as it served.

In: a report's per-route traffic and cost (`report.RouteRow`), its per-path latency histograms,
and the model cards (manifest.json) of the routes' specialists, found through the policy. Out:
`Comparison` rows (three per route), drawn as a chart (cost per 1,000 requests, log scale) and
an HTML table.

What each option's figures are, and where they are estimates (the page says so too):

- **specialist alone** answers every request. Accuracy: its model card's test accuracy. Cost:
  the route's specialist-path cost per specialist answer. Latency: the specialist path's.
- **foundation alone** answers every request with the route's alias. Cost: what the route spent
  on the foundation path plus the cost it avoided (what the alias would have charged for every
  answer it did not give), per request. Latency: the foundation path's. Accuracy: it is the
  reference the others are compared with.
- **hybrid** is what was served. Share answered locally: specialist, cache and degraded answers
  (no foundation call). Cost: everything the route spent (shadow checks included), per request.
  Latency: the route's mix of paths applied to the per-path histograms (latency is exported by
  path, not by route). Accuracy: shadow agreement with the foundation model, when sampled.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .report_svg import Chart, bars

if TYPE_CHECKING:
    from .report import RouteRow

__all__ = ["Card", "Comparison", "compare", "comparison_chart", "comparison_html", "histogram_quantile", "read_cards"]

OPTIONS = ("specialist alone", "foundation alone", "hybrid")
_LOCAL = ("specialist", "cache", "degraded")


@dataclass(frozen=True, slots=True)
class Card:
    """What a specialist's model card says about it (None where the manifest does not say)."""

    specialist: str
    accuracy: float | None
    size_bytes: int | None
    train_rows: int | None


@dataclass(frozen=True, slots=True)
class Comparison:
    route: str
    option: str
    """One of `OPTIONS`."""
    local_share: float
    usd_per_1000: float | None
    p50_ms: float | None
    p99_ms: float | None
    accuracy: float | None
    accuracy_kind: str
    """What `accuracy` is: card test accuracy, shadow agreement, or "reference"/"unknown"."""
    card: Card | None = None


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """histogram_quantile over cumulative (upper bound, count) buckets, as Prometheus does it."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _mixture(weights: Mapping[str, float], buckets: Mapping[str, Sequence[tuple[float, float]]]
             ) -> list[tuple[float, float]]:
    """The cumulative buckets of a mix of paths: each path's distribution weighted by its share."""
    total = sum(w for p, w in weights.items() if buckets.get(p) and max(c for _, c in buckets[p]) > 0)
    if total <= 0:
        return []
    mixed: dict[float, float] = {}
    for path, weight in weights.items():
        cum = sorted(buckets.get(path, ()))
        if not cum or cum[-1][1] <= 0 or weight <= 0:
            continue
        for bound, count in cum:
            mixed[bound] = mixed.get(bound, 0.0) + weight / total * count / cum[-1][1]
    return sorted(mixed.items())


def _ms(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    v = histogram_quantile(q, buckets)
    return None if v is None else v * 1000


def read_cards(policy_path: Path, specialists_dir: Path) -> tuple[dict[str, Card], str | None]:
    """Route -> its specialist's card, from the policy and the manifests; (cards, why none) when
    the policy cannot be read (the comparison then has no card columns, and says why)."""
    from router.policy import PolicyConfigError, load_policy

    try:
        policy = load_policy(policy_path).policy
    except (PolicyConfigError, OSError, ValueError) as exc:
        return {}, f"no model cards: policy {policy_path} not readable ({type(exc).__name__})"
    cards: dict[str, Card] = {}
    for name, route in policy.routes.items():
        specialist = getattr(route, "specialist", None)
        if not isinstance(specialist, str):
            continue
        try:
            manifest = json.loads((specialists_dir / specialist / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        metrics = manifest.get("metrics") or {}
        files = metrics.get("file_bytes")
        size = sum(int(v) for v in files.values()) if isinstance(files, dict) else None
        rows = (manifest.get("trained_with") or {}).get("train_rows")
        accuracy = metrics.get("accuracy")
        cards[name] = Card(specialist, float(accuracy) if isinstance(accuracy, int | float) else None, size,
                           int(rows) if isinstance(rows, int) else None)
    return cards, None


def compare(routes: Sequence[RouteRow], buckets: Mapping[str, Sequence[tuple[float, float]]],
            cards: Mapping[str, Card]) -> list[Comparison]:
    """Three rows per route that answered something: specialist alone, foundation alone, hybrid."""
    spec = buckets.get("specialist", ())
    found = buckets.get("foundation", ())
    out: list[Comparison] = []
    for r in routes:
        total = r.total
        if total <= 0:
            continue
        card = cards.get(r.route)
        n_spec = r.requests.get("specialist", 0.0)
        spec_cost = 1000 * r.cost_by_path.get("specialist", 0.0) / n_spec if n_spec else None
        fm_total = r.cost_by_path.get("foundation", 0.0) + r.avoided_usd
        mix = _mixture(r.requests, buckets)
        out += [
            Comparison(r.route, OPTIONS[0], 1.0, spec_cost, _ms(0.5, spec), _ms(0.99, spec),
                       card.accuracy if card else None, "card (test split)" if card else "unknown", card),
            Comparison(r.route, OPTIONS[1], 0.0, 1000 * fm_total / total if fm_total > 0 else None,
                       _ms(0.5, found), _ms(0.99, found), None, "reference"),
            Comparison(r.route, OPTIONS[2], sum(r.requests.get(p, 0.0) for p in _LOCAL) / total,
                       1000 * r.cost_usd / total, _ms(0.5, mix), _ms(0.99, mix), r.shadow_agreement,
                       "shadow agreement" if r.shadow_agreement is not None else "unknown"),
        ]
    return out


def comparison_chart(rows: Sequence[Comparison], limit: int = 8) -> Chart | None:
    """Cost per 1,000 requests of the three options, by route (log scale: they differ by decades)."""
    routes = list(dict.fromkeys(c.route for c in rows))[:limit]
    if not routes:
        return None
    cost = {(c.route, c.option): c.usd_per_1000 or 0.0 for c in rows}
    return bars("USD per 1,000 requests: alone vs hybrid", "USD", routes,
                {o: [cost.get((r, o), 0.0) for r in routes] for o in OPTIONS}, log=True)


def _cell(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def comparison_html(rows: Sequence[Comparison]) -> str:
    """The table: one row per route and option (card size and training rows on the specialist's)."""
    body = "".join(
        f"<tr><td>{html.escape(c.route)}</td><td>{html.escape(c.option)}</td><td>{c.local_share:.1%}</td>"
        f"<td>{_cell(c.usd_per_1000, '.6f')}</td><td>{_cell(c.p50_ms, '.3f')}</td><td>{_cell(c.p99_ms, '.3f')}</td>"
        f"<td>{_cell(c.accuracy, '.1%')}</td><td>{html.escape(c.accuracy_kind)}</td>"
        f"<td>{html.escape(c.card.specialist) if c.card else ''}</td>"
        f"<td>{'' if c.card is None or c.card.size_bytes is None else f'{c.card.size_bytes / 1e6:.1f} MB'}</td>"
        f"<td>{'' if c.card is None or c.card.train_rows is None else f'{c.card.train_rows:,}'}</td></tr>"
        for c in rows)
    return (
        "<h2>Specialist alone, foundation model alone, hybrid (per route)</h2>"
        "<p>Share answered locally: without a foundation call. Alone, the specialist's cost is its cost per "
        "specialist answer; the foundation model's is the route's foundation spend plus the cost avoided, per "
        "request. Latency of the options alone is their path's; the hybrid's is the route's mix of paths over the "
        "per-path histograms (latency is exported by path, not by route). Accuracy: the specialist's model card "
        "(test split), the hybrid's shadow agreement with the foundation model when sampled; the foundation model "
        "is the reference.</p>"
        "<table><tr><th>route</th><th>option</th><th>answered locally</th><th>USD per 1,000</th><th>p50 ms</th>"
        "<th>p99 ms</th><th>accuracy</th><th>accuracy is</th><th>specialist</th><th>model size</th>"
        f"<th>training rows</th></tr>{body}</table>")

"""`hybrid-router report`: traffic, cost and latency by path and by route, as SVG or HTML.

In: a Prometheus server (a window of its data, and its course over time), a gateway's own
`/metrics` (totals since it started), or a `simulate --json` file (the policy's operating point).
Out: `Split`, rendered as an SVG of up to seven panels (requests, money and latency by path;
requests by route; cost per 1,000 requests of the specialist alone, the foundation model alone and
the hybrid by route (`report_compare`); traffic and spend over time) or an HTML page with the SVG
inline and the numbers as tables, the per-route comparison included. For people who want the picture without Grafana. It is
drawn by `report_svg` with no plotting library, so it works from the serving install; values
that span decades (money, latency) get log scales.
"""

from __future__ import annotations

import html
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import PATHS

from .report_compare import Comparison, comparison_chart, comparison_html, histogram_quantile
from .report_svg import Chart, bars, grid, lines

__all__ = [
    "PathRow",
    "RouteRow",
    "Split",
    "Timeline",
    "from_metrics_text",
    "from_prometheus",
    "from_simulation",
    "render_html",
    "render_svg",
]

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(slots=True)
class PathRow:
    path: str
    requests: float = 0.0
    cost_usd: float = 0.0
    latency_ms: dict[float, float | None] = field(default_factory=dict)


@dataclass(slots=True)
class RouteRow:
    route: str
    requests: dict[str, float] = field(default_factory=dict)
    """Answers by path."""
    cost_usd: float = 0.0
    cost_by_path: dict[str, float] = field(default_factory=dict)
    avoided_usd: float = 0.0
    """What the route's foundation alias would have charged for the answers it did not give."""
    shadow_agreement: float | None = None

    def add_cost(self, path: str, usd: float) -> None:
        self.cost_usd += usd
        self.cost_by_path[path] = self.cost_by_path.get(path, 0.0) + usd

    @property
    def total(self) -> float:
        return sum(self.requests.values())


@dataclass(slots=True)
class Timeline:
    """Requests per second by path and spend in USD per hour, at `times` (unix seconds)."""

    times: list[float]
    requests_per_s: dict[str, list[float]]
    usd_per_hour: list[float]


@dataclass(slots=True)
class Split:
    title: str
    rows: list[PathRow]
    cost_avoided_usd: float
    notes: list[str] = field(default_factory=list)
    routes: list[RouteRow] = field(default_factory=list)
    timeline: Timeline | None = None
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per path: the latency histogram's cumulative (upper bound in seconds, count) buckets."""
    comparison: list[Comparison] = field(default_factory=list)
    """Specialist alone / foundation alone / hybrid per route (`report_compare.compare`)."""

    @property
    def total_requests(self) -> float:
        return sum(r.requests for r in self.rows)

    @property
    def total_cost(self) -> float:
        return sum(r.cost_usd for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "cost_avoided_usd": self.cost_avoided_usd, "notes": self.notes,
                "rows": [{"path": r.path, "requests": r.requests, "cost_usd": r.cost_usd,
                          "latency_ms": {str(q): v for q, v in r.latency_ms.items()}} for r in self.rows]}


def from_metrics_text(text: str, title: str) -> Split:
    """Totals since the gateway started, from its /metrics exposition."""
    rows = {p: PathRow(p) for p in PATHS}
    routes: dict[str, RouteRow] = {}
    buckets: dict[str, list[tuple[float, float]]] = {p: [] for p in PATHS}
    avoided = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            path = s.labels.get("path", "")
            route = s.labels.get("route", "")
            if s.name == "hybrid_router_requests_total" and path in rows:
                rows[path].requests += s.value
                per_route = routes.setdefault(route, RouteRow(route))
                per_route.requests[path] = per_route.requests.get(path, 0.0) + s.value
            elif s.name == "hybrid_router_cost_usd_total":
                if path in rows:
                    rows[path].cost_usd += s.value
                if route:
                    routes.setdefault(route, RouteRow(route)).add_cost(path, s.value)
            elif s.name == "hybrid_router_cost_avoided_usd_total":
                avoided += s.value
                if route:
                    routes.setdefault(route, RouteRow(route)).avoided_usd += s.value
            elif s.name == "hybrid_router_shadow_agreement" and route:
                routes.setdefault(route, RouteRow(route)).shadow_agreement = s.value
            elif s.name == "hybrid_router_request_duration_seconds_bucket" and path in buckets:
                buckets[path].append((float(s.labels["le"]), s.value))
    for path, row in rows.items():
        for q in QUANTILES:
            v = histogram_quantile(q, buckets[path])
            row.latency_ms[q] = None if v is None else v * 1000
    return Split(title, list(rows.values()), avoided, ["totals since the gateway started"],
                 _answered(routes), buckets=buckets)


def _answered(routes: dict[str, RouteRow]) -> list[RouteRow]:
    """Routes that answered something, busiest first (a shadow gauge alone is not a route's traffic)."""
    return sorted((r for r in routes.values() if r.total > 0), key=lambda r: -r.total)


def _query(client: httpx.Client, promql: str) -> list[dict[str, Any]]:
    r = client.get("/api/v1/query", params={"query": promql})
    r.raise_for_status()
    data = r.json()
    if data.get("status") != "success":
        raise ValueError(f"Prometheus refused {promql!r}: {data.get('error')}")
    return list(data["data"]["result"])


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(window: str) -> float:
    m = re.fullmatch(r"(\d+)([smhdw])", window)
    if m is None:
        raise ValueError(f"window {window!r}: use a number and one of s, m, h, d, w (e.g. 24h)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def from_prometheus(url: str, window: str, title: str) -> Split:
    """The last `window` (a PromQL duration, e.g. 1h) of a Prometheus server's data."""
    seconds = _seconds(window)
    rows = {p: PathRow(p) for p in PATHS}
    routes: dict[str, RouteRow] = {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=10) as client:
        for r in _query(client, f"sum by (route, path) (increase(hybrid_router_requests_total[{window}]))"):
            path, route = r["metric"].get("path"), r["metric"].get("route", "")
            if path in rows:
                rows[path].requests += float(r["value"][1])
                routes.setdefault(route, RouteRow(route)).requests[path] = float(r["value"][1])
        for r in _query(client, f"sum by (route, path) (increase(hybrid_router_cost_usd_total[{window}]))"):
            path, route = r["metric"].get("path"), r["metric"].get("route", "")
            if path in rows:
                rows[path].cost_usd += float(r["value"][1])
            if route:
                routes.setdefault(route, RouteRow(route)).add_cost(path or "", float(r["value"][1]))
        avoided = 0.0
        for r in _query(client, f"sum by (route) (increase(hybrid_router_cost_avoided_usd_total[{window}]))"):
            avoided += float(r["value"][1])
            routes.setdefault(r["metric"].get("route", ""), RouteRow(r["metric"].get("route", ""))).avoided_usd = (
                float(r["value"][1]))
        for r in _query(client, "max by (route) (hybrid_router_shadow_agreement)"):
            route = r["metric"].get("route", "")
            routes.setdefault(route, RouteRow(route)).shadow_agreement = float(r["value"][1])
        buckets: dict[str, list[tuple[float, float]]] = {p: [] for p in PATHS}
        for r in _query(client, f"sum by (le, path) (increase(hybrid_router_request_duration_seconds_bucket[{window}]))"):
            if r["metric"].get("path") in buckets:
                buckets[r["metric"]["path"]].append((float(r["metric"]["le"]), float(r["value"][1])))
        for q in QUANTILES:
            for row in rows.values():
                row.latency_ms[q] = None
            for r in _query(client, f"histogram_quantile({q}, sum by (le, path) "
                                    f"(rate(hybrid_router_request_duration_seconds_bucket[{window}])))"):
                v = float(r["value"][1])
                if r["metric"].get("path") in rows and not math.isnan(v):
                    rows[r["metric"]["path"]].latency_ms[q] = v * 1000
        timeline = _timeline(client, seconds)
    return Split(title, list(rows.values()), avoided, [f"Prometheus {url}, last {window}"],
                 _answered(routes), timeline, buckets)


def _timeline(client: httpx.Client, seconds: float) -> Timeline | None:
    """About 60 points over the window; rates over two steps (at least 30 s) so each point is smooth."""
    end = time.time()
    step = max(1.0, seconds / 60)
    rng = f"{max(30, int(2 * step))}s"
    params = {"start": end - seconds, "end": end, "step": step}

    def query_range(promql: str) -> list[dict[str, Any]]:
        r = client.get("/api/v1/query_range", params={**params, "query": promql})
        r.raise_for_status()
        return list(r.json()["data"]["result"])

    times = [end - seconds + i * step for i in range(int(seconds // step) + 1)]

    def on_grid(values: list[list[Any]]) -> list[float]:
        got = {round(float(t), 3): float(v) for t, v in values}
        return [got.get(round(t, 3), math.nan) for t in times]

    by_path = {r["metric"].get("path", ""): r["values"] for r in query_range(
        f"sum by (path) (rate(hybrid_router_requests_total[{rng}]))")}
    if not by_path:
        return None
    spend = query_range(f"sum(rate(hybrid_router_cost_usd_total[{rng}])) * 3600")
    return Timeline(times, {p: on_grid(by_path[p]) for p in PATHS if p in by_path},
                    on_grid(spend[0]["values"]) if spend else [math.nan] * len(times))


def from_simulation(data: dict[str, Any], title: str) -> Split:
    """The policy's operating point of a `simulate --json` run (per 1,000 requests)."""
    point = data["policy"]
    everything = data["all_foundation"]
    per = 1000 / max(1, data["evaluated"])
    spec_ms = float(data["specialist_latency_ms"])
    fm_ms = float(data["foundation_latency_ms"])
    rows = [
        PathRow("specialist", point["specialist_share"] * 1000, 0.0, {q: spec_ms for q in QUANTILES}),
        PathRow("foundation", point["escalated_share"] * 1000, point["cost_usd"] * per,
                {q: spec_ms + fm_ms for q in QUANTILES}),
    ]
    avoided = (everything["cost_usd"] - point["cost_usd"]) * per
    notes = [(f"simulated: route {data['route']}, min_confidence {point['min_confidence']}, "
              f"accuracy {point['accuracy']:.1%}"), data["foundation_source"],
             "latency: specialist p50 and an assumed foundation latency (not measured)"]
    return Split(title, rows, avoided, notes)


def _charts(split: Split) -> list[Chart]:
    rows = [r for r in split.rows if r.requests > 0] or split.rows
    names = [r.path for r in rows]
    total = split.total_requests or 1.0
    charts = [
        bars("requests by path", "requests", names, {"requests": [r.requests for r in rows]},
             labels=[f"{r.requests / total:.0%}" for r in rows]),
        bars(f"USD: spent {split.total_cost:.4g}, avoided {split.cost_avoided_usd:.4g}", "USD",
             [*names, "avoided"], {"USD": [r.cost_usd for r in rows] + [split.cost_avoided_usd]}, log=True),
        bars("latency by path", "ms", names,
             {f"p{int(q * 100)}": [r.latency_ms.get(q) or 0.0 for r in rows] for q in QUANTILES}, log=True),
    ]
    routes = [r for r in split.routes if r.total > 0][:8]
    if routes:
        charts.append(bars("requests by route and path", "requests", [r.route for r in routes],
                           {p: [r.requests.get(p, 0.0) for r in routes] for p in PATHS
                            if any(r.requests.get(p) for r in routes)}))
        # With the comparison, the hybrid's cost per route is one of its three series.
        charts.append(comparison_chart(split.comparison) or bars(
            "cost per 1,000 requests by route", "USD", [r.route for r in routes],
            {"cost": [1000 * r.cost_usd / r.total for r in routes]}, log=True))
    t = split.timeline
    if t is not None and t.times:
        ends = (time.strftime("%H:%M", time.gmtime(t.times[0])), time.strftime("%H:%M UTC", time.gmtime(t.times[-1])))
        charts.append(lines("requests/s by path over time", "requests/s", t.times, t.requests_per_s, ends))
        charts.append(lines("foundation and specialist spend over time", "USD/hour", t.times,
                            {"spend": t.usd_per_hour}, ends))
    return charts


def render_svg(split: Split) -> str:
    return grid(split.title, "; ".join(split.notes), _charts(split))


def render_html(split: Split, out: Path) -> None:
    """One self-contained page: the SVG inline and the numbers as tables (writes only `out`)."""
    rows = "".join(
        (f"<tr><td>{html.escape(r.path)}</td><td>{r.requests:,.0f}</td><td>{r.cost_usd:.6f}</td>")
        + "".join(f"<td>{'' if r.latency_ms.get(q) is None else f'{r.latency_ms[q]:.3f}'}</td>" for q in QUANTILES)
        + "</tr>" for r in split.rows)
    route_rows = "".join(
        f"<tr><td>{html.escape(r.route)}</td><td>{r.total:,.0f}</td>"
        + "".join(f"<td>{r.requests.get(p, 0.0) / (r.total or 1):.1%}</td>" for p in PATHS)
        + f"<td>{r.cost_usd:.6f}</td><td>{1000 * r.cost_usd / (r.total or 1):.6f}</td></tr>" for r in split.routes)
    out.write_text(
        "<!doctype html><meta charset=utf-8><title>Hybrid Router report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;text-align:right}</style>"
        f"<h1>{html.escape(split.title)}</h1><p>{html.escape('; '.join(split.notes))}</p>"
        f"{render_svg(split)}"
        "<h2>By path</h2><table><tr><th>path</th><th>requests</th><th>cost USD</th><th>p50 ms</th><th>p95 ms</th>"
        f"<th>p99 ms</th></tr>{rows}</table><p>cost avoided: {split.cost_avoided_usd:.6f} USD</p>"
        "<h2>By route</h2><table><tr><th>route</th><th>requests</th>"
        + "".join(f"<th>{p}</th>" for p in PATHS)
        + f"<th>cost USD</th><th>USD per 1,000</th></tr>{route_rows}</table>"
        + (comparison_html(split.comparison) if split.comparison else ""))


def load_simulation(path: Path) -> dict[str, Any]:
    data = orjson.loads(path.read_bytes())
    if not isinstance(data, dict) or "policy" not in data:
        raise ValueError(f"{path} is not a `simulate --json` file")
    return data

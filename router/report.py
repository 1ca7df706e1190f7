"""`hybrid-router report`: the cost and latency split by path, as a PNG or HTML page.

In: a Prometheus server (a window of its data), a gateway's own `/metrics` (totals since it
started), or a `simulate --json` file (the policy's operating point). Out: `Split`, rendered as a
three-panel PNG (requests, money, latency by path) or an HTML page embedding it with a table.
For people who want the picture without Grafana. matplotlib (the `train` extra) is imported only
when rendering.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from .metrics import PATHS

__all__ = [
    "PathRow",
    "Split",
    "from_metrics_text",
    "from_prometheus",
    "from_simulation",
    "render_html",
    "render_png",
]

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(slots=True)
class PathRow:
    path: str
    requests: float = 0.0
    cost_usd: float = 0.0
    latency_ms: dict[float, float | None] = field(default_factory=dict)


@dataclass(slots=True)
class Split:
    title: str
    rows: list[PathRow]
    cost_avoided_usd: float
    notes: list[str] = field(default_factory=list)

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


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
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


def from_metrics_text(text: str, title: str) -> Split:
    """Totals since the gateway started, from its /metrics exposition."""
    rows = {p: PathRow(p) for p in PATHS}
    buckets: dict[str, list[tuple[float, float]]] = {p: [] for p in PATHS}
    avoided = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            path = s.labels.get("path", "")
            if s.name == "hybrid_router_requests_total" and path in rows:
                rows[path].requests += s.value
            elif s.name == "hybrid_router_cost_usd_total" and path in rows:
                rows[path].cost_usd += s.value
            elif s.name == "hybrid_router_cost_avoided_usd_total":
                avoided += s.value
            elif s.name == "hybrid_router_request_duration_seconds_bucket" and path in buckets:
                buckets[path].append((float(s.labels["le"]), s.value))
    for path, row in rows.items():
        for q in QUANTILES:
            v = _quantile(q, buckets[path])
            row.latency_ms[q] = None if v is None else v * 1000
    return Split(title, list(rows.values()), avoided, ["totals since the gateway started"])


def _query(client: httpx.Client, promql: str) -> list[dict[str, Any]]:
    r = client.get("/api/v1/query", params={"query": promql})
    r.raise_for_status()
    data = r.json()
    if data.get("status") != "success":
        raise ValueError(f"Prometheus refused {promql!r}: {data.get('error')}")
    return list(data["data"]["result"])


def from_prometheus(url: str, window: str, title: str) -> Split:
    """The last `window` (a PromQL duration, e.g. 1h) of a Prometheus server's data."""
    rows = {p: PathRow(p) for p in PATHS}
    with httpx.Client(base_url=url.rstrip("/"), timeout=10) as client:
        for r in _query(client, f"sum by (path) (increase(hybrid_router_requests_total[{window}]))"):
            if r["metric"].get("path") in rows:
                rows[r["metric"]["path"]].requests = float(r["value"][1])
        for r in _query(client, f"sum by (path) (increase(hybrid_router_cost_usd_total[{window}]))"):
            if r["metric"].get("path") in rows:
                rows[r["metric"]["path"]].cost_usd = float(r["value"][1])
        avoided = sum(float(r["value"][1]) for r in _query(
            client, f"sum(increase(hybrid_router_cost_avoided_usd_total[{window}]))"))
        for q in QUANTILES:
            for row in rows.values():
                row.latency_ms[q] = None
            for r in _query(client, f"histogram_quantile({q}, sum by (le, path) "
                                    f"(rate(hybrid_router_request_duration_seconds_bucket[{window}])))"):
                v = float(r["value"][1])
                if r["metric"].get("path") in rows and not math.isnan(v):
                    rows[r["metric"]["path"]].latency_ms[q] = v * 1000
    return Split(title, list(rows.values()), avoided, [f"Prometheus {url}, last {window}"])


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


def render_png(split: Split, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"specialist": "#2a9d8f", "cache": "#8ab17d", "foundation": "#e76f51", "degraded": "#e9c46a"}
    rows = [r for r in split.rows if r.requests > 0] or split.rows
    names = [r.path for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    total = split.total_requests or 1.0
    ax = axes[0]
    bars = ax.bar(names, [r.requests for r in rows], color=[colors.get(n, "grey") for n in names])
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(f"{r.requests / total:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom")
    ax.set_title("requests by path")
    ax = axes[1]
    labels = [*names, "avoided"]
    values = [r.cost_usd for r in rows] + [split.cost_avoided_usd]
    ax.bar(labels, values, color=[colors.get(n, "grey") for n in names] + ["#264653"])
    ax.set_title(f"USD: spent {split.total_cost:.4g}, saved {split.cost_avoided_usd:.4g}")
    ax = axes[2]
    width = 0.25
    for k, q in enumerate(QUANTILES):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        ax.bar(xs, [r.latency_ms.get(q) or 0.0 for r in rows], width, label=f"p{int(q * 100)}")
    ax.set_xticks(range(len(rows)), names)
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.legend()
    ax.set_title("latency by path")
    fig.suptitle(split.title + ("\n" + "; ".join(split.notes) if split.notes else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def render_html(split: Split, out: Path) -> None:
    png = out.with_suffix(".png")
    render_png(split, png)
    image = base64.b64encode(png.read_bytes()).decode()
    png.unlink()
    rows = "".join(
        (f"<tr><td>{html.escape(r.path)}</td><td>{r.requests:,.0f}</td><td>{r.cost_usd:.6f}</td>")
        + "".join(f"<td>{'' if r.latency_ms.get(q) is None else f'{r.latency_ms[q]:.3f}'}</td>" for q in QUANTILES)
        + "</tr>" for r in split.rows)
    out.write_text(
        "<!doctype html><meta charset=utf-8><title>Hybrid Router report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;text-align:right}</style>"
        f"<h1>{html.escape(split.title)}</h1><p>{html.escape('; '.join(split.notes))}</p>"
        f"<img alt='split by path' src='data:image/png;base64,{image}'>"
        "<table><tr><th>path</th><th>requests</th><th>cost USD</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>"
        f"{rows}</table><p>cost avoided: {split.cost_avoided_usd:.6f} USD</p>")


def load_simulation(path: Path) -> dict[str, Any]:
    data = orjson.loads(path.read_bytes())
    if not isinstance(data, dict) or "policy" not in data:
        raise ValueError(f"{path} is not a `simulate --json` file")
    return data

"""Results -> bench/results/<date>.json and a dated section appended to BENCHMARKS.md.

`evaluate_targets` checks the issue's targets against one run (ratios against LiteLLM Proxy use
the proxy measured in the same run); `render_markdown` turns a run into the dated section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .servers import REPO

__all__ = ["RESULTS_DIR", "append_benchmarks_md", "evaluate_targets", "render_markdown", "write_results"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"


def _get(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _target(tid: str, text: str, measured: float | None, limit: float, higher_is_better: bool,
            unit: str, hint: str = "") -> dict[str, Any]:
    if measured is None:
        return {"id": tid, "target": text, "measured": None, "met": None, "margin": "not measured", "hint": hint}
    met = measured >= limit if higher_is_better else measured <= limit
    if higher_is_better:
        margin = f"{measured / limit:.2f}x the target" if limit else ""
    else:
        margin = f"{(limit - measured):+.3g} {unit} headroom" if met else f"{measured - limit:.3g} {unit} over"
    return {"id": tid, "target": text, "measured": round(measured, 4), "unit": unit, "met": met, "margin": margin,
            "hint": "" if met else hint}


def evaluate_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    sc = r.get("scenarios", {})
    sp8 = _get(sc, "specialist_path", "c8", "median")
    sp1 = _get(sc, "specialist_path", "c1", "median")
    ch8 = _get(sc, "cache_hit_path", "c8", "median")
    fg8 = _get(sc, "foundation_path", "c8", "gateway", "median")
    fp8 = _get(sc, "foundation_path", "c8", "litellm_proxy", "median")
    fg1 = _get(sc, "foundation_path", "c1", "gateway", "median")
    fd1 = _get(sc, "foundation_path", "c1", "direct_litellm", "median")
    busy = _get(r, "load_before", "cpu_busy_share")
    busy_hint = f"machine shared: {busy:.0%} of all CPU busy before the run" if busy is not None and busy > 0.3 else ""
    pieces = _get(r, "stages", "in_process_pieces_us") or {}
    inproc = pieces.get("gateway_classify_in_process_memory_cache")
    sp_hint = "; ".join(h for h in (
        busy_hint,
        f"in-process Gateway.classify alone takes {inproc:.0f} µs" if inproc else "",
    ) if h)
    rss = _get(r, "rss_kib", "gateway_after_all_load", "VmRSS")
    startup = _get(r, "startup_s", "gateway_median")
    bare8 = _get(sc, "bare_endpoint", "c8", "median")
    micro = {n: m for n, m in (r.get("specialist_micro") or {}).items() if "error" not in m}
    worst_one = max((m["predict_one"]["p50_us"] for m in micro.values()), default=None)
    worst_batch = min((b["texts_per_s"] for m in micro.values() for b in m["batches"] if b["batch"] == 64),
                      default=None)
    return [
        _target("specialist_vs_proxy", "specialist path >= 60x LiteLLM Proxy forwarding req/s (c8)",
                sp8["rps"] / fp8["rps"] if sp8 and fp8 else None, 60, True, "x", sp_hint),
        _target("specialist_vs_bare", "specialist path >= 0.8x the bare endpoint's req/s (c8, same specialist)",
                sp8["rps"] / bare8["rps"] if sp8 and bare8 else None, 0.8, True, "x", sp_hint),
        _target("specialist_c8_p99", "specialist path p99 <= 2 ms at c8", sp8 and sp8["p99_ms"], 2.0, False, "ms",
                busy_hint),
        _target("specialist_c1_p50", "specialist path p50 <= 0.25 ms at c1", sp1 and sp1["p50_ms"], 0.25, False,
                "ms", sp_hint),
        _target("cache_hit_vs_proxy", "cache-hit path >= 100x LiteLLM Proxy forwarding req/s (c8)",
                ch8["rps"] / fp8["rps"] if ch8 and fp8 else None, 100, True, "x", busy_hint),
        _target("predict_one_p50", "every specialist: one text <= 25 µs p50 in process (worst shown)", worst_one,
                25.0, False, "µs", _slowest(micro, lambda m: -m["predict_one"]["p50_us"])),
        _target("batch64_rate", "every specialist: batches of 64 >= 50,000 texts/s (worst shown)", worst_batch,
                50000, True, "texts/s",
                _slowest(micro, lambda m: m["batches"][-1]["texts_per_s"])),
        _target("rss", "RSS <= 250 MiB per worker, all seven specialists and litellm loaded", rss and rss / 1024,
                250.0, False, "MiB", "litellm alone is ~145 MiB of the resident set (its import, measured apart)"),
        _target("startup", "start-up to /readyz 200 <= 3 s", startup, 3.0, False, "s",
                "readiness waits for the litellm import (~2.5 s of it on a quiet core)"),
        _target("foundation_overhead", "foundation path: gateway p50 - direct litellm p50 <= 0.5 ms (c1)",
                fg1["p50_ms"] - fd1["p50_ms"] if fg1 and fd1 else None, 0.5, False, "ms", busy_hint),
        _target("foundation_vs_proxy", "foundation path >= 10x LiteLLM Proxy req/s (c8, 1 worker each)",
                fg8["rps"] / fp8["rps"] if fg8 and fp8 else None, 10.0, True, "x",
                "both forward through litellm.acompletion, which bounds the gateway (see the direct-litellm row)"),
    ]


def _slowest(micro: dict[str, Any], score: Any) -> str:
    """Hint naming the specialist with the lowest ``score``."""
    return f"slowest: {min(micro, key=lambda n: score(micro[n]))}" if micro else ""


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt_series(label: str, s: dict[str, Any] | None) -> str:
    if not s:
        return _row([label, "–", "–", "–", "–", "–"])
    m = s["median"]
    errs = m["errors"] + m["non_2xx"]
    return _row([label, f"{m['rps']:,.0f}", f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.3f}",
                 ", ".join(f"{x:,.0f}" for x in s["rps_runs"]), errs])


def render_markdown(r: dict[str, Any], json_name: str, command: str) -> str:
    mach, ver, cfg = r["machine"], r["versions"], r["config"]
    lb, la = r.get("load_before", {}), r.get("load_after", {})
    sc = r.get("scenarios", {})
    lines = [
        f"### {r['started_utc'][:16].replace('T', ' ')} UTC — {r['mode']} run",
        "",
        f"- Command: `{command}`; raw results: `bench/results/{json_name}`; took {r.get('elapsed_s', '?')} s.",
        (f"- Machine: {mach['nproc']} CPUs ({mach['cpu_model']}), {mach['mem_gib']} GiB, {mach['os']}, "
         f"kernel {mach['kernel']}."),
        f"- Versions: Python {ver['python']}, litellm {ver['litellm']}, onnxruntime {ver['onnxruntime']}, "
        f"uvicorn {ver['uvicorn']}, starlette {ver['starlette']}, uvloop {ver['uvloop']}, wrk {ver['wrk']}"
        + (f"; peer: LiteLLM Proxy {ver['peer']['litellm']} (fastapi {ver['peer']['fastapi']}, "
           f"opentelemetry-sdk {ver['peer']['opentelemetry-sdk']})" if "peer" in ver else "; peer not run") + ".",
        (f"- Method: {cfg['seconds_per_run']} s per run, {cfg['repeats']} run(s) after a 1 s warm-up, median run "
         f"by req/s shown; one gateway worker; servers under test pinned to CPU {cfg['pinning']['served_cpus']}, "
         f"wrk and the fake upstream to CPU {cfg['pinning']['load_cpus']}; upstream latency "
         f"{cfg['upstream_latency_ms']:g} ms; Redis cache: {cfg['redis']}."),
        (f"- Load from other processes: load average {lb.get('loadavg')} before, {la.get('loadavg')} after; "
         f"CPU busy {lb.get('cpu_busy_share', 0):.0%} in the second before the run."),
        "",
        _row(["path (req/s, p50/p99 ms)", "req/s", "p50 ms", "p99 ms", "req/s of each run", "errors"]),
        _row(["---"] * 6),
    ]
    for name, label in (("specialist_path", "specialist (/v1/classify)"),
                        ("bare_endpoint", "bare endpoint (same specialist)"),
                        ("cache_hit_path", "cache hit (/v1/classify)"),
                        ("tier2_path", "tier 2: sentiment_minilm answers (/v1/classify)")):
        for c, s in (sc.get(name) or {}).items():
            lines.append(_fmt_series(f"{label} {c}", s))
    lines.append(_fmt_series("specialist (chat API) c8", _get(sc, "specialist_path_chat_api", "c8")))
    lines.append(_fmt_series("cache hit (chat API, alias) c8", _get(sc, "cache_hit_path_chat_api", "c8")))
    for c, group in (sc.get("foundation_path") or {}).items():
        for who, label in (("gateway", "gateway"), ("direct_litellm", "direct litellm.acompletion"),
                           ("litellm_proxy", "LiteLLM Proxy")):
            if who in group:
                lines.append(_fmt_series(f"foundation: {label} {c}", group[who]))
    lines += ["", "Ratios (same run):", ""]
    for c in ("c1", "c8"):
        g = _get(sc, "foundation_path", c, "gateway", "median")
        p = _get(sc, "foundation_path", c, "litellm_proxy", "median")
        d = _get(sc, "foundation_path", c, "direct_litellm", "median")
        if g and p:
            lines.append(f"- foundation {c}: gateway / LiteLLM Proxy = {g['rps'] / p['rps']:.2f}x req/s, "
                         f"p50 {g['p50_ms']:.2f} vs {p['p50_ms']:.2f} ms")
        if g and d:
            lines.append(f"- foundation {c}: gateway p50 - direct litellm p50 = {g['p50_ms'] - d['p50_ms']:+.2f} ms "
                         f"(gateway / direct req/s = {g['rps'] / d['rps']:.2f}x)")
        s = _get(sc, "specialist_path", c, "median")
        if s and p:
            lines.append(f"- specialist path {c} / LiteLLM Proxy forwarding {c} = {s['rps'] / p['rps']:.1f}x req/s")
        b = _get(sc, "bare_endpoint", c, "median")
        if s and b:
            lines.append(f"- specialist path {c} / bare endpoint {c} = {s['rps'] / b['rps']:.2f}x req/s, "
                         f"p50 {s['p50_ms']:.3f} vs {b['p50_ms']:.3f} ms")
        h = _get(sc, "cache_hit_path", c, "median")
        if h and p:
            lines.append(f"- cache-hit path {c} / LiteLLM Proxy forwarding {c} = {h['rps'] / p['rps']:.1f}x req/s")
    st = r.get("startup_s", {})
    rss = r.get("rss_kib", {})
    lines += [
        "",
        f"Start-up to ready: gateway {st.get('gateway_runs')} s (median {st.get('gateway_median')} s)"
        + (f"; LiteLLM Proxy {st['litellm_proxy']} s" if "litellm_proxy" in st else "") + ".",
        "RSS (VmRSS, MiB): " + ", ".join(f"{k} {v['VmRSS'] / 1024:.0f}" for k, v in rss.items()) + ".",
        "",
        "Stages (server-side histogram `hybrid_router_stage_duration_seconds`, mean µs under load):",
        "",
    ]
    for scen in ("specialist_path", "cache_hit_path", "foundation_path"):
        stg = _get(r, "stages", scen) or {}
        if stg:
            lines.append(f"- {scen}: " + ", ".join(f"{k} {v['mean_us']:.0f}" for k, v in sorted(stg.items())))
    pieces = _get(r, "stages", "in_process_pieces_us") or {}
    if pieces:
        lines += ["", "In-process pieces of the specialist path (mean µs per call): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in pieces.items()) + "."]
    micro = r.get("specialist_micro") or {}
    if micro:
        lines += ["", _row(["specialist", "classes", "predict_one p50 µs", "p99 µs", "predict([x]) p50 µs",
                            "batch 8 texts/s", "batch 64 texts/s"]), _row(["---"] * 7)]
        for name, m in micro.items():
            if "error" in m:
                lines.append(_row([name, "error", m["error"][:60], "", "", "", ""]))
                continue
            b = {x["batch"]: x["texts_per_s"] for x in m["batches"]}
            lines.append(_row([name, m["classes"], m["predict_one"]["p50_us"], m["predict_one"]["p99_us"],
                               m["predict_list_of_one"]["p50_us"], f"{b.get(8, 0):,.0f}", f"{b.get(64, 0):,.0f}"]))
    lines += ["", "Targets:", "", _row(["target", "measured", "met", "margin", "why not (automatic hint)"]),
              _row(["---"] * 5)]
    for t in r.get("targets", []):
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        meas = "–" if t["measured"] is None else f"{t['measured']:,.3f} {t.get('unit', '')}"
        lines.append(_row([t["target"], meas, met, t["margin"], t["hint"]]))
    prof = r.get("profile_specialist_c8") or {}
    if prof.get("self"):
        lines += ["", (f"py-spy, specialist path c8 ({prof['samples']} samples, {prof['rps_while_profiling']:,.0f} "
                       "req/s while sampling), top self time:"), ""]
        for e in prof["self"][:10]:
            lines.append(f"- {e['share']:.1%} `{e['function']}`")
    return "\n".join(lines) + "\n"


def write_results(r: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = r["started_utc"][:16].replace(":", "")
    name = f"{stamp}.json" if r["mode"] == "full" else f"{stamp}-quick.json.tmp"
    path = RESULTS_DIR / name
    path.write_text(json.dumps(r, indent=1, sort_keys=False) + "\n")
    return path


def append_benchmarks_md(section: str) -> Path:
    if not BENCHMARKS_MD.exists():
        raise FileNotFoundError(f"{BENCHMARKS_MD} is missing: it holds the method description the runs append to")
    with BENCHMARKS_MD.open("a") as f:
        f.write("\n" + section)
    return BENCHMARKS_MD

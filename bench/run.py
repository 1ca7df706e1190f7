"""One benchmark run: start the servers, run every scenario, return the raw results as a dict.

Order: fake upstream and gateway (start-up time), sanity checks of each path, the specialist path
and the cache-hit path at concurrency 1/8/32 (stage histogram scraped around them), the foundation
path (gateway, direct litellm loop, LiteLLM Proxy; gateway and proxy runs interleaved), RSS,
extra cold starts, in-process micro-benchmarks, and a py-spy profile of the specialist path.
Every server is stopped at the end, also on failure.
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from . import texts
from .load import Series, ensure_wrk, measure, run_wrk, write_bodies
from .machine import load_snapshot, machine_info, versions
from .peer import PEER_VERSION, ensure_peer_venv, peer_versions, start_peer
from .policy import CACHED_ALIAS, ESCALATE_ROUTE, FORWARD_ALIAS, SPECIALIST_ROUTE, TIER2_ROUTE, write_policy
from .profile import ensure_py_spy, start_record, summarise
from .report import RESULTS_DIR
from .servers import REPO, Cpus, Server, start_bare, start_gateway, start_redis, start_upstream
from .stages import scrape_stages, stage_delta

__all__ = ["Options", "run"]



@dataclass(frozen=True, slots=True)
class Options:
    quick: bool = False
    peer: bool = True
    profile: bool = True
    pin: bool = True
    upstream_latency_ms: float = 0.0

    @property
    def seconds(self) -> int:
        return 2 if self.quick else 5

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3

    @property
    def concurrencies(self) -> tuple[int, ...]:
        return (1, 8, 32)

    @property
    def extra_starts(self) -> int:
        return 0 if self.quick else 2


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _series(series: dict[str, Series]) -> dict[str, Any]:
    return {name: s.to_dict() for name, s in series.items()}


def _check(client: httpx.Client, url: str, body: dict[str, object], path: str, expect: str,
           tier: str | None = None) -> dict[str, str]:
    r = client.post(url + path, json=body)
    if (r.status_code != 200 or r.headers.get("x-router-path") != expect
            or (tier is not None and r.headers.get("x-router-tier") != tier)):
        raise RuntimeError(f"sanity check {path} expected path {expect!r} (tier {tier}), got {r.status_code} "
                           f"{r.headers.get('x-router-path')!r} (tier {r.headers.get('x-router-tier')}): "
                           f"{r.text[:300]}")
    return {"status": str(r.status_code), "x-router-path": expect, **({"x-router-tier": tier} if tier else {})}


def _direct(cpus: Cpus, api_base: str, concurrency: int, opts: Options) -> Series:
    from .load import Measurement

    cmd = cpus.wrap([sys.executable, "-m", "bench.direct", "--api-base", api_base, "--concurrency",
                     str(concurrency), "--seconds", str(opts.seconds), "--repeats", str(opts.repeats),
                     "--messages", json.dumps(texts.chat_body("x")["messages"])], "served")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("DIRECTJSON ")), None)
    if line is None:
        raise RuntimeError(f"direct litellm loop failed: {proc.stderr[-2000:]}")
    runs = json.loads(line.removeprefix("DIRECTJSON "))
    return Series(tuple(Measurement(**r) for r in runs))


def _inproc(cpus: Cpus, policy: Path, quick: bool) -> dict[str, Any]:
    cmd = cpus.wrap([sys.executable, "-m", "bench.inproc", "--policy", str(policy), *(["--quick"] if quick else [])],
                    "served")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("INPROCJSON ")), None)
    if line is None:
        raise RuntimeError(f"in-process benchmarks failed: {proc.stderr[-2000:]}")
    return dict(json.loads(line.removeprefix("INPROCJSON ")))


def run(opts: Options) -> dict[str, Any]:
    started = datetime.now(UTC)
    wrk = ensure_wrk()
    cpus = Cpus.detect(opts.pin)
    peer_python = ensure_peer_venv() if opts.peer else None
    py_spy = ensure_py_spy() if opts.profile else None
    results: dict[str, Any] = {
        "started_utc": started.isoformat(timespec="seconds"),
        "mode": "quick" if opts.quick else "full",
        "machine": machine_info(),
        "versions": versions(),
        "load_before": load_snapshot(),
        "config": {"seconds_per_run": opts.seconds, "repeats": opts.repeats, "warmup_s": 1,
                   "pinning": {"served_cpus": cpus.served or "none", "load_cpus": cpus.load or "none"},
                   "upstream_latency_ms": opts.upstream_latency_ms, "redis": "a private redis-server on a free port",
                   "gateway_workers": 1,
                   "peer": f"LiteLLM Proxy {PEER_VERSION}, 1 worker" if opts.peer else "skipped"},
    }
    if peer_python is not None:
        results["versions"]["peer"] = peer_versions(peer_python)
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="hybrid-router-bench-") as tmp:
        work = Path(tmp)
        try:
            results.update(_scenarios(opts, wrk, cpus, work, servers, peer_python, py_spy))
        finally:
            for s in reversed(servers):
                s.stop()
    results["load_after"] = load_snapshot()
    results["elapsed_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    return results


def _scenarios(opts: Options, wrk: str, cpus: Cpus, work: Path, servers: list[Server],
               peer_python: Path | None, py_spy: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _log("starting the fake upstream")
    upstream = start_upstream(work, cpus, opts.upstream_latency_ms)
    servers.append(upstream)
    api_base = upstream.url + "/v1"
    policy = write_policy(work / "bench-policy.yaml", api_base)
    redis_server = start_redis(work)  # the bench's own, on a free port
    servers.append(redis_server)
    redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
    out["redis"] = redis_url

    _log("starting the gateway")
    gateway = start_gateway(work, cpus, policy, redis_url)
    servers.append(gateway)
    ready = gateway.wait_ready("/readyz", 60)
    out["startup_s"] = {"gateway_runs": [round(ready, 3)]}
    out["readyz"] = httpx.get(gateway.url + "/readyz").json()
    out["rss_kib"] = {"gateway_idle": gateway.rss()}

    bodies_spec = write_bodies(work / "specialist.jsonl", texts.classify_bodies(SPECIALIST_ROUTE))
    bodies_chat_spec = write_bodies(work / "chat-specialist.jsonl",
                                    [texts.chat_body(SPECIALIST_ROUTE, t) for t in texts.TEXTS])
    bodies_tier2 = write_bodies(work / "tier2.jsonl", texts.classify_bodies(TIER2_ROUTE))
    bodies_hit = write_bodies(work / "cache-hit.jsonl", [texts.escalating_body(ESCALATE_ROUTE)])
    bodies_chat_hit = write_bodies(work / "chat-cache-hit.jsonl", [texts.chat_body(CACHED_ALIAS)])
    bodies_fwd = write_bodies(work / "forward.jsonl", [texts.chat_body(FORWARD_ALIAS)])

    with httpx.Client(timeout=10) as client:
        checks = {
            "specialist": _check(client, gateway.url, texts.classify_bodies(SPECIALIST_ROUTE)[0], "/v1/classify",
                                 "specialist"),
            "tier2": _check(client, gateway.url, texts.classify_bodies(TIER2_ROUTE)[0], "/v1/classify",
                            "specialist", tier="2"),
            "escalation_first": _check(client, gateway.url, texts.escalating_body(ESCALATE_ROUTE), "/v1/classify",
                                       "foundation"),
            "cache_hit": _check(client, gateway.url, texts.escalating_body(ESCALATE_ROUTE), "/v1/classify", "cache"),
            "chat_forward": _check(client, gateway.url, texts.chat_body(FORWARD_ALIAS), "/v1/chat/completions",
                                   "foundation"),
            "chat_cached_first": _check(client, gateway.url, texts.chat_body(CACHED_ALIAS), "/v1/chat/completions",
                                        "foundation"),
            "chat_cache_hit": _check(client, gateway.url, texts.chat_body(CACHED_ALIAS), "/v1/chat/completions",
                                     "cache"),
        }
    out["sanity_checks"] = checks

    def gw_run(bodies: Path, path: str, c: int):  # type: ignore[no-untyped-def]
        return lambda s: run_wrk(wrk, cpus, gateway.url, path, bodies, c, s)

    _log("starting the bare endpoint (same specialist, minimal ASGI app)")
    bare = start_bare(work, cpus, "sentiment")
    servers.append(bare)
    bare.wait_ready_post("/v1/classify", texts.classify_bodies(SPECIALIST_ROUTE)[0], 60)

    def bare_run(c: int):  # type: ignore[no-untyped-def]
        return lambda s: run_wrk(wrk, cpus, bare.url, "/v1/classify", bodies_spec, c, s)

    stages: dict[str, Any] = {}
    scenarios: dict[str, Any] = {"bare_endpoint": {}}
    for name, bodies, path in (("specialist_path", bodies_spec, "/v1/classify"),
                               ("cache_hit_path", bodies_hit, "/v1/classify")):
        _log(f"{name}: concurrency {opts.concurrencies}" + (" (bare endpoint interleaved at c1, c8)"
                                                            if name == "specialist_path" else ""))
        before = scrape_stages(gateway.url)
        scenarios[name] = {}
        for c in opts.concurrencies:
            runs = {"gateway": gw_run(bodies, path, c)}
            if name == "specialist_path" and c in (1, 8):
                runs["bare"] = bare_run(c)
            series = _series(measure(runs, opts.seconds, opts.repeats))
            scenarios[name][f"c{c}"] = series["gateway"]
            if "bare" in series:
                scenarios["bare_endpoint"][f"c{c}"] = series["bare"]
        stages[name] = stage_delta(before, scrape_stages(gateway.url))
    out["rss_kib"]["bare_endpoint"] = bare.rss()
    bare.stop()
    servers.remove(bare)
    _log("tier-2 path: every input answered by the transformer tier (c1, c8)")
    before = scrape_stages(gateway.url)
    scenarios["tier2_path"] = {f"c{c}": _series(measure({"gateway": gw_run(bodies_tier2, "/v1/classify", c)},
                                                        opts.seconds, opts.repeats))["gateway"] for c in (1, 8)}
    stages["tier2_path"] = stage_delta(before, scrape_stages(gateway.url))
    out["rss_kib"]["gateway_after_tier2_load"] = gateway.rss()
    _log("specialist and cache-hit paths through the chat API (c8)")
    scenarios["specialist_path_chat_api"] = {"c8": _series(measure(
        {"gateway": gw_run(bodies_chat_spec, "/v1/chat/completions", 8)}, opts.seconds, opts.repeats))["gateway"]}
    scenarios["cache_hit_path_chat_api"] = {"c8": _series(measure(
        {"gateway": gw_run(bodies_chat_hit, "/v1/chat/completions", 8)}, opts.seconds, opts.repeats))["gateway"]}
    out["rss_kib"]["gateway_after_specialist_load"] = gateway.rss()

    peer: Server | None = None
    if peer_python is not None:
        _log("starting LiteLLM Proxy")
        peer = start_peer(peer_python, work, cpus, api_base, FORWARD_ALIAS)
        servers.append(peer)
        out["startup_s"]["litellm_proxy"] = round(peer.wait_ready("/health/readiness", 120), 3)
        # The first request through a fresh proxy is slow (~110 ms): warm it before measuring.
        with httpx.Client(timeout=10) as client:
            for _ in range(20):
                client.post(peer.url + "/v1/chat/completions", json=texts.chat_body(FORWARD_ALIAS)).raise_for_status()

    scenarios["foundation_path"] = {}
    before = scrape_stages(gateway.url)
    for c in (1, 8):
        _log(f"foundation path c{c}: gateway" + (" vs LiteLLM Proxy (interleaved)" if peer else ""))
        runs = {"gateway": gw_run(bodies_fwd, "/v1/chat/completions", c)}
        if peer is not None:
            runs["litellm_proxy"] = functools.partial(run_wrk, wrk, cpus, peer.url, "/v1/chat/completions",
                                                      bodies_fwd, c)
        scenarios["foundation_path"][f"c{c}"] = _series(measure(runs, opts.seconds, opts.repeats))
        _log(f"foundation path c{c}: direct litellm.acompletion loop")
        scenarios["foundation_path"][f"c{c}"]["direct_litellm"] = _direct(cpus, api_base, c, opts).to_dict()
    stages["foundation_path"] = stage_delta(before, scrape_stages(gateway.url))
    out["rss_kib"]["gateway_after_all_load"] = gateway.rss()
    if peer is not None:
        out["rss_kib"]["litellm_proxy_after_load"] = peer.rss()
        peer.stop()
        servers.remove(peer)

    if py_spy is not None:
        _log("profiling the specialist path (py-spy, c8)")
        raw = work / "profile.txt"
        rec = start_record(py_spy, gateway.proc.pid, opts.seconds + 1, raw)
        time.sleep(0.5)
        during = run_wrk(wrk, cpus, gateway.url, "/v1/classify", bodies_spec, 8, opts.seconds)
        _, err = rec.communicate(timeout=60)
        if raw.exists():
            out["profile_specialist_c8"] = {"rps_while_profiling": during.rps, **summarise(raw)}
            # The collapsed stacks, for flame graphs (gitignored: *.tmp).
            keep = RESULTS_DIR / f"{datetime.now(UTC):%Y-%m-%dT%H%M}-profile-specialist-c8.txt.tmp"
            keep.write_bytes(raw.read_bytes())
            out["profile_specialist_c8"]["raw_file"] = str(keep.relative_to(REPO))
        else:
            out["profile_specialist_c8"] = {"error": err.decode(errors="replace")[-500:]}

    gateway.stop()
    servers.remove(gateway)
    for i in range(opts.extra_starts):
        _log(f"cold start {i + 2}")
        again = start_gateway(work, cpus, policy, redis_url)
        servers.append(again)
        out["startup_s"]["gateway_runs"].append(round(again.wait_ready("/readyz", 60), 3))
        again.stop()
        servers.remove(again)
    out["startup_s"]["gateway_median"] = statistics.median(out["startup_s"]["gateway_runs"])

    _log("in-process: specialist micro-benchmarks and stage pieces")
    inproc = _inproc(cpus, policy, opts.quick)
    out["specialist_micro"] = inproc["micro"]
    stages["in_process_pieces_us"] = inproc["pieces_us"]
    out["scenarios"] = scenarios
    out["stages"] = stages
    return out

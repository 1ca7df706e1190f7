"""`python -m bench.faults`: the fault matrix of RELIABILITY.md.

Each case runs steady mixed traffic (specialist, escalated, cached, chat, streaming) from one
bounded asyncio loop on 127.0.0.1 against real `serve` processes, with a real Redis and the fake
upstream as subprocesses, and injects one fault while it runs:

    redis_kill        Redis killed (SIGKILL) at 25% of the run, restarted at 60%
    redis_slow        Redis blocked by `DEBUG SLEEP 0.3` in a loop from 20% to 70%
    upstream_flaky    the upstream fails 30% of calls: 500s, 429s and hangs (fake-flaky)
    upstream_hang     the upstream never answers (fake-hang)
    policy_flip       the policy file flips between valid and invalid every 200 ms
    worker_killed     one of two workers SIGKILLed at 30% (uvicorn starts a new one)
    sigterm           two replicas; one gets SIGTERM at 40% (the client moves to the other)
    aborted_uploads   1,000 clients start an upload and abort (RST) mid-body
    slow_clients      2,000 clients open a connection and send headers slowly, never finishing

For every case: requests sent, answered by path, non-2xx by status and code, p50/p99, and lost =
sent - answered - clean errors (a non-2xx with a documented error code, or a stream ended with a
documented in-band error). A connection refused or reset before any response is retried once on
another replica (or the same one), as clients and load balancers do; such retries are counted.
The gateways' own request counters (requests + request errors, read from their multiprocess
metric files, so a killed worker's counts are kept) must equal the requests sent.

    python -m bench.faults                 every case, 20 s each; JSON to bench/results/faults-*.json
    python -m bench.faults --quick         every case, 6 s each
    python -m bench.faults --cases redis_kill,policy_flip --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from ruamel.yaml import YAML

from .machine import load_snapshot, machine_info
from .servers import REPO, Server, _children, clean_env, free_port, spawn, start_redis

__all__ = ["CASES", "CaseResult", "Stack", "main", "run_case"]

CASES = ("redis_kill", "redis_slow", "upstream_flaky", "upstream_hang", "policy_flip", "worker_killed",
         "sigterm", "aborted_uploads", "slow_clients")
KINDS = ("specialist", "escalated", "cached", "chat", "stream")
# Error codes the gateway documents (README "Errors"); a non-2xx with one of these is a clean answer.
DOCUMENTED = {"rate_limited", "upstream_error", "upstream_timeout", "deadline_exceeded", "invalid_label",
              "foundation_unavailable", "budget_spent", "specialist_unavailable", "payload_too_large"}
CONFIDENT = "a gorgeous , witty , seductive movie ."
UNSURE = "the film runs two hours"


# ---- the stack: Redis, the fake upstream and gateways, as subprocesses -------------------------

def write_policy(path: Path, api_base: str, model: str = "fake-ok") -> None:
    """policies/default.yaml on the fake upstream: short timeouts, so faults show within a run."""
    yaml = YAML(typ="rt")
    doc = yaml.load((REPO / "policies" / "default.yaml").read_text())
    for spec in doc["aliases"].values():
        spec.update({"model": f"openai/{model}", "api_base": api_base, "price_as": "gpt-4o-mini",
                     "timeout_s": 1, "max_retries": 1, "deadline_s": 3})
    doc["routes"]["sentiment"]["deadline_s"] = 2
    doc["routes"]["support"]["deadline_s"] = 3
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        yaml.dump(doc, f)
    tmp.replace(path)  # atomic: the reloader never reads half a file


@dataclass
class Gateway:
    server: Server
    metrics_dir: Path

    @property
    def url(self) -> str:
        return self.server.url


@dataclass
class Stack:
    """Redis, the fake upstream and the gateways a case runs against (start with `Stack.start`)."""

    workdir: Path
    redis: Server
    upstream: Server
    policy: Path
    gateways: list[Gateway] = field(default_factory=list)
    shared_env: dict[str, str] = field(default_factory=dict)
    _shared: Gateway | None = None

    @classmethod
    def start(cls, workdir: Path, **shared_env: str) -> Stack:
        redis_server = start_redis(workdir, free_port())
        port = free_port()
        upstream = spawn("upstream", [sys.executable, str(REPO / "tests" / "fake_upstream.py"), "--port", str(port)],
                         clean_env(), workdir, port, REPO)
        try:
            upstream.wait_ready("/v1/models", 120)
        except BaseException:
            upstream.stop()
            redis_server.stop()
            raise
        policy = workdir / "policy.yaml"
        write_policy(policy, upstream.url + "/v1")
        return cls(workdir, redis_server, upstream, policy, shared_env=shared_env)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def gateway(self, workers: int = 1, **env: str) -> Gateway:
        port = free_port()
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=self.workdir))
        full = clean_env()
        full.update({"ROUTER_REDIS__URL": self.redis_url, "ROUTER_WORKERS": str(workers), "ROUTER_LOG_LEVEL": "WARNING",
                     "ROUTER_METRICS_DIR": str(metrics_dir), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                     "ROUTER_POLICY_POLL_S": "0.1", **env})
        server = spawn(f"gateway-{port}", [sys.executable, "-m", "router", "serve", "--port", str(port),
                                           "--policy", str(self.policy)], full, self.workdir, port, REPO)
        try:
            server.wait_ready("/readyz", 300)
        except BaseException:
            server.stop()
            raise
        gw = Gateway(server, metrics_dir)
        self.gateways.append(gw)
        return gw

    def shared(self) -> Gateway:
        """The one-worker gateway single-gateway cases share (started on first use, `shared_env` set)."""
        if self._shared is None:
            self._shared = self.gateway(1, **self.shared_env)
        return self._shared

    def restart_redis(self) -> None:
        self.redis = start_redis(self.workdir, self.redis.port)

    def stop(self) -> None:
        for gw in self.gateways:
            gw.server.stop()
        self.upstream.stop()
        self.redis.stop()


def counted(gw: Gateway) -> float:
    """Requests the gateway counted (answers + error responses), from its metric files."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(gw.metrics_dir))  # type: ignore[no-untyped-call]
    total = 0.0
    for metric in registry.collect():
        if metric.name in ("hybrid_router_requests", "hybrid_router_request_errors"):
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


# ---- traffic -----------------------------------------------------------------------------------

@dataclass
class Tally:
    sent: int = 0
    answered: Counter[str] = field(default_factory=Counter)
    clean: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    latencies: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1)) if lat else (lambda q: None)
        return {"sent": self.sent, "answered": dict(self.answered), "clean_errors": dict(self.clean),
                "lost": sum(self.lost.values()), "lost_detail": dict(self.lost), "retried": self.retried,
                "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


class Traffic:
    """Mixed requests at `rate` per second, at most `in_flight` at once, over the live targets."""

    def __init__(self, targets: list[str], rate: float, in_flight: int = 32) -> None:
        self.targets = targets
        self.down: dict[str, float] = {}
        self.rate = rate
        self.in_flight = in_flight
        self.tally = Tally()
        self._n = 0

    def _target(self, avoid: str | None = None) -> str:
        now = time.monotonic()
        live = [t for t in self.targets if self.down.get(t, 0) < now and t != avoid] or self.targets
        return live[self._n % len(live)]

    def _request(self, kind: str, i: int) -> tuple[str, dict[str, Any]]:
        if kind == "specialist":
            return "/v1/classify", {"task": "sentiment", "input": CONFIDENT}
        if kind == "escalated":
            return "/v1/classify", {"task": "sentiment", "input": f"{UNSURE} {i} [[label:positive]] ."}
        if kind == "cached":
            return "/v1/classify", {"task": "sentiment", "input": f"{UNSURE} cached {i % 5} ."}
        content = f"tell me about item {i}"
        return "/v1/chat/completions", {"model": "strong", "stream": kind == "stream",
                                        "messages": [{"role": "user", "content": content}]}

    async def _one(self, client: httpx.AsyncClient, kind: str, i: int) -> None:
        path, body = self._request(kind, i)
        t0 = time.perf_counter()
        target = self._target()
        for attempt in range(2):
            try:
                outcome = await self._send(client, target + path, body, kind == "stream")
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if attempt == 1:
                    outcome = ("lost", type(exc).__name__)
                    break
                self.down[target] = time.monotonic() + 1.0
                self.tally.retried += 1
                target = self._target(avoid=target)
            except httpx.TimeoutException as exc:
                outcome = ("lost", type(exc).__name__)
                break
        self.tally.latencies.append(time.perf_counter() - t0)
        where, what = outcome
        getattr(self.tally, where)[what] += 1

    async def _send(self, client: httpx.AsyncClient, url: str, body: dict[str, Any], stream: bool) -> tuple[str, str]:
        async with client.stream("POST", url, json=body) as r:
            data = await r.aread()
        if r.status_code >= 300:
            code = ""
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                code = orjson.loads(data)["error"]["code"]
            if code in DOCUMENTED:
                return "clean", f"{r.status_code} {code}"
            return "lost", f"{r.status_code} {code or data[:40]!r}"
        if not stream:
            return "answered", r.headers.get("x-router-path", "?")
        events = [e.removeprefix(b"data: ") for e in data.split(b"\n\n") if e.startswith(b"data: ")]
        if not events or events[-1] != b"[DONE]":
            return "lost", "stream cut"
        for e in events[:-1]:
            if e.startswith(b'{"error"'):
                code = orjson.loads(e)["error"]["code"]
                return ("clean" if code in DOCUMENTED else "lost"), f"stream {code}"
        return "answered", r.headers.get("x-router-path", "?")

    async def run(self, seconds: float) -> Tally:
        limits = httpx.Limits(max_connections=self.in_flight, max_keepalive_connections=self.in_flight)
        gate = asyncio.Semaphore(self.in_flight)
        tasks: list[asyncio.Task[None]] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), limits=limits) as client:
            async def one(kind: str, i: int) -> None:
                try:
                    await self._one(client, kind, i)
                finally:
                    gate.release()

            start = time.monotonic()
            total = int(seconds * self.rate)
            for i in range(total):
                await asyncio.sleep(max(0.0, start + i / self.rate - time.monotonic()))
                await gate.acquire()
                self._n = i
                self.tally.sent += 1
                tasks.append(asyncio.create_task(one(KINDS[i % len(KINDS)], i)))
            await asyncio.gather(*tasks)
        return self.tally


# ---- faults ------------------------------------------------------------------------------------

def _at(fraction: float, seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(fraction * seconds, action)
    timer.daemon = True
    timer.start()
    return timer


def _repeat(stop: threading.Event, period_s: float, action: Callable[[], None]) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(period_s):
            with contextlib.suppress(Exception):
                action()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


async def _aborted_uploads(url: str, n: int) -> int:
    host, port = url.removeprefix("http://").split(":")
    head = (b"POST /v1/classify HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"content-length: 200000\r\n\r\n" + b'{"task": "sentiment", "input": "' + b"x" * 2000)
    done = 0
    for _ in range(n // 50):
        batch = []
        for _ in range(50):
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(head)
            batch.append(writer)
        await asyncio.sleep(0.05)
        for writer in batch:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            done += 1
        await asyncio.sleep(0.05)
    return done


async def _slow_clients(url: str, n: int, hold_s: float) -> dict[str, int]:
    host, port = url.removeprefix("http://").split(":")
    conns = []
    for i in range(n):
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /v1/classify HTTP/1.1\r\nhost: gw\r\n")
            conns.append((reader, writer))
        if i % 100 == 99:
            await asyncio.sleep(0.01)
    cut = 0

    async def wait_cut(reader: asyncio.StreamReader) -> None:
        nonlocal cut
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            if await reader.read(1) == b"":
                cut += 1

    waiting = [asyncio.create_task(wait_cut(r)) for r, _ in conns]
    await asyncio.wait(waiting, timeout=hold_s)
    for task in waiting:
        task.cancel()
    for _, writer in conns:
        writer.transport.abort()
    return {"opened": len(conns), "cut_by_server": cut}


@dataclass
class CaseResult:
    case: str
    seconds: float
    tally: dict[str, Any]
    counted: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.tally["lost"] == 0 and self.counted == self.tally["sent"])


@contextlib.contextmanager
def _fault(stack: Stack, case: str, seconds: float, extra: dict[str, Any]) -> Iterator[list[str]]:
    """Set up `case` on `stack`, inject its fault while the caller runs traffic; yields the targets."""
    stop = threading.Event()
    restore: list[Gateway] = []
    if case == "worker_killed":
        gw = stack.gateway(workers=2)
        targets = [gw.url]

        def kill_one() -> None:
            workers = [p for p in _children(gw.server.proc.pid)
                       if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
            victim = max(workers)
            extra["killed_pid"] = victim
            os.kill(victim, signal.SIGKILL)

        timers = [_at(0.3, seconds, kill_one)]
    elif case == "sigterm":
        a, b = stack.gateway(), stack.gateway()
        targets = [a.url, b.url]

        def term() -> None:
            extra["terminated"] = a.url
            a.server.proc.send_signal(signal.SIGTERM)

        timers = [_at(0.4, seconds, term)]
    else:
        gw = stack.shared()
        targets = [gw.url]
        timers = []
        if case == "redis_kill":
            timers = [_at(0.25, seconds, stack.redis.proc.kill), _at(0.6, seconds, stack.restart_redis)]
        elif case == "redis_slow":
            def sleeper() -> None:
                with contextlib.suppress(redis.RedisError):
                    redis.Redis(port=stack.redis.port, socket_timeout=2).execute_command(  # type: ignore[no-untyped-call]
                        "DEBUG", "SLEEP", "0.3")

            def start_sleeping() -> None:
                _repeat(stop, 0.05, sleeper)

            timers = [_at(0.2, seconds, start_sleeping), _at(0.7, seconds, stop.set)]
        elif case in ("upstream_flaky", "upstream_hang"):
            write_policy(stack.policy, stack.upstream.url + "/v1", "fake-flaky" if case == "upstream_flaky"
                         else "fake-hang")
            _wait_policy(gw, stack.policy)
            restore.append(gw)
        elif case == "policy_flip":
            valid = stack.policy.read_bytes()
            flips = {"n": 0}

            def flip() -> None:
                flips["n"] += 1
                tmp = stack.policy.with_suffix(".tmp")
                tmp.write_bytes(valid if flips["n"] % 2 == 0 else b"version: 1\nroutes: [unclosed\n")
                tmp.replace(stack.policy)

            _repeat(stop, 0.2, flip)
            extra["flips"] = flips
            restore.append(gw)
    try:
        yield targets
    finally:
        stop.set()
        for timer in timers:
            timer.cancel()
        for gw in restore:  # the next case starts from the plain policy
            time.sleep(0.3)
            write_policy(stack.policy, stack.upstream.url + "/v1")
            _wait_policy(gw, stack.policy)


def _wait_policy(gw: Gateway, path: Path) -> None:
    """Wait until the gateway serves the policy now in `path` (hot reload)."""
    import hashlib

    version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    deadline = time.monotonic() + 30
    while httpx.get(gw.url + "/readyz", timeout=5).json()["policy_version"] != version:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not reload the policy")
        time.sleep(0.1)


def run_case(stack: Stack, case: str, seconds: float, rate: float, hostile: int | None = None) -> CaseResult:
    """Run one case on `stack`; the gateway count is what its gateways counted during the case."""
    extra: dict[str, Any] = {}
    before = {gw.server.port: counted(gw) for gw in stack.gateways}
    with _fault(stack, case, seconds, extra) as targets:
        loop_traffic = Traffic(targets, rate)

        async def main() -> Tally:
            side: list[Any] = []
            if case == "aborted_uploads":
                side.append(_aborted_uploads(targets[0], hostile or 1000))
            elif case == "slow_clients":
                side.append(_slow_clients(targets[0], hostile or 2000, hold_s=seconds))
            results = await asyncio.gather(loop_traffic.run(seconds), *side)
            if side:
                extra["hostile"] = results[1]
            done: Tally = results[0]
            return done

        tally = asyncio.run(main())
    if case == "policy_flip":
        extra["flips"] = extra["flips"]["n"]
    time.sleep(0.5)  # the last metric writes
    total = sum(counted(gw) - before.get(gw.server.port, 0.0) for gw in stack.gateways)
    if case == "sigterm":
        extra["terminated_exit"] = stack.gateways[-2].server.proc.wait(30)
    return CaseResult(case, seconds, tally.row(), total, extra)


# ---- report ------------------------------------------------------------------------------------

def render(results: list[CaseResult]) -> str:
    lines = [("| case | sent | answered by path | non-2xx (clean, documented) | p50 / p99 ms | retried | lost "
             "| gateway count |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r.tally
        paths = ", ".join(f"{k} {v}" for k, v in sorted(t["answered"].items())) or "-"
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(t["clean_errors"].items())) or "-"
        lost = str(t["lost"]) + (f" ({t['lost_detail']})" if t["lost"] else "")
        lines.append(f"| {r.case} | {t['sent']} | {paths} | {errors} | {t['p50_ms']} / {t['p99_ms']} | "
                     f"{t['retried']} | {lost} | {r.counted:g}{'' if r.counted == t['sent'] else ' (differs)'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--quick", action="store_true", help="6 s per case")
    args = parser.parse_args(argv)
    seconds = 6.0 if args.quick else args.seconds
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    random.seed(0)
    results = []
    load_before = load_snapshot()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        for case in cases:  # each on a fresh stack: a case's breakers and caches do not leak into the next
            print(f"{case} ...", flush=True)
            stack = Stack.start(Path(tmp), ROUTER_HEADER_TIMEOUT_S="5")
            try:
                result = run_case(stack, case, seconds, args.rate)
            finally:
                stack.stop()
            print(f"  {json.dumps(result.tally)} counted={result.counted:g} {result.extra}", flush=True)
            results.append(result)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M")
    out = REPO / "bench" / "results" / f"faults-{stamp}.json"
    out.write_text(json.dumps({
        "date": stamp, "command": "python -m bench.faults " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(), "load": {"before": load_before, "after": load_snapshot()},
        "seconds": seconds, "rate": args.rate,
        "cases": [{"case": r.case, **r.tally, "counted": r.counted, **r.extra} for r in results]}, indent=1))
    print("\n" + render(results))
    print(f"\nraw results: {out}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Processes under test: the gateway, the fake upstream and their plumbing (ports, readiness, RSS).

Each server is a subprocess on 127.0.0.1 with a free port, its output sent to a log file in the
run's work directory. With two or more CPUs the processes under test (gateway, LiteLLM Proxy,
the direct-litellm loop) are pinned to CPU 0 and the load side (wrk, fake upstream) to CPU 1, so
"one worker" means one core and the load generator does not steal it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

__all__ = ["REPO", "Cpus", "Server", "clean_env", "free_port", "rss_kib", "spawn", "start_bare", "start_gateway",
           "start_upstream"]

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True, slots=True)
class Cpus:
    """CPU sets for `taskset`; empty = no pinning (one-CPU machines)."""

    served: str = ""
    load: str = ""

    @classmethod
    def detect(cls, pin: bool) -> Cpus:
        n = os.cpu_count() or 1
        if not pin or n < 2:
            return cls()
        return cls(served="0", load=",".join(str(i) for i in range(1, n)))

    def wrap(self, cmd: list[str], side: str) -> list[str]:
        cpus = self.served if side == "served" else self.load
        return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started_at: float
    ready_s: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str, timeout_s: float) -> float:
        """Poll `path` until 200; returns seconds since the process was started."""
        deadline = self.started_at + timeout_s
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}:\n"
                                       + _tail(self.log))
                try:
                    if client.get(self.url + path).status_code == 200:
                        self.ready_s = time.monotonic() - self.started_at
                        return self.ready_s
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f}s; see {self.log}:\n" + _tail(self.log))

    def wait_ready_post(self, path: str, body: dict[str, object], timeout_s: float) -> float:
        """Poll with a POST of `body` until 200 (servers without a health endpoint)."""
        deadline = self.started_at + timeout_s
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}:\n"
                                       + _tail(self.log))
                try:
                    if client.post(self.url + path, json=body).status_code == 200:
                        self.ready_s = time.monotonic() - self.started_at
                        return self.ready_s
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f}s; see {self.log}:\n" + _tail(self.log))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def rss(self) -> dict[str, int]:
        """VmRSS / VmHWM in KiB of the process and its descendants (summed)."""
        return rss_kib(self.proc.pid)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def rss_kib(pid: int) -> dict[str, int]:
    totals = {"VmRSS": 0, "VmHWM": 0, "processes": 0}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        totals["processes"] += 1
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                totals[key] += int(value.split()[0])
        todo.extend(_children(p))
    return totals


def spawn(name: str, cmd: list[str], env: dict[str, str], workdir: Path, port: int, cwd: Path) -> Server:
    log = workdir / f"{name}.log"
    out = log.open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    out.close()
    return Server(name, proc, port, log, started)


def clean_env() -> dict[str, str]:
    """The environment without ROUTER_* / LITELLM_* settings that would change what is measured."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "LITELLM_"))}


def start_redis(workdir: Path, port: int | None = None) -> Server:
    """A private ``redis-server`` on a free loopback port (nothing on disk): the bench never
    touches the machine's own Redis."""
    port = port or free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(workdir)]
    server = spawn(f"redis-{port}", cmd, clean_env(), workdir, port, workdir)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if redis.Redis(port=port, socket_timeout=0.5).ping():
                return server
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


def start_upstream(workdir: Path, cpus: Cpus, latency_ms: float) -> Server:
    port = free_port()
    cmd = cpus.wrap([sys.executable, str(REPO / "tests" / "fake_upstream.py"), "--port", str(port),
                     "--latency-ms", str(latency_ms)], "load")
    server = spawn("upstream", cmd, clean_env(), workdir, port, REPO)
    server.wait_ready("/v1/models", 30)
    return server


def start_gateway(workdir: Path, cpus: Cpus, policy: Path, redis_url: str) -> Server:
    """`hybrid-router serve` with the bench policy; the caller waits for /readyz."""
    port = free_port()
    env = clean_env()
    env.update({"ROUTER_REDIS__URL": redis_url, "ROUTER_LOG_LEVEL": "WARNING"})
    cmd = cpus.wrap([str(VENV_BIN / "hybrid-router"), "serve", "--port", str(port), "--policy", str(policy)],
                    "served")
    # cwd is the work directory so that no stray .env changes the settings under test.
    return spawn("gateway", cmd, env, workdir, port, workdir)


def start_bare(workdir: Path, cpus: Cpus, specialist: str) -> Server:
    """`bench.bare`: the minimal ASGI app with the same specialist, pinned like the gateway."""
    port = free_port()
    cmd = cpus.wrap([sys.executable, "-m", "bench.bare", "--port", str(port), "--specialist", specialist], "served")
    return spawn("bare", cmd, clean_env(), workdir, port, REPO)

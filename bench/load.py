"""Load generation with wrk: POST bodies from a file at a fixed concurrency for a few seconds.

`run_wrk` returns one `Measurement` (throughput, latency percentiles from wrk's own histogram,
error counts). `measure` repeats it and keeps the median run by throughput, because this machine
varies by 8-15% between runs; the individual runs are kept for the raw JSON.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .servers import Cpus

__all__ = ["LUA", "Measurement", "Series", "ensure_wrk", "measure", "run_wrk", "write_bodies"]

LUA = Path(__file__).resolve().parent / "post.lua"


@dataclass(frozen=True, slots=True)
class Measurement:
    concurrency: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    non_2xx: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Series:
    """Repeated measurements of one scenario at one concurrency; `median` is the median-rps run."""

    runs: tuple[Measurement, ...]

    @property
    def median(self) -> Measurement:
        ordered = sorted(self.runs, key=lambda m: m.rps)
        return ordered[(len(ordered) - 1) // 2]

    def to_dict(self) -> dict[str, object]:
        m = self.median
        return {
            "median": m.to_dict(),
            "rps_runs": [round(r.rps, 1) for r in self.runs],
            "p50_ms_median_of_runs": round(statistics.median(r.p50_ms for r in self.runs), 4),
            "p99_ms_median_of_runs": round(statistics.median(r.p99_ms for r in self.runs), 4),
            "runs": [r.to_dict() for r in self.runs],
        }


def ensure_wrk() -> str:
    """Path of wrk; installs Debian's package (apt-get) when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it with apt-get (Debian package 'wrk')", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still missing after apt-get install wrk")
    return found


def write_bodies(path: Path, bodies: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path


def run_wrk(wrk: str, cpus: Cpus, url: str, path: str, bodies: Path, concurrency: int, seconds: int,
            timeout_s: int = 5) -> Measurement:
    threads = 1 if concurrency < 16 else 2
    cmd = cpus.wrap([wrk, f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={timeout_s}s",
                     "-s", str(LUA), url, "--", str(bodies), path], "load")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    lat = data["latency_us"]
    err = data["errors"]
    duration = data["duration_us"] / 1e6
    return Measurement(
        concurrency=concurrency,
        duration_s=round(duration, 3),
        requests=data["requests"],
        rps=round(data["requests"] / duration, 1),
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p999_ms=lat["p999"] / 1000,
        mean_ms=round(lat["mean"] / 1000, 4),
        max_ms=lat["max"] / 1000,
        errors=err["connect"] + err["read"] + err["write"] + err["timeout"],
        non_2xx=err["status"],
    )


def measure(runs: dict[str, Callable[[int], Measurement]], seconds: int, repeats: int,
            warmup_s: int = 1) -> dict[str, Series]:
    """Warm each target up, then `repeats` rounds of `seconds` per target, interleaved.

    `runs` maps a name to a function doing one measurement of the given length. Interleaving
    (A, B, A, B, ...) spreads slow drifts of the shared machine over every target alike.
    """
    if warmup_s:
        for run in runs.values():
            run(warmup_s)
    done: dict[str, list[Measurement]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            done[name].append(run(seconds))
    return {name: Series(tuple(ms)) for name, ms in done.items()}

"""What the numbers were measured on: CPU, memory, versions, and how busy the machine was."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["load_snapshot", "machine_info", "versions"]


def machine_info() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kib / 1024**2, 1),
            "kernel": platform.release(), "os": _os_name()}


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("litellm", "onnxruntime", "uvicorn", "starlette", "uvloop", "httptools", "redis", "orjson",
                 "hybrid-router"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    out["wrk"] = (wrk.stdout or wrk.stderr).split("[")[0].replace("wrk", "").strip() or "?"
    return out


def _cpu_times() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def load_snapshot() -> dict[str, Any]:
    """Load average, CPU busy share over one second, and the busiest processes right now.

    Other engineers share this machine: a busy snapshot explains noisy or low numbers.
    """
    total0, idle0 = _cpu_times()
    top = subprocess.run(["top", "-bn2", "-d", "1", "-w", "200"], capture_output=True, text=True, check=False).stdout
    total1, idle1 = _cpu_times()
    busy = 1.0 - (idle1 - idle0) / max(1, total1 - total0)
    block = top.split("\n\n")[-1].strip().splitlines()  # the second iteration's process table
    procs = [" ".join(ln.split()) for ln in block[1:6]] if block and block[0].lstrip().startswith("PID") else []
    load1, load5, load15 = os.getloadavg()
    return {"loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)], "cpu_busy_share": round(busy, 3),
            "top_processes": procs}

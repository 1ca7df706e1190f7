"""A py-spy profile of the gateway under load, summarised as its top functions.

py-spy is a profiling tool, not a project dependency: it is installed on demand into
bench/.tools-venv. `record` samples the running gateway (non-blocking, so the measured process is
not paused) while the caller drives load; `summarise` turns py-spy's collapsed stacks into the
functions with the most samples on top of the stack (self) and anywhere in it (inclusive).
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

__all__ = ["ensure_py_spy", "start_record", "summarise"]

TOOLS_VENV = Path(__file__).resolve().parent / ".tools-venv"
_FRAME_LINE = re.compile(r":\d+\)$")


def ensure_py_spy() -> Path:
    exe = TOOLS_VENV / "bin" / "py-spy"
    if not exe.exists():
        print(f"installing py-spy into {TOOLS_VENV} (profiling only)", flush=True)
        import sys

        base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run([str(base), "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run([str(TOOLS_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "py-spy"],
                       check=True)
    return exe


def start_record(py_spy: Path, pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
         "--format", "raw", "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _func(frame: str) -> str:
    """'handler (router/routes.py:83)' -> 'handler (router/routes.py)': aggregate over lines."""
    frame = _FRAME_LINE.sub(")", frame.strip())
    return re.sub(r"\(/.*?/(site-packages|work/main)/", "(", frame)


def summarise(raw: Path, top: int = 25) -> dict[str, object]:
    self_counts: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        raw_frames = [f for f in stack.split(";") if f]
        frames = [_func(f) for f in raw_frames]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        self_lines[re.sub(r"\(/.*?/(site-packages|work/main)/", "(", raw_frames[-1].strip())] += count
        for f in set(frames):
            incl_counts[f] += count

    def table(c: Counter[str]) -> list[dict[str, object]]:
        return [{"function": f, "samples": n, "share": round(n / total, 4)} for f, n in c.most_common(top)]

    return {"samples": total, "self": table(self_counts), "self_by_line": table(self_lines),
            "inclusive": table(incl_counts)}

"""The serving runtime must not pull in training dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import sys
import specialists
specs = specialists.load_specialists()
for name in specs.names:
    specs[name].predict_one("hello world")
bad = [m for m in ("sklearn", "skl2onnx", "onnx", "scipy", "matplotlib", "specialists.training") if m in sys.modules]
print("LOADED:" + ",".join(bad))
"""


def test_runtime_imports_no_training_modules() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "LOADED:\n" in proc.stdout or proc.stdout.strip() == "LOADED:", proc.stdout

"""The gateway image, checked without a container engine (none runs here, and no registry that
serves base images is reachable, so the image itself cannot be built on this machine).

What can be checked is checked: the build context that `.dockerignore` leaves (computed with
docker-py's own matcher) holds what the Dockerfile copies and nothing of training (no training
code, no datasets, no virtualenv, no secrets); the serving lock holds no training library; the
Dockerfile pins its base by digest, installs only hash-checked serving dependencies, runs as a
numeric non-root user and probes /healthz; and a copy of exactly that build context serves:
`python -m router serve` from it, with the image's environment (several workers, metrics in
TMPDIR, HOME unwritable), answers /healthz, /readyz and a classification.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from docker.utils.build import exclude_paths

from tests.gateway_process import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def _context() -> set[str]:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    included = exclude_paths(str(ROOT), patterns, dockerfile="deploy/docker/Dockerfile")
    return {p for p in included if (ROOT / p).is_file()}


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_build_context_holds_what_the_image_copies_and_nothing_of_training() -> None:
    files = _context()
    for need in ["requirements.lock", "pyproject.toml", "README.md", "router/app.py", "ops/cli.py", "specialists/runtime.py",
                 "policies/default.yaml", "tests/fake_upstream.py", "tests/__init__.py"]:
        assert need in files, need
    bundled = {p.split("/")[2] for p in files if p.startswith("specialists/bundled/") and p.endswith("model.onnx")}
    assert bundled == {p.name for p in (ROOT / "specialists" / "bundled").iterdir() if p.is_dir()
                       and (p / "manifest.json").exists()}, "every bundled specialist ships in the image"
    allowed_top = {"requirements.lock", "pyproject.toml", "README.md", "router", "ops", "specialists", "policies", "tests",
                   ".dockerignore", "deploy"}
    assert {p.split("/")[0] for p in files} <= allowed_top, sorted({p.split("/")[0] for p in files} - allowed_top)
    assert not [p for p in files if p.startswith("specialists/training/")], "training code is not in the image"
    assert not [p for p in files if p.startswith("tests/") and p not in ("tests/__init__.py", "tests/fake_upstream.py")]
    assert not [p for p in files if p.startswith("deploy/") and p != "deploy/docker/Dockerfile"]
    data_like = re.compile(r"\.(csv|tsv|jsonl|parquet|arrow|npz|pkl|joblib|pt|bin)$|(^|/)\.env($|\.)|(^|/)data/")
    assert not [p for p in files if data_like.search(p)]
    size = sum((ROOT / p).stat().st_size for p in files)
    # the bundled specialists are most of it: the tf-idf ones (~35 MiB) and two int8 tier-2 encoders
    # (sentiment_minilm, intent_minilm: ~23 MB each); a stray dataset or checkpoint would blow this
    assert size < 100 * 2**20, f"build context {size / 2**20:.1f} MiB"


def test_every_copy_source_is_in_the_build_context() -> None:
    files = _context()
    copies = [rest for word, rest in _instructions() if word == "COPY" and "--from=" not in rest]
    assert copies
    for rest in copies:
        *sources, _dest = rest.split()
        for src in sources:
            assert src in files or any(f.startswith(src.rstrip("/") + "/") for f in files), \
                f"COPY {src}: excluded by .dockerignore or missing"


def test_serving_lock_holds_no_training_library() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    train = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-")
             for d in pyproject["project"]["optional-dependencies"]["train"]}
    assert {"scikit-learn", "skl2onnx"} <= train
    locked = {m.group(1).lower().replace("_", "-") for m in
              re.finditer(r"^([A-Za-z0-9_.\-]+)==", (ROOT / "requirements.lock").read_text(), re.MULTILINE)}
    assert "litellm" in locked and "onnxruntime" in locked
    assert not (train & locked), f"training libraries in the serving lock: {sorted(train & locked)}"
    for heavy in ("torch", "transformers", "matplotlib", "pytest"):
        assert heavy not in locked


def test_dockerfile_pins_base_by_digest_and_runs_hardened() -> None:
    text = DOCKERFILE.read_text()
    steps = _instructions()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11[\w.\-]*-slim-bookworm@sha256:[0-9a-f]{64}", base.group(1))
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and all(f.startswith("${PYTHON_IMAGE}") for f in froms), "multi-stage on the pinned base"
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip install --require-hashes --only-binary=:all: -r requirements.lock" in runs
    assert "pip install --no-deps --no-build-isolation ." in runs
    assert "sklearn" in runs, "the build fails if a training library is importable"
    (user,) = [rest for word, rest in steps if word == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "numeric non-root user (runAsNonRoot can verify it)"
    assert steps[-1] == ("CMD", '["hybrid-router", "serve"]')
    (health,) = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert "/healthz" in health
    env = " ".join(rest for word, rest in steps if word == "ENV")
    for setting in ("ROUTER_HOST=0.0.0.0", "ROUTER_WORKERS=2", "ROUTER_POLICY_PATH=/app/policies/default.yaml",
                    "TMPDIR=/tmp", "HOME=/tmp"):
        assert setting in env, setting


@pytest.mark.timeout(240)
def test_the_build_context_serves_with_the_images_settings(tmp_path: Path) -> None:
    """A copy of exactly the build context, run with the image's environment, serves."""
    ctx = tmp_path / "ctx"
    for rel in _context():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, ctx / rel)
    shutil.rmtree(ctx / "deploy")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env.update({
        "PYTHONPATH": str(ctx), "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path / "no-home"),
        "TMPDIR": str(tmp), "ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(port), "ROUTER_WORKERS": "2",
        "ROUTER_POLICY_PATH": str(ctx / "policies" / "default.yaml"),
    })
    proc = subprocess.Popen([sys.executable, "-m", "router", "serve"], cwd=ctx, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # two workers starting on a busy 2-core machine
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else "exited"
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the build context did not become ready"
            time.sleep(0.2)
        assert httpx.get(base + "/healthz", timeout=5).json()["status"] == "ok"
        # The image's own HEALTHCHECK command, as Docker would run it in the container.
        (health,) = [rest for word, rest in _instructions() if word == "HEALTHCHECK"]
        command = json.loads(health[health.index("CMD") + 3:].strip())
        command[0] = sys.executable if command[0] == "python" else command[0]
        assert subprocess.run(command, env=env, check=False, timeout=30).returncode == 0
        ready = httpx.get(base + "/readyz", timeout=5).json()
        assert set(ready["specialists"]) == {p.name for p in (ctx / "specialists" / "bundled").iterdir()}
        r = httpx.post(base + "/v1/classify", json={"task": "sentiment", "input": "a wonderful film ."}, timeout=10)
        assert r.status_code == 200 and r.json()["label"] in {"positive", "negative"}
        # Several workers: their metric files live under TMPDIR (a tmpfs in the container).
        assert list(tmp.glob("hybrid-router-metrics-*/*.db")), "multiprocess metrics not in TMPDIR"
        served_from = subprocess.run([sys.executable, "-c", "import router; print(router.__file__)"], cwd=ctx,
                                     env=env, check=True, capture_output=True, text=True, timeout=30).stdout.strip()
        assert served_from.startswith(str(ctx)), served_from
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

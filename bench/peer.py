"""The comparison peer: LiteLLM Proxy at a pinned version, in its own virtual environment.

`pip install 'litellm[proxy]==1.110.2'` does not resolve from the registry (the extra pins
`litellm-proxy-extras` / `litellm-enterprise` versions that are not served), so the peer venv gets
plain `litellm` plus the proxy's start-up dependencies, pinned in `peer-requirements.txt` (found
by starting the proxy until no import failed). `opentelemetry-sdk` is included: the proxy ran
12-20% faster with it, and we compare against the peer at its best.

The proxy runs offline (local cost map, no telemetry), with one worker, no master key (no auth,
as the gateway has none in the bench), no database, and its access log silenced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .servers import Cpus, Server, clean_env, free_port, spawn

__all__ = ["PEER_VERSION", "ensure_peer_venv", "peer_versions", "start_peer"]

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer-venv"
REQUIREMENTS = HERE / "peer-requirements.txt"
PEER_VERSION = "1.110.2"
_STAMP = PEER_VENV / ".installed"

_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "WARNING"},
        "uvicorn.error": {"level": "WARNING"},
        "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}


def ensure_peer_venv() -> Path:
    """Create / update bench/.peer-venv when peer-requirements.txt changed; returns its python."""
    python = PEER_VENV / "bin" / "python"
    wanted = REQUIREMENTS.read_text()
    if python.exists() and _STAMP.exists() and _STAMP.read_text() == wanted:
        return python
    print(f"installing LiteLLM Proxy {PEER_VERSION} into {PEER_VENV} (once; about a minute)", flush=True)
    if not python.exists():
        # From the interpreter the project venv was made with, not from the project venv itself.
        base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run([str(base), "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS)], check=True)
    _STAMP.write_text(wanted)
    return python


def peer_versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('litellm', 'fastapi', 'uvicorn', 'opentelemetry-sdk')}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def _config(upstream_api_base: str, model_name: str) -> str:
    # YAML is a superset of JSON: no yaml writer needed here.
    return json.dumps({
        "model_list": [{
            "model_name": model_name,
            "litellm_params": {"model": "openai/fake-ok", "api_base": upstream_api_base, "api_key": "unused",
                               "timeout": 10, "max_retries": 0},
        }],
        "litellm_settings": {"drop_params": True, "telemetry": False, "num_retries": 0},
        "general_settings": {"disable_spend_logs": True},
    }, indent=2)


def start_peer(python: Path, workdir: Path, cpus: Cpus, upstream_api_base: str, model_name: str) -> Server:
    """Start LiteLLM Proxy (one worker) forwarding `model_name` to the fake upstream."""
    port = free_port()
    config = workdir / "peer-config.yaml"
    config.write_text(_config(upstream_api_base, model_name))
    log_config = workdir / "peer-logging.json"
    log_config.write_text(json.dumps(_LOG_CONFIG))
    env = clean_env()
    env.update({
        "LITELLM_OFFLINE_MODE": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_LOG": "ERROR",
    })
    cmd = cpus.wrap([str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                     "--port", str(port), "--num_workers", "1", "--log_config", str(log_config)], "served")
    return spawn("litellm-proxy", cmd, env, workdir, port, workdir)

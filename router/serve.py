"""Run the gateway: settings from the environment plus the caller's overrides, then uvicorn.

`hybrid-router serve` (in `ops.cli`) and `python -m router` call `run`; everything the serving
process needs lives in `router/`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run"]


def run(overrides: dict[str, Any]) -> int:
    """Serve until stopped; 2 when the settings refuse to start (e.g. exposed without auth)."""
    import uvicorn

    from .auth import ExposureError, check_exposure
    from .connections import run_workers, uvicorn_options
    from .logs import configure_logging
    from .settings import Settings

    settings = Settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    try:  # before uvicorn: with several workers each would fail on its own
        check_exposure(settings.host, settings.auth, warn=False)
    except ExposureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # log_config=None: uvicorn's loggers go through our handler (JSON or text), not its own.
    common: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_level": settings.log_level.lower(),
                              "log_config": None, "loop": "uvloop", **uvicorn_options(settings)}
    if settings.workers == 1:
        from .app import create_app

        uvicorn.run(create_app(settings), **common)
        return 0
    # Several workers: each process builds its app from the environment, so the options given
    # here travel as ROUTER_* variables; metrics are aggregated through one multiprocess directory.
    # Files left by an earlier run (or another gateway) would be added to this run's counts.
    metrics_dir = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="hybrid-router-metrics-"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    for key, value in overrides.items():
        os.environ[f"ROUTER_{key.upper()}"] = str(value)
    run_workers(uvicorn.Config("router.app:create_app_from_env", factory=True, workers=settings.workers, **common))
    return 0

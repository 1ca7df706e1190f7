"""Process logging: one JSON object per line (machines, containers) or readable text (a terminal).

`configure_logging(level, fmt)` installs one stderr handler on the root logger. `fmt` is
`ROUTER_LOG_FORMAT`: `json`, `text`, or unset for JSON unless stderr is a terminal. Fields given
with `extra=` (the access line's request id, route, status, ...) become JSON keys, or `key=value`
pairs in text. litellm, httpx and openai are held at WARNING whatever the level: litellm's debug
and info lines quote whole requests (prompts), it writes several multi-line records per
foundation call, and httpx's request lines carry URLs. Messages are ours: callers never pass
prompts, keys or upstream error bodies to a logger.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["configure_logging", "quiet_libraries"]

# Not fields of ours: color_message is uvicorn's copy of its message with ANSI colour codes, and
# litellm's redaction filter stamps the records of the loggers it watches with litellm_redacted.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message", "litellm_redacted"}
_QUIET = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "httpcore", "openai")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        data.update(_extras(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure_logging(level: str = "INFO", fmt: str | None = None) -> None:
    """Route every logger (uvicorn's too, when it is run with log_config=None) to stderr."""
    if fmt is None:
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet_libraries()


def quiet_libraries() -> None:
    """litellm, httpx and openai at WARNING (even when debugging: they would log prompts), through
    the root handler only. Run again after litellm is imported: its import attaches its own
    handler, which printed a second, differently formatted copy of each line."""
    for name in _QUIET:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        for own in list(logger.handlers):
            logger.removeHandler(own)
        logger.propagate = True

"""Connection hygiene for uvicorn's httptools protocol: header size limit, header and body read
timeouts, and counters for what is cut.

uvicorn bounds concurrent connections and requests (`limit_concurrency`, a 503 past it) and idle
keep-alive connections (`timeout_keep_alive`), but its httptools protocol has no header size
limit and no read timeouts: a client may send 8 MB of headers, or open a connection and never
finish its request, and hold a file descriptor forever. `GatewayProtocol` adds:

- a header limit: more than `max_header_bytes` received before the headers end -> 431, closed;
- a header timeout: headers not complete `header_timeout_s` after the connection opened, or
  after the first byte of a later request on a kept-alive connection -> closed;
- a body timeout: a body not complete `body_timeout_s` after its headers -> closed (the handler
  reading it sees the client go away).

The limits and the event counter come from the app's lifespan state (`LIFESPAN_KEY`), so each
server gets its own app's settings and metrics; without them (lifespan off) the defaults apply
and nothing is counted. Select it with uvicorn's `http="router.connections:GatewayProtocol"`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from .settings import Settings

__all__ = ["LIFESPAN_KEY", "ConnectionLimits", "GatewayProtocol", "run_workers", "uvicorn_options"]

LIFESPAN_KEY = "router.connections"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    on_event: Callable[[str], None] | None = None
    """Called with a `metrics.CUT_REASONS` value each time a connection or request is cut."""

    @classmethod
    def from_settings(cls, settings: Settings, on_event: Callable[[str], None] | None) -> ConnectionLimits:
        return cls(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s, on_event)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's server options for the gateway (`serve` and the tests' servers use the same)."""
    return {
        "http": "router.connections:GatewayProtocol",
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_s,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        # For uvicorn's h11 protocol, if selected instead: its own header size bound.
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        # The supervisor pings each worker and kills one that does not answer in time; 5 s (uvicorn's
        # default) killed healthy workers on a CPU-starved machine while they imported litellm.
        "timeout_worker_healthcheck": 30,
        "access_log": False,
    }


_DEFAULT = ConnectionLimits()


class _HeadersTooLarge(Exception):
    pass

_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 33\r\nconnection: close\r\n\r\nrequest header fields too large\r\n")


class GatewayProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.app_state.get(LIFESPAN_KEY)
        self._limits: ConnectionLimits = limits if isinstance(limits, ConnectionLimits) else _DEFAULT
        self._in_headers = True
        self._headers_too_large = False
        self._header_bytes = self._raw_header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    # ---- timers ----------------------------------------------------------------------------
    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._cut, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cut(self, reason: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        self._count(reason)
        self.transport.close()

    def _count(self, reason: str) -> None:
        if self._limits.on_event is not None:
            self._limits.on_event(reason)

    # ---- protocol hooks --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_headers or self.transport.is_closing():
            return
        # Headers still incomplete after this read (e.g. one huge header arriving slowly, which the
        # parser buffers without a callback): count the raw bytes too.
        self._raw_header_bytes += len(data)
        if self._raw_header_bytes > self._limits.max_header_bytes:
            self._reject_headers()

    def _reject_headers(self) -> None:
        self._disarm()
        self._count("header_too_large")
        self.transport.write(_431)
        self.transport.close()

    def _add_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self._limits.max_header_bytes:
            self._headers_too_large = True
            raise _HeadersTooLarge  # stops the parser; uvicorn then calls send_400_response

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self._reject_headers()
            return
        super().send_400_response(msg)

    def on_url(self, url: bytes) -> None:
        self._add_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._add_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_begin(self) -> None:
        self._in_headers = True
        self._header_bytes = self._raw_header_bytes = 0
        self._arm(self._limits.header_timeout_s, "header_timeout")
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._arm(self._limits.body_timeout_s, "body_timeout")
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self._count("overloaded")  # uvicorn answers it with 503
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, closing its copy of the listening socket before it stops the
    workers: otherwise the kernel keeps accepting connections into a backlog nobody reads while
    the workers drain, and new clients hang instead of being refused."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def run_workers(config: Config) -> None:
    """Serve with `config.workers` processes (as `uvicorn.run` does), draining together on SIGTERM."""
    _Supervisor(config, sockets=[config.bind_socket()]).run()

"""Serve an ASGI app with uvicorn in a daemon thread on 127.0.0.1 (a free port), for tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class ServerThread:
    def __init__(self, app: Any, port: int = 0, lifespan: str = "on") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A gateway app is served with the gateway's own server options (router.connections), as
        # `serve` does; anything else (the fake upstream) with uvicorn's defaults. Shutdown is bounded,
        # so a test server holding hung requests still stops.
        settings = getattr(getattr(app, "state", None), "settings", None)
        options: dict[str, Any] = {"access_log": False}
        if settings is not None:
            from router.connections import uvicorn_options

            options = uvicorn_options(settings)
        options["timeout_graceful_shutdown"] = min(3, options.get("timeout_graceful_shutdown") or 3)
        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, **options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server thread did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

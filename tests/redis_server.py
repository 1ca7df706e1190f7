"""A private `redis-server` on a free loopback port (no persistence), for tests and fault benchmarks.

It can be killed and restarted on the same port, so a gateway pointed at it sees Redis die and
come back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import redis

__all__ = ["RedisServer", "free_port", "ping"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


class RedisServer:
    """`start()` raises FileNotFoundError when no `redis-server` binary is on PATH."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="router-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._dir.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not ping(self.url):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self._proc.kill()
                raise RuntimeError(f"the started redis-server on port {self.port} did not answer")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: connections drop without a goodbye."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

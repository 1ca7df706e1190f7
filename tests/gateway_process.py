"""Run `hybrid-router serve` as a real subprocess on a free loopback port, for multi-replica tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    def __init__(self, policy: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # stderr to a file, not a pipe: one access line per request would fill a pipe nobody reads
        # until stop(), and the gateway would block writing its log.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self._final_err = ""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--port", str(self.port), "--policy", str(policy)],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=self._stderr)

    def _err(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def wait_ready(self, timeout_s: float = 90) -> GatewayProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self._err()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        err = self.stop()
        raise RuntimeError(f"gateway did not become ready in {timeout_s} s: {err[-3000:]}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def signal(self, sig: int) -> None:
        self._proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        """The exit code once the process has exited (raises subprocess.TimeoutExpired)."""
        return self._proc.wait(timeout=timeout_s)

    def stop(self) -> str:
        """Stop the process and return its stderr; again (a fixture after the test), the same text."""
        if self._stderr.closed:
            return self._final_err
        self._proc.terminate()
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._final_err = self._err()
        self._stderr.close()
        return self._final_err

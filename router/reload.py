"""Live policy changes: on file change, on SIGHUP, or from the admin endpoint.

`PolicyReloader.reload()` validates the file exactly as start-up does; a valid policy is swapped
in atomically (requests in flight keep the policy object they started with), an invalid one is
rejected, logged and counted while the old policy keeps serving. The outcome of the last attempt
is kept for the admin endpoint.

With Redis, a replica that changes its policy stores the text under `gw:v1:policy:text` and
publishes the version on `gw:v1:policy`; the other replicas validate and apply it within a
second, so an admin reload on one replica switches them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .gateway import Gateway
from .policy import LoadedPolicy, PolicyConfigError, load_policy, parse_policy

__all__ = ["POLICY_CHANNEL", "POLICY_TEXT_KEY", "PolicyReloader", "ReloadResult"]

POLICY_CHANNEL = "gw:v1:policy"
POLICY_TEXT_KEY = "gw:v1:policy:text"

log = logging.getLogger("router.reload")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    version: str
    at: float
    trigger: str
    changed: bool = False
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "version": self.version, "at": self.at, "trigger": self.trigger,
                "changed": self.changed, "errors": list(self.errors)}


class PolicyReloader:
    def __init__(self, gateway: Gateway, path: Path, poll_s: float = 1.0) -> None:
        self._gw = gateway
        self._path = path
        self._poll_s = poll_s
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stamp = self._file_stamp()
        self.last = ReloadResult(True, gateway.policy.version, time.time(), "startup")

    def _file_stamp(self) -> tuple[int, int, int, int] | None:
        """Identity and version of the file the policy path resolves to now.

        `stat` follows symlinks, and the inode is part of the stamp: a Kubernetes ConfigMap
        volume updates by swapping its `..data` symlink to a new directory of new files, which
        may carry the same size and mtime as the old ones (and the mtime of the link itself
        never changes).
        """
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> LoadedPolicy:
        return self._gw.policy

    def shadow_status(self) -> dict[str, dict[str, object]]:
        return self._gw.shadow.status()

    def shadow_reset(self, route: str | None) -> list[str]:
        return self._gw.shadow.reset(route)

    def apply(self, loaded: LoadedPolicy) -> None:
        """Swap `loaded` in (it has been validated against the loaded specialists)."""
        gw = self._gw
        gw.escalator.configure(loaded.policy.aliases)
        gw.budget.configure(loaded.policy.budgets)
        gw.policy = loaded  # the swap: one attribute assignment, atomic for the event loop
        gw.metrics.set_policy_version(loaded.version)
        gw.metrics.prepare_policy(loaded.policy)
        gw.shadow.reset()  # a new policy is the operator acting: routes escalated for drift resume

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            classes = {n: self._gw.specialists[n].classes for n in self._gw.specialists}
            try:
                loaded = await asyncio.to_thread(load_policy, self._path, classes)
            except PolicyConfigError as exc:
                self._gw.metrics.policy_reloads.labels("invalid").inc()
                log.error("policy reload (%s) rejected; still serving %s:\n  %s", trigger,
                          self._gw.policy.version, "\n  ".join(exc.issues))
                self.last = ReloadResult(False, self._gw.policy.version, time.time(), trigger,
                                         errors=tuple(exc.issues))
                return self.last
            changed = loaded.version != self._gw.policy.version
            if changed:
                self.apply(loaded)
                log.info("policy reloaded (%s): version %s", trigger, loaded.version)
                await self._announce(loaded)
            self._gw.metrics.policy_reloads.labels("ok").inc()
            self.last = ReloadResult(True, loaded.version, time.time(), trigger, changed=changed)
            return self.last

    async def _announce(self, loaded: LoadedPolicy) -> None:
        """Tell the other replicas: store the policy text, then publish its version."""
        state = self._gw.state
        if state is None:
            return
        if await state.set(POLICY_TEXT_KEY, loaded.text.encode(), ttl_s=30 * 86400):
            await state.publish(POLICY_CHANNEL, loaded.version.encode())

    async def _listen(self) -> None:
        """Apply policies announced by other replicas (validated here like any other)."""
        state = self._gw.state
        assert state is not None
        async for message in state.subscribe(POLICY_CHANNEL):
            if message.decode() == self._gw.policy.version:
                continue
            async with self._lock:
                _, text = await state.get(POLICY_TEXT_KEY)
                if text is None:
                    continue
                classes = {n: self._gw.specialists[n].classes for n in self._gw.specialists}
                try:
                    loaded = parse_policy(text.decode(), f"{self._path} (announced)", classes)
                except PolicyConfigError as exc:
                    self._gw.metrics.policy_reloads.labels("invalid").inc()
                    log.error("announced policy rejected:\n  %s", "\n  ".join(exc.issues))
                    continue
                if loaded.version != self._gw.policy.version:
                    self.apply(loaded)
                    self._gw.metrics.policy_reloads.labels("ok").inc()
                    self.last = ReloadResult(True, loaded.version, time.time(), "announce", changed=True)
                    log.info("policy %s applied from another replica's announcement", loaded.version)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                await self.reload("file_change")

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch())]
        if self._gw.state is not None:
            self._tasks.append(loop.create_task(self._listen()))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # Only the main thread can own signals; servers run in test threads skip this.
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("sighup")))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

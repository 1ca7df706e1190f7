"""Live policy changes: on file change, on SIGHUP, from the admin endpoint, or announced by a replica.

`PolicyReloader.reload()` validates the file exactly as start-up does (in a worker thread: YAML
parsing is pure Python and must not stall requests); a valid policy is swapped in atomically
(requests in flight keep the policy object they started with), an invalid one is rejected,
logged and counted while the old policy keeps serving. The outcome of the last attempt is kept
for the admin endpoint.

With Redis, a replica whose policy changed announces it on channel `gw:v1:policy` (the message
is the new version). Whoever can write to Redis can publish too, so an announcement is trusted
only as far as it can be verified:

- With a signing key (`ROUTER_POLICY_SIGNING_KEY`, shared by the replicas) the announcing replica
  stores a signed record under `gw:v1:policy:text`: a header line
  `hr-policy-1 <version> <issued_at_ms> <hmac-sha256 hex>` and the policy text. The others apply
  the text only if the HMAC (over version, time and text) verifies, it was issued within
  `ANNOUNCE_MAX_AGE_S` and not before the last one applied (no replaying an old policy), and it
  validates like a file.
- Without a signing key nothing is read from Redis: an announcement only makes each replica
  reload its own policy file (at most once per `_TRIGGER_GAP_S`, however many arrive).

Everything else (unsigned, badly signed, stale, oversized, not UTF-8, malformed or invalid) is
refused, logged without its content (a bounded, escaped error at most) and counted as
`hybrid_router_policy_reloads_total{result="rejected_announcement"}`; the listener keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from specialists import SpecialistSet

from .gateway import Gateway
from .policy import (
    MAX_POLICY_BYTES,
    LoadedPolicy,
    PolicyConfigError,
    parse_policy,
    policy_version,
    read_policy_text,
)
from .policy_specialists import extend

__all__ = [
    "ANNOUNCE_MAX_AGE_S",
    "POLICY_CHANNEL",
    "POLICY_TEXT_KEY",
    "AnnouncementRejected",
    "PolicyReloader",
    "ReloadResult",
    "sign_announcement",
    "verify_announcement",
]

POLICY_CHANNEL = "gw:v1:policy"
POLICY_TEXT_KEY = "gw:v1:policy:text"
ANNOUNCE_MAX_AGE_S = 120.0
"""A signed announcement older (or further in the future, for clock skew) than this is stale."""

_MAGIC = b"hr-policy-1"
_HEADER_MAX = 160  # magic + 12-hex version + ms timestamp + 64-hex HMAC, with room to spare
_VERSION = re.compile(rb"[0-9a-f]{12}")
_TRIGGER_GAP_S = 0.5
_RETRY_S = 1.0
_LOG_EVERY_S = 10.0

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


class AnnouncementRejected(Exception):
    """An announcement that is not applied; `reason` is one of a closed set of words (for logs)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _mac(key: bytes, version: bytes, issued_ms: bytes, text: bytes) -> str:
    return hmac.new(key, b"\0".join((_MAGIC, version, issued_ms, text)), hashlib.sha256).hexdigest()


def sign_announcement(key: bytes, policy_text: str, now: float | None = None) -> bytes:
    """The record a replica stores under `POLICY_TEXT_KEY` to announce the policy `policy_text`."""
    text = policy_text.encode("utf-8")
    version = policy_version(policy_text).encode()
    issued_ms = str(int((time.time() if now is None else now) * 1000)).encode()
    header = b" ".join((_MAGIC, version, issued_ms, _mac(key, version, issued_ms, text).encode()))
    return header + b"\n" + text


def verify_announcement(key: bytes, record: bytes, max_bytes: int, now: float | None = None) -> tuple[str, float]:
    """(policy text, issued_at) of a signed record, or `AnnouncementRejected`. Parses nothing."""
    if len(record) > max_bytes + _HEADER_MAX:
        raise AnnouncementRejected("oversized")
    header, sep, text = record.partition(b"\n")
    if not sep or len(header) > _HEADER_MAX:
        raise AnnouncementRejected("unsigned")
    fields = header.split(b" ")
    if len(fields) != 4 or fields[0] != _MAGIC:
        raise AnnouncementRejected("unsigned")
    _, version, issued_ms, mac = fields
    if not _VERSION.fullmatch(version) or not issued_ms.isdigit() or len(issued_ms) > 16:
        raise AnnouncementRejected("malformed")
    # Constant-time comparison, before anything in the record is believed.
    if not hmac.compare_digest(mac, _mac(key, version, issued_ms, text).encode()):
        raise AnnouncementRejected("bad_signature")
    issued = int(issued_ms) / 1000
    if abs((time.time() if now is None else now) - issued) > ANNOUNCE_MAX_AGE_S:
        raise AnnouncementRejected("stale")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise AnnouncementRejected("not_utf8") from None
    if policy_version(decoded).encode() != version:
        raise AnnouncementRejected("malformed", "version does not match the text")
    return decoded, issued


def _bounded(issues: list[str], limit: int = 3, width: int = 160) -> str:
    """Validation errors of a policy nobody here wrote: few, short, escaped (no control characters)."""
    shown = [i.encode("ascii", "backslashreplace").decode()[:width] for i in issues[:limit]]
    more = f" (+{len(issues) - limit} more)" if len(issues) > limit else ""
    return "; ".join(shown) + more


class PolicyReloader:
    def __init__(self, gateway: Gateway, path: Path, poll_s: float = 1.0, *,
                 max_bytes: int = MAX_POLICY_BYTES, signing_key: bytes | None = None) -> None:
        self._gw = gateway
        self._path = path
        self._poll_s = poll_s
        self._max_bytes = max_bytes
        self._signing_key = signing_key
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stamp = self._file_stamp()
        self._last_issued = 0.0
        self._trigger = asyncio.Event()
        self._retry_message: bytes | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self._rejected_since_log = 0
        self._last_reject_log = 0.0
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

    def candidate_status(self) -> dict[str, dict[str, object]]:
        return self._gw.candidates.status()

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
            current = self._gw.policy
            specialists = self._gw.specialists

            def load() -> tuple[LoadedPolicy, SpecialistSet]:
                text = read_policy_text(self._path, self._max_bytes)
                if policy_version(text) == current.version:
                    return current, specialists  # same bytes, already validated (announcement floods)
                # Specialists the policy names by directory (a promoted candidate) load first.
                wider = extend(specialists, text, str(self._path), self._max_bytes)
                classes = {n: wider[n].classes for n in wider}
                return parse_policy(text, str(self._path), classes, self._max_bytes), wider

            try:
                loaded, wider = await asyncio.to_thread(load)
            except PolicyConfigError as exc:
                self._gw.metrics.policy_reloads.labels("invalid").inc()
                log.error("policy reload (%s) rejected; still serving %s:\n  %s", trigger,
                          self._gw.policy.version, "\n  ".join(exc.issues))
                self.last = ReloadResult(False, self._gw.policy.version, time.time(), trigger,
                                         errors=tuple(exc.issues))
                return self.last
            changed = loaded.version != self._gw.policy.version
            if changed:
                self._gw.specialists = wider  # a superset, before the policy that needs it
                self.apply(loaded)
                log.info("policy reloaded (%s): version %s", trigger, loaded.version)
                await self._announce(loaded)
            self._gw.metrics.policy_reloads.labels("ok").inc()
            self.last = ReloadResult(True, loaded.version, time.time(), trigger, changed=changed)
            return self.last

    async def _announce(self, loaded: LoadedPolicy) -> None:
        """Tell the other replicas: store the signed policy (with a key), then publish its version."""
        state = self._gw.state
        if state is None:
            return
        if self._signing_key is not None:
            now = time.time()
            self._last_issued = max(self._last_issued, now)
            record = sign_announcement(self._signing_key, loaded.text, now)
            if not await state.set(POLICY_TEXT_KEY, record, ttl_s=30 * 86400):
                return
        await state.publish(POLICY_CHANNEL, loaded.version.encode())

    def _rejected(self, reason: str, detail: str = "") -> None:
        """Count every refusal; log at most one line per `_LOG_EVERY_S` (a flood must not flood the logs)."""
        self._gw.metrics.policy_reloads.labels("rejected_announcement").inc()
        self._rejected_since_log += 1
        now = time.monotonic()
        if now - self._last_reject_log >= _LOG_EVERY_S:
            log.warning("policy announcement rejected (%s)%s; %d rejected since the last such message; "
                        "still serving %s", reason, f": {detail}" if detail else "", self._rejected_since_log,
                        self._gw.policy.version)
            self._rejected_since_log = 0
            self._last_reject_log = now

    async def _on_message(self, message: bytes) -> None:
        if not _VERSION.fullmatch(message):
            self._rejected("malformed")  # the only message a replica sends is a 12-hex version
            return
        if message.decode() == self._gw.policy.version:
            return  # our own announcement, or one already applied
        if self._signing_key is None:
            self._trigger.set()  # reload our own file; nothing from Redis is believed
            return
        state = self._gw.state
        assert state is not None
        async with self._lock:
            reached, record = await state.get_prefix(POLICY_TEXT_KEY, self._max_bytes + _HEADER_MAX + 1)
            if not reached:
                self._retry_later(message)  # pub/sub does not repeat itself: ask again shortly
                return
            if record is None:
                self._rejected("unsigned", "announced, but no record stored")
                return
            key = self._signing_key
            specialists = self._gw.specialists

            def check() -> tuple[LoadedPolicy, SpecialistSet, float]:
                text, issued = verify_announcement(key, record, self._max_bytes)
                # Directories a signed policy names resolve against our own policy file's folder.
                wider = extend(specialists, text, str(self._path), self._max_bytes)
                classes = {n: wider[n].classes for n in wider}
                return parse_policy(text, f"{self._path} (announced)", classes, self._max_bytes), wider, issued

            try:
                loaded, wider, issued = await asyncio.to_thread(check)
            except AnnouncementRejected as exc:
                self._rejected(exc.reason, exc.detail)
                return
            except PolicyConfigError as exc:
                self._rejected("invalid", _bounded(exc.issues))
                return
            if issued < self._last_issued:
                self._rejected("stale", "older than the policy last applied")
                return
            if loaded.version != self._gw.policy.version:
                self._last_issued = issued
                self._gw.specialists = wider
                self.apply(loaded)
                self._gw.metrics.policy_reloads.labels("ok").inc()
                self.last = ReloadResult(True, loaded.version, time.time(), "announce", changed=True)
                log.info("policy %s applied from another replica's signed announcement", loaded.version)

    def _retry_later(self, message: bytes) -> None:
        """Handle `message` again in a second (one pending retry at most; a newer message replaces it)."""
        self._retry_message = message
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        await asyncio.sleep(_RETRY_S)
        message, self._retry_message = self._retry_message, None
        self._retry_task = None  # a failed retry schedules the next one
        if message is not None:
            try:
                await self._on_message(message)
            except Exception as exc:  # noqa: BLE001 - as in _listen
                self._rejected("error", type(exc).__name__)

    async def _listen(self) -> None:
        """Handle announcements forever: no message, however malformed, ends policy sync."""
        state = self._gw.state
        assert state is not None
        while True:
            try:
                async for message in state.subscribe(POLICY_CHANNEL):
                    try:
                        await self._on_message(message)
                    except Exception as exc:  # noqa: BLE001 - one bad message must not end sync
                        self._rejected("error", type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - the subscription itself failed: resubscribe
                log.warning("policy announcements: %s; resubscribing", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _reload_on_trigger(self) -> None:
        """Unsigned mode: announcements coalesce into at most one reload of our file per gap."""
        while True:
            await self._trigger.wait()
            self._trigger.clear()
            await self.reload("announce")
            await asyncio.sleep(_TRIGGER_GAP_S)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    await self.reload("file_change")
                except Exception:  # a bug must not stop watching the file: log it with its traceback
                    log.exception("policy reload (file_change) failed")

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch())]
        if self._gw.state is not None:
            self._tasks.append(loop.create_task(self._listen()))
            if self._signing_key is None:
                self._tasks.append(loop.create_task(self._reload_on_trigger()))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # Only the main thread can own signals; servers run in test threads skip this.
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("sighup")))

    async def stop(self) -> None:
        if self._retry_task is not None:
            self._tasks.append(self._retry_task)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

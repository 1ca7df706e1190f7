"""API keys: generation, keyed digests, validated records, the stores that hold them, and the
in-process key ring the request path reads.

A key is ``hr-`` + 32 URL-safe random characters, shown once when it is created. Nothing stores
the key: the store maps ``HMAC-SHA256(ROUTER_AUTH__SECRET, key)`` (hex) to a `KeyRecord` (name,
permitted routes and aliases, spend budgets, rate limits, tenant, created, revoked). Whoever reads
the store (a Redis dump, the keys file) learns names and limits, never a usable key, and cannot
test guesses offline without the secret.

Stores: with Redis, the hash ``gw:v1:keys`` (shared by every replica; ``gw:v1:keys:version`` is
incremented on each change); without Redis, a JSON file written atomically with mode 0600. Records
read back are validated like any other hostile input: an invalid record is skipped and logged
(never its digest), so one bad entry cannot lock every caller out.

`KeyRing` keeps the records in process and re-reads the store in the background every
`refresh_s` (only when its version / file stamp changed, and in full every minute), so checking a
key costs one HMAC and one dict lookup, and a revocation reaches every replica within `refresh_s`.
When the store cannot be read, the last records stay in force (fail static).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .redis_state import RedisState

__all__ = [
    "KEY_NAME_PATTERN",
    "FileKeyStore",
    "KeyRecord",
    "KeyRing",
    "KeyStore",
    "KeyStoreError",
    "RedisKeyStore",
    "issue_key",
    "key_digest",
    "new_key",
    "open_store",
    "revoke_keys",
]

log = logging.getLogger("router.keys")

KEY_PREFIX = "hr-"
KEY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_KEY_SHAPE = re.compile(r"^hr-[A-Za-z0-9_-]{32}$")
_DIGEST_SHAPE = re.compile(r"^[0-9a-f]{64}$")
REDIS_HASH = "gw:v1:keys"
REDIS_VERSION = "gw:v1:keys:version"
_MAX_RECORD_BYTES = 16 * 1024
_MAX_FILE_BYTES = 64 * 1024 * 1024
_INDEX_CHARS = 16
_FULL_RELOAD_S = 60.0  # re-read everything now and then even if the version did not move

KeyName = Annotated[str, StringConstraints(pattern=KEY_NAME_PATTERN)]
_Target = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:/-]{1,128}$")]
Targets = Literal["all"] | Annotated[tuple[_Target, ...], Field(max_length=256)]


class KeyStoreError(Exception):
    """The key store could not be read or written (CLI only: serving fails static)."""


class KeyRecord(BaseModel):
    """What one API key may do. Budgets and rates belong to the key's *name*: a key re-issued
    under the same name (rotation) continues its windows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: KeyName
    routes: Targets = "all"
    """Routes the key may name as `task` / `model`."""
    aliases: Targets = "all"
    """Foundation aliases the key may name as `model` or have its requests escalated to."""
    usd_per_hour: float | None = Field(None, ge=0)
    usd_per_day: float | None = Field(None, ge=0)
    rpm: int | None = Field(None, ge=1)
    """Requests per minute."""
    tpm: int | None = Field(None, ge=1)
    """Foundation tokens (prompt + completion) per minute."""
    tenant: KeyName | None = None
    """Cache namespace; keys of one tenant share cached answers. Default: the key's name."""
    created: datetime
    revoked: datetime | None = None

    @property
    def cache_tenant(self) -> str:
        return self.tenant or self.name

    def permits(self, kind: Literal["route", "alias"], name: str) -> bool:
        allowed = self.routes if kind == "route" else self.aliases
        return allowed == "all" or name in allowed


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)  # 24 random bytes -> 32 characters


def key_digest(secret: bytes, key: str) -> str:
    return hmac.digest(secret, key.encode(), "sha256").hex()


def parse_records(raw: Mapping[Any, Any], where: str) -> dict[str, KeyRecord]:
    """digest -> record, skipping (and logging without the digest) anything that does not validate."""
    out: dict[str, KeyRecord] = {}
    bad = 0
    for digest, value in raw.items():
        try:
            d = digest.decode() if isinstance(digest, bytes) else digest
            if not isinstance(d, str) or not _DIGEST_SHAPE.match(d):
                raise ValueError("malformed digest")
            if isinstance(value, bytes | str):
                if len(value) > _MAX_RECORD_BYTES:
                    raise ValueError("record too large")
                value = orjson.loads(value)
            out[d] = KeyRecord.model_validate(value)
        except (ValueError, UnicodeDecodeError, ValidationError, orjson.JSONDecodeError):
            bad += 1
    if bad:
        log.warning("%s: %d invalid key record(s) ignored", where, bad)
    return out


class KeyStore(Protocol):
    @property
    def where(self) -> str: ...

    async def stamp(self) -> object | None:
        """A marker that changes whenever the keys change; None when the store is unreachable."""
        ...

    async def load(self) -> dict[str, KeyRecord] | None:
        """digest -> record; None when the store is unreachable."""
        ...

    async def put(self, digest: str, record: KeyRecord) -> None:
        """Add or replace one record (raises `KeyStoreError`)."""
        ...


class RedisKeyStore:
    def __init__(self, state: RedisState) -> None:
        self._state = state

    @property
    def where(self) -> str:
        return f"redis hash {REDIS_HASH}"

    async def stamp(self) -> object | None:
        reached, value = await self._state.get(REDIS_VERSION)
        return (value or b"0") if reached else None

    async def load(self) -> dict[str, KeyRecord] | None:
        raw = await self._state.hash_all(REDIS_HASH)
        return None if raw is None else parse_records(raw, self.where)

    async def put(self, digest: str, record: KeyRecord) -> None:
        if not await self._state.hash_set(REDIS_HASH, digest, record.model_dump_json().encode()):
            raise KeyStoreError(f"cannot write {self.where}: Redis unreachable")
        if not await self._state.incr(REDIS_VERSION):
            raise KeyStoreError(f"wrote {self.where} but could not bump {REDIS_VERSION}: replicas pick the "
                                "change up within a minute")


class FileKeyStore:
    """A JSON file ``{"keys": {digest: record}}`` for the embedded (no Redis) default."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def where(self) -> str:
        return str(self.path)

    async def stamp(self) -> object | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return "absent"
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def load(self) -> dict[str, KeyRecord] | None:
        return await asyncio.to_thread(self._read)

    def _read(self) -> dict[str, KeyRecord] | None:
        try:
            with self.path.open("rb") as f:
                if os.fstat(f.fileno()).st_mode & 0o077:
                    log.warning("%s is readable by other users: chmod 600 it", self.path)
                data = f.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, type(exc).__name__)
            return None
        if len(data) > _MAX_FILE_BYTES:
            log.warning("%s is over %d bytes: ignored", self.path, _MAX_FILE_BYTES)
            return None
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("%s is not valid JSON: ignored", self.path)
            return None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, dict):
            log.warning("%s has no 'keys' object: ignored", self.path)
            return None
        return parse_records(keys, self.where)

    async def put(self, digest: str, record: KeyRecord) -> None:
        await asyncio.to_thread(self._write, digest, record)

    def _write(self, digest: str, record: KeyRecord) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise KeyStoreError(f"cannot write {self.path}: {exc}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # concurrent `keys` commands must not lose records
            current = self._read()
            if current is None:
                raise KeyStoreError(f"{self.path} is unreadable or invalid: fix or move it first")
            current[digest] = record
            doc = {"keys": {d: r.model_dump(mode="json") for d, r in current.items()}}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise KeyStoreError(f"cannot write {self.path}: {exc}") from exc
        finally:
            os.close(lock_fd)


class KeyRing:
    """The records of a store, held in process; `lookup` is the per-request check."""

    def __init__(self, secret: bytes, store: KeyStore, refresh_s: float) -> None:
        # HMAC's keyed inner/outer state computed once; each check copies it (~40% faster than
        # hmac.digest, which re-derives both pads from the secret on every call).
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        self.store = store
        self.refresh_s = refresh_s
        self._records: dict[str, KeyRecord] = {}
        self._index: dict[str, list[tuple[str, KeyRecord]]] = {}
        self._stamp: object | None = None
        self._loaded_at = 0.0
        self.loaded = False

    def lookup(self, key: str) -> KeyRecord | None:
        """The record of a presented key (revoked ones included), or None."""
        if not _KEY_SHAPE.match(key):
            return None
        mac = self._mac.copy()
        mac.update(key.encode())
        digest = mac.hexdigest()
        # Found by a prefix of the digest (which the caller cannot steer without the secret), then
        # compared in full in constant time.
        for stored, record in self._index.get(digest[:_INDEX_CHARS], ()):
            if hmac.compare_digest(stored, digest):
                return record
        return None

    def names(self) -> list[str]:
        return sorted({r.name for r in self._records.values()})

    async def refresh(self) -> None:
        stamp = await self.store.stamp()
        if stamp is None:
            return  # unreachable: keep what we have
        if self.loaded and stamp == self._stamp and time.monotonic() - self._loaded_at < _FULL_RELOAD_S:
            return
        records = await self.store.load()
        if records is None:
            return
        first = not self.loaded
        index: dict[str, list[tuple[str, KeyRecord]]] = {}
        for digest, record in records.items():
            index.setdefault(digest[:_INDEX_CHARS], []).append((digest, record))
        self._index = index
        self._records, self._stamp, self._loaded_at, self.loaded = records, stamp, time.monotonic(), True
        active = sum(1 for r in records.values() if r.revoked is None)
        if first:
            log.info("API keys: %d active in %s", active, self.store.where)
            if not active:
                log.warning("no API keys yet: every /v1/* request gets 401 until one is created "
                            "(hybrid-router keys create --name NAME)")

    async def run(self) -> None:
        """Refresh forever (the lifespan starts and cancels it)."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:  # a bad read must not end key refreshes for good
                log.exception("key store refresh failed")



def open_store(state: RedisState | None, keys_file: Path) -> KeyStore:
    """The shared Redis store when Redis is configured, else the keys file."""
    return RedisKeyStore(state) if state is not None else FileKeyStore(keys_file)


async def issue_key(store: KeyStore, secret: bytes, record: KeyRecord) -> str:
    """Store a new key's digest and return the key (the only time it exists outside the caller)."""
    records = await store.load()
    if records is None:
        raise KeyStoreError(f"cannot read {store.where}")
    if any(r.name == record.name and r.revoked is None for r in records.values()):
        raise KeyStoreError(f"a key named {record.name!r} is active: revoke it first or choose another name")
    key = new_key()
    await store.put(key_digest(secret, key), record)
    return key


async def revoke_keys(store: KeyStore, name: str) -> int:
    """Mark every active key of `name` revoked (kept for the record); returns how many."""
    records = await store.load()
    if records is None:
        raise KeyStoreError(f"cannot read {store.where}")
    when = datetime.now(UTC).replace(microsecond=0)
    hits = [(d, r) for d, r in records.items() if r.name == name and r.revoked is None]
    for digest, record in hits:
        await store.put(digest, record.model_copy(update={"revoked": when}))
    return len(hits)

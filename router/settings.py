"""Process configuration: environment / `.env` / secrets directory -> one frozen `Settings`.

Precedence is pydantic-settings' own: keyword arguments > environment (`ROUTER_` prefix, `__` for
nesting, e.g. `ROUTER_REDIS__URL`) > `.env` > secrets directory > defaults. This is the only module
that reads `os.environ`; everything else receives a `Settings` (or a part of it) from its caller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "PROVIDER_KEY_PREFIX",
    "AuthSettings",
    "FoundationSettings",
    "RedisSettings",
    "Settings",
    "multiprocess_metrics_dir",
    "read_secret_env",
]

_ROOT = Path(__file__).resolve().parent.parent

PROVIDER_KEY_PREFIX = "ROUTER_PROVIDER_KEY_"
"""The only environment variables a policy's `api_key_env` may name (policy validation checks it;
`read_secret_env` checks it again)."""


class RedisSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: SecretStr | None = None
    """redis://, rediss:// (TLS) or unix://, user and password in the URL; None = in-process state."""
    cache_url: SecretStr | None = None
    """A separate Redis for cached answers and coalescing locks only (`allkeys-lru`, no persistence);
    None = they share `url`. Budget counters, the escalation log and the policy stay on `url`
    (`noeviction`, persisted), so cache pressure can never evict spend. Uses the `cluster` flag
    of `url`; Sentinel applies to `url` only."""
    timeout_s: float = Field(0.05, gt=0, le=10)
    """Per-command socket timeout: a slow Redis must not slow requests down."""
    cluster: bool = False
    """Connect to a Redis Cluster (the URL names any node)."""
    sentinels: tuple[str, ...] = ()
    """Sentinel addresses `host:port`; with `sentinel_master` the URL is ignored."""
    sentinel_master: str | None = None
    sentinel_password: SecretStr | None = None
    """Password of the Sentinels themselves; the master's user and password come from `url`."""
    breaker_failures: int = Field(3, ge=1)
    breaker_reset_s: float = Field(5.0, gt=0)
    max_value_bytes: int = Field(256 * 1024, ge=1024)
    memory_max_entries: int = Field(100_000, ge=0)
    near_cache_ttl_s: float = Field(10.0, ge=0)
    """Hot Redis entries are also kept in process this long (0 = off); answers never change per key."""
    near_cache_entries: int = Field(10_000, ge=0)
    lock_ttl_ms: int = Field(30_000, ge=100)
    """How long a replica may hold the lock on an identical in-flight escalation."""

    @property
    def configured(self) -> bool:
        return self.url is not None or self.sentinel_master is not None

    def for_cache(self) -> RedisSettings:
        """Settings of the cache's own connection (`cache_url`), or these when it shares `url`."""
        if self.cache_url is None:
            return self
        return self.model_copy(update={"url": self.cache_url, "cache_url": None, "sentinels": (),
                                       "sentinel_master": None, "sentinel_password": None})


class FoundationSettings(BaseModel):
    """The foundation model configured by environment; policy aliases without `model` use it."""

    model_config = ConfigDict(frozen=True)

    model: str | None = None
    """A litellm model string, e.g. `openai/gpt-4o-mini`; None = no foundation model."""
    api_base: str | None = None
    api_key: SecretStr | None = None
    price_as: str | None = None
    """Name in litellm's price table to price calls with (for self-hosted / renamed models)."""


class AuthSettings(BaseModel):
    """API keys for /v1/* (see router/keys.py and router/auth.py)."""

    model_config = ConfigDict(frozen=True)

    secret: SecretStr | None = None
    """Server secret keying the stored digests of API keys; set = every /v1/* request needs a key.
    The same value on every replica and for `hybrid-router keys`; at least 32 characters."""
    disabled: bool = False
    """Serve /v1/* without keys even on a non-loopback address (something in front authenticates)."""
    keys_file: Path = Path(".hybrid-router/keys.json")
    """Key store without Redis (created with mode 0600); with Redis the keys live in `gw:v1:keys`."""
    refresh_s: float = Field(2.0, gt=0, le=60)
    """How often each process re-reads the key store: a new or revoked key takes effect within it."""
    metric_keys: int = Field(100, ge=0, le=10_000)
    """Key names exported as metric labels; further names are counted as `other`."""

    @field_validator("secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("ROUTER_AUTH__SECRET must be at least 32 characters "
                             "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return v

    @property
    def enabled(self) -> bool:
        return self.secret is not None and not self.disabled


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ROUTER_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    policy_path: Path = _ROOT / "policies" / "default.yaml"
    specialists_dir: Path = _ROOT / "specialists" / "bundled"
    redis: RedisSettings = RedisSettings()
    foundation: FoundationSettings = FoundationSettings()
    cpu_usd_per_core_hour: float = Field(0.05, ge=0)
    """Price of one CPU core-hour, used to cost specialist inference from measured CPU time."""
    cascade_threads: int = Field(2, ge=1, le=64)
    """Threads running cascade tiers 2.. (transformer specialists) off the event loop, per worker."""
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_batch: int = Field(256, ge=1)
    cache_per_tenant: bool = True
    """Namespace cached answers by tenant, so tenants never share answers: the API key's tenant with
    keys on, else a hash of the caller's Authorization header."""
    admin_token: SecretStr | None = None
    """Bearer token for /admin/*; unset = admin endpoints disabled."""
    metrics_token: SecretStr | None = None
    """Bearer token for /metrics; unset = /metrics is open to whoever reaches the port."""
    auth: AuthSettings = AuthSettings()
    policy_poll_s: float = Field(1.0, gt=0)
    """How often the policy file is checked for changes (hot reload)."""
    policy_max_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Size limit of a policy file or of a policy announced through Redis."""
    policy_signing_key: SecretStr | None = None
    """Shared by the replicas: announced policies carry an HMAC-SHA256 with it and are applied only
    when it verifies. Unset = an announcement only makes each replica reload its own policy file."""

    @field_validator("policy_signing_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("ROUTER_POLICY_SIGNING_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value
    log_level: str = "INFO"
    log_format: Literal["json", "text"] | None = None
    """`json`: one JSON object per line; `text`: readable lines; unset: JSON unless stderr is a terminal."""
    access_log_sample: float = Field(1.0, ge=0, le=1)
    """Share of successful requests that get an access log line (errors always do)."""
    workers: int = Field(1, ge=1, le=64)
    """Worker processes (uvicorn). With more than one, metrics use prometheus multiprocess mode."""
    metrics_dir: Path | None = None
    """Directory for multiprocess metric files (PROMETHEUS_MULTIPROC_DIR); set by `serve --workers`."""
    max_connections: int = Field(4096, ge=1)
    """Open connections (and requests in flight) per worker; past it requests get 503 (keep it
    below the process's file descriptor limit, `ulimit -n`)."""
    keep_alive_s: int = Field(5, ge=1)
    """Idle keep-alive connections are closed after this long."""
    max_header_bytes: int = Field(32 * 1024, ge=1024)
    """Request line and headers larger than this get 431 and the connection is closed."""
    header_timeout_s: float = Field(10.0, gt=0)
    """A request's headers must arrive within this long (from its first byte / the connection)."""
    body_timeout_s: float = Field(30.0, gt=0)
    """A request's body must arrive within this long after its headers, else the connection is cut."""
    drain_max_bytes: int = Field(8 * 1024 * 1024, ge=0)
    """Before a 413, up to this much of an oversized body is read and discarded, so the client (still
    sending) reads the 413; a larger body gets the 413 with `connection: close`."""
    shutdown_grace_s: int = Field(30, ge=0)
    """On SIGTERM, requests and streams in flight get this long to finish before the worker exits."""


def multiprocess_metrics_dir() -> Path | None:
    """The directory prometheus_client was told to use for multiprocess metrics, if any."""
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def read_secret_env(name: str) -> str | None:
    """Value of the environment variable a policy names for an API key (`api_key_env`)."""
    if not name.startswith(PROVIDER_KEY_PREFIX):
        return None
    return os.environ.get(name) or None

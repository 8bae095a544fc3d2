"""Settings from `CHRONOS_*` environment variables: the one place every process reads configuration."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.logs import LogFormat


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHRONOS_", extra="ignore")

    data_dir: Path = Path(".chronos")
    database_url: str | None = Field(
        default=None, description="sqlite:///… or postgresql+psycopg://…; default: SQLite in data_dir"
    )
    db_pool_size: int = 10
    db_timeout_seconds: float = Field(
        default=10,
        gt=0,
        le=3600,
        description="PostgreSQL: the longest wait for a new connection, a pooled one, or one statement or "
        "commit; then the API answers 503",
    )
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str = "http://localhost:8233"
    temporal_ui_upstream: str | None = Field(
        default=None,
        description="the Temporal UI server (started with `--ui-public-path /temporal`) that the API serves "
        "under /temporal to signed-in dashboard users; default none: no /temporal route",
    )
    task_queue: str = "chronos"
    jwt_secret: str | None = None
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="Payload encryption keys as comma-separated `id:base64key` entries (32-byte keys), "
        "newest first: the newest encrypts, all decrypt; default: one generated into data_dir",
    )
    jwt_issuer: str = "chronos"
    jwt_audience: str = "chronos-api"
    password_hash_time_cost: int = Field(default=3, ge=1, le=20, description="argon2id passes")
    password_hash_memory_kib: int = Field(
        default=65536, ge=64, le=4 * 1024 * 1024, description="argon2id memory per hash, in KiB"
    )
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    smtp_url: str | None = None
    smtp_from: str = "chronos@localhost"
    allow_private_targets: bool = False
    max_body_bytes: int = 1_000_000
    auth_attempts_per_minute: int = 30
    client_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="how long a request may take to arrive, headers and body: then 408",
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="open connections per API process (fewer if its file limit is lower); over it, idle ones "
        "close first",
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For is believed; "
        "default none: the peer address is the client's",
    )
    workflow_task_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated task queues a workflow action may start its child on; default none: "
        "the workflow action is off",
    )
    max_jobs_per_user: int = Field(default=1000, ge=0, description="live jobs (not deleted or cancelled)")
    job_writes_per_minute: int = Field(
        default=60, ge=0, description="job creates, updates, deletes, pauses, resumes and cancels per user"
    )
    runs_per_minute: int = Field(
        default=60, ge=0, description="runs a user starts through the API (immediate, trigger, replay)"
    )
    catchup_window_seconds: int = Field(
        default=300, description="how late Temporal still starts a fire of a job without a `misfire` rule"
    )
    max_backfill_fires: int = Field(
        default=1000, ge=1, description="the most fires one backfill, or one resume's catch-up, may run"
    )
    missed_grace_seconds: int = Field(
        default=60,
        ge=1,
        description="a fire that has not started this long after its time is missed: recorded as a run of "
        "status `missed`, made up by the job's misfire rule, notified with `notify.on_missed`",
    )
    min_fire_spacing_seconds: int = Field(
        default=1, ge=1, description="the shortest spacing a schedule may give its job's fires"
    )
    reconcile_every_seconds: int = Field(default=60, ge=1, description="how often drift is reconciled")
    log_format: LogFormat = Field(default="text", description="`text` or `json` (log collectors)")
    worker_metrics_port: int | None = Field(
        default=None, description="where a worker serves the Temporal SDK's Prometheus metrics"
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]
        return value

    @field_validator("workflow_task_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def sqlalchemy_url(self) -> str:
        """The async driver URL: aiosqlite for SQLite, psycopg 3 (async) for PostgreSQL."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'chronos.db').resolve()}"
        if url.startswith("sqlite:"):
            return url.replace("sqlite:", "sqlite+aiosqlite:", 1)
        if url.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url


@lru_cache
def get_settings() -> Settings:
    return Settings()

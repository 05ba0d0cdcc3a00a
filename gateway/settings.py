"""One frozen, typed settings object: defaults -> YAML file -> ``NOMETER_*`` env -> CLI flags.

Secrets are never inline: a backend names the env var that holds its key (``api_key_env``).
Each component receives only its own sub-config (``settings.ledger`` for the recorder, ...).

Env overrides: ``NOMETER_CONFIG`` (YAML path), shortcuts ``NOMETER_HOST``, ``NOMETER_PORT``,
``NOMETER_DB`` (the ledger, as ``--db``: a SQLite file or a ``postgresql://`` URL; default
``$XDG_DATA_HOME/nometer/ledger.db``), ``NOMETER_BACKENDS`` (comma-separated URLs), and any nested
key as ``NOMETER_<SECTION>__<KEY>`` (value parsed as YAML), e.g. ``NOMETER_LEDGER__FLUSH_INTERVAL_MS=50``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from pricing.allin import parse_window

DEFAULT_PORT = 7878  # vLLM uses 8000 and the LiteLLM proxy 4000
DEFAULT_CACHE = Path(os.environ.get("NOMETER_CACHE", Path.home() / ".cache" / "nometer"))


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where nometer keeps its data by default: ``$XDG_DATA_HOME/nometer``, else
    ``~/.local/share/nometer`` (the XDG base directory rule: a relative XDG_DATA_HOME is ignored).
    One per-user place, so the CLI finds the gateway's ledger from any directory."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "nometer"


def ledger_override(db: str) -> dict[str, str]:
    """The ``ledger`` settings that ``--db`` / ``$NOMETER_DB`` name: a PostgreSQL URL or a SQLite file."""
    return {"url": db} if db.startswith(("postgresql://", "postgres://")) else {"path": db}


def default_ledger_path() -> str:
    """The SQLite ledger when neither ``ledger.path``, ``$NOMETER_DB`` nor ``--db`` names one."""
    return str(data_dir() / "ledger.db")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = 64 * 1024 * 1024
    log_level: str = "info"
    # json: one JSON object per line; text: readable lines; auto: text on a terminal, else json
    log_format: Literal["auto", "json", "text"] = "auto"
    access_log: bool = False  # one JSON line per request, written by the recorder (off the hot path)
    # -- what one connection may cost before it is refused (gateway.http.protocol) --
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)  # request line + headers; more: 431
    max_headers: int = Field(default=100, ge=8)  # header lines per request; more: 431
    header_timeout_s: float = Field(default=10.0, gt=0)  # a request's head must arrive within this
    body_timeout_s: float = Field(default=30.0, gt=0)  # longest silence while a body is being sent
    keepalive_timeout_s: float = Field(default=5.0, gt=0)  # idle keep-alive connections close after this
    # client connections at once; None: half of what the open-files limit leaves after a reserve
    # (each client connection may need one upstream connection). At the cap, the longest-idle
    # connection is closed to admit a new one; with none idle the newcomer gets 503.
    max_connections: int | None = Field(default=None, ge=1)
    # -- browsers (gateway.http.guard) --
    # In open mode only these Host names are served (the loopback names always are; "*" lifts
    # the check): a web page that rebinds its DNS name to 127.0.0.1 is refused.
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()  # origins answered with CORS headers; none by default


class UpstreamTimeouts(_Frozen):
    connect_s: float = 5.0
    read_s: float = 600.0  # longest silence allowed: first byte, and between stream chunks
    health_s: float = 2.0


class BackendSettings(_Frozen):
    url: str  # base URL of an OpenAI-compatible server, usually ending in /v1
    name: str | None = None
    api_key_env: str | None = None  # env var holding the upstream key; never the key itself
    models: tuple[str, ...] | None = None  # static list; None = discover from GET /v1/models

    @field_validator("url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.rstrip("/")


class ManagedSettings(_Frozen):
    """A `vllm serve` process launched and supervised by the gateway."""

    model: str  # HF id or local directory
    port: int
    served_name: str | None = None
    python: str | None = None  # interpreter of the vLLM venv; default: $NOMETER_CACHE/vllm-venv
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    start_timeout_s: float = 300.0
    max_backoff_s: float = 60.0


RoutingPolicy = Literal["least_loaded", "least_queue", "prefix", "round_robin"]


class PrefixSettings(_Frozen):
    """The ``prefix`` policy's thresholds (docs/config.md, "Routing")."""

    # bounded load: a backend takes a prefix's request while its in-flight requests (with this
    # one) stay within load_factor x the mean over the model's backends
    load_factor: float = Field(default=2.0, ge=1.0)
    # a backend whose vLLM queue (vllm:num_requests_waiting) is longer than queue_ratio x the
    # shortest queue + queue_gap is passed over
    queue_ratio: float = Field(default=8.0, ge=1.0)
    queue_gap: float = Field(default=128.0, ge=0)
    depth: int = Field(default=4, ge=0, le=64)  # messages after the system part the key covers
    max_entries: int = Field(default=100_000, ge=1)  # prefix keys remembered (LRU)


class EjectionSettings(_Frozen):
    """Passive outlier ejection: consecutive 5xx / timeouts / connect failures take a backend
    out for base_s, doubled per ejection, at most max_s."""

    consecutive_failures: int = Field(default=5, ge=1)
    base_s: float = Field(default=5.0, gt=0)
    max_s: float = Field(default=120.0, gt=0)


class RoutingSettings(_Frozen):
    # which backend takes a request: the default policy and per served model (docs/config.md)
    policy: RoutingPolicy = "least_loaded"
    policies: dict[str, RoutingPolicy] = Field(default_factory=dict)
    prefix: PrefixSettings = PrefixSettings()
    ejection: EjectionSettings = EjectionSettings()
    # retries (to another backend after a connect failure) at most this share of requests
    retry_budget: float = Field(default=0.2, ge=0, le=1)
    # how often each backend's /metrics is read (off the hot path); 0 = never
    metrics_interval_s: float = Field(default=0.5, ge=0)
    health_interval_s: float = 5.0
    models_refresh_s: float = 30.0
    # What the response's "model" field says when the client used an alias:
    # "served" (default) = the local model that really answered, as vLLM reports it;
    # "requested" = the name the client sent (e.g. gpt-4.1), for clients that check it.
    response_model: Literal["served", "requested"] = "served"
    retry_other_backend: bool = True
    max_connections_per_backend: int = Field(default=1024, ge=1)  # upstream pool; more requests wait


class LedgerSettings(_Frozen):
    # SQLite file (the embedded default); its directory also holds prices/ and the managed logs/
    path: str = Field(default_factory=default_ledger_path)
    url: str | None = None  # postgresql://... when several replicas share one ledger
    queue_max: int = 10_000  # requests waiting to be metered in memory; past it they go to the spool
    flush_interval_ms: int = 100
    batch_max: int = 500
    # what the store cannot take now (down, locked, slow) or the queue has no room for is kept on
    # disk here and replayed in order (gateway/ledger/spool.py); default: <ledger dir>/spool
    spool_dir: str | None = None
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 16)  # this process's spool files together
    write_timeout_s: float = Field(default=10.0, gt=0)  # a write slower than this is spooled instead
    # meter in a separate process (default): the tokenizing and pricing never compete with the
    # event loop for the GIL; false: a thread of the gateway process (less memory, more latency)
    meter_process: bool = True
    # ed25519 key that signs `nometer statement`s, created on first start (mode 0600) with its
    # public half beside it (<name>.pub, PEM); default: nometer-signing.key beside the ledger file
    signing_key: str | None = None


class BoxSettings(_Frozen):
    """What the local box costs (see pricing/local.py for the defaults' sources).

    Watts are wall draw: ``busy_watts`` while serving, ``idle_watts`` while waiting (idle draw is
    reported per period, not charged to requests). Defaults describe a DGX Spark (GB10, 140 W SoC
    TDP; about 35 W idle and 170 W busy at the wall): measure yours and override them.
    """

    idle_watts: Decimal = Decimal(35)
    busy_watts: Decimal = Decimal(170)
    usd_per_kwh: Decimal = Decimal("0.17")
    hardware_usd: Decimal = Decimal(3999)
    lifetime_years: Decimal = Decimal(3)
    nvml: bool = True  # measure GPU energy with NVML when available (nvidia-ml-py)
    # when the box is on, for its all-in cost (pricing/allin.py): hours a day, or UTC windows
    # ("mon-fri 08:00-20:00"; a schedule, when given, replaces hours_on). Off time draws no idle power.
    hours_on: Decimal = Decimal(24)
    schedule: tuple[str, ...] = ()

    @field_validator("hours_on")
    @classmethod
    def _hours(cls, v: Decimal) -> Decimal:
        if not 0 <= v <= 24:
            raise ValueError("hours_on must be between 0 and 24")
        return v

    @field_validator("schedule")
    @classmethod
    def _windows(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for window in v:
            parse_window(window)  # a bad window fails at load, not in a report
        return v


class MeterSettings(_Frozen):
    """The shadow meter: which cloud models each local request is priced against, and how."""

    references: tuple[str, ...] = ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro")
    embedding_references: tuple[str, ...] = ("text-embedding-3-small",)
    model_references: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # served model or alias
    # conservative: the cloud would have cached every prefix vLLM found cached (cheaper cloud,
    # smaller savings); none: the cloud bills every input token at the full rate.
    cache_mode: Literal["conservative", "none"] = "conservative"
    price_dir: str | None = None  # installed price tables; default: <ledger dir>/prices
    price_overrides: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    box: BoxSettings = BoxSettings()
    backend_box: dict[str, BoxSettings] = Field(default_factory=dict)  # per backend name
    # a reasoning reference (o1/o3/o4, gpt-5) bills hidden reasoning tokens the local answer does
    # not show: not_modelled (default) adds none and says so on the receipt; local estimates them
    # as the local model's own reasoning tokens (its reasoning text, else vLLM's reasoning_tokens)
    hidden_reasoning: Literal["not_modelled", "local"] = "not_modelled"
    # per-message token counts kept by content hash (LRU), so an agent's resent history is not
    # re-tokenized every step (pricing/count_cache.py); 0: off
    count_cache_entries: int = Field(default=65_536, ge=0)
    # answers carry their own cost in usage.nometer (gateway/http/cost.py); per request
    # X-Nometer-Cost: include | omit. Off by default: it prices the request on the request path.
    response_cost: bool = False


# -- teams, keys and policy (see docs/policy.md) -----------------------------------------------

FallbackCause = Literal["unavailable", "overloaded", "model_missing", "context_too_long"]
FALLBACK_CAUSES: tuple[FallbackCause, ...] = (
    "unavailable",
    "overloaded",
    "model_missing",
    "context_too_long",
)


class AuthSettings(_Frozen):
    """Who may call. Keys are stored hashed in the ledger database (``nometer keys``)."""

    mode: Literal["open", "keys"] | None = None  # None: open while bound to loopback, keys otherwise
    allow_open_non_loopback: bool = False  # the explicit force to serve `open` on a public address
    admin_key_env: str | None = "NOMETER_ADMIN_KEY"  # env var holding the admin key; unset: no admin API
    refresh_s: float = Field(
        default=1.0, gt=0
    )  # how often keys changed elsewhere (CLI, replicas) are re-read
    # After this long without a successful re-read (ledger database down), keys are refused (keys
    # mode: 503 keys_unavailable; open mode: ignored, the caller is anonymous) rather than honour
    # one that may have been revoked meanwhile. None: keep serving the last keys read.
    keys_max_stale_s: float | None = Field(default=60.0, gt=0)


class RateLimit(_Frozen):
    rpm: int | None = Field(default=None, ge=1)  # requests per minute
    tpm: int | None = Field(default=None, ge=1)  # tokens (prompt + completion) per minute


FailMode = Literal["open", "closed"]


class TeamLimits(_Frozen):
    key: RateLimit = RateLimit()  # each key of the team
    team: RateLimit = RateLimit()  # all keys of the team together
    # Counters unreachable (Redis down or slow): "open" serves the request unlimited (logged and
    # counted in nometer_policy_store_errors_total); "closed" refuses it, 503 rate_limits_unavailable.
    fail: FailMode = "open"


class BudgetSettings(_Frozen):
    """Hosted (fallback) spend per team, UTC periods. Local requests never count."""

    usd_per_day: Decimal | None = Field(default=None, ge=0)
    usd_per_month: Decimal | None = Field(default=None, ge=0)
    # Reservation for a request without max_tokens; the hosted call is then capped at it.
    assume_max_tokens: int = Field(default=4096, ge=1)
    # Counters unreachable: "closed" (default) refuses hosted requests, 503 budget_unavailable;
    # "open" sends them unbudgeted (logged and counted).
    fail: FailMode = "closed"


class Caps(_Frozen):
    """What one request may ask for, checked before it is forwarded (locally and hosted)."""

    max_n: int | None = Field(default=16, ge=1)  # `n` and `best_of` (choices generated per request)
    max_tokens: int | None = Field(
        default=None, ge=1
    )  # max_tokens / max_completion_tokens / max_output_tokens
    max_body_bytes: int | None = Field(default=None, ge=1)  # below server.max_body_bytes, for this team


class FallbackSettings(_Frozen):
    models: tuple[str, ...] = ()  # ordered hosted models, litellm names (openai/..., anthropic/...)
    # what allows it (not named `on`: YAML 1.1 reads an unquoted `on` key as true)
    triggers: tuple[FallbackCause, ...] = ("unavailable", "overloaded", "context_too_long")


class TeamPolicy(_Frozen):
    models: tuple[str, ...] | None = None  # allowed model names and aliases (fnmatch patterns); None: all
    local_only: bool = False  # nothing leaves the box: fallback is refused even when configured
    limits: TeamLimits = TeamLimits()
    budget: BudgetSettings = BudgetSettings()
    fallback: FallbackSettings = FallbackSettings()
    caps: Caps = Caps()


class HostedModelSettings(_Frozen):
    """How to reach one hosted model; credentials by env var name, never inline."""

    api_base: str | None = None
    api_key_env: str | None = None  # unset: litellm reads the provider's usual variable
    api_version: str | None = None  # azure
    price_as: str | None = None  # price-table name when the litellm name is a deployment name
    timeout_s: float = 600.0
    params: dict[str, Any] = Field(default_factory=dict)  # extra litellm arguments (aws_region_name, ...)


class OverloadSettings(_Frozen):
    """When a local backend counts as overloaded, from vLLM's ``/metrics`` (polled with health)."""

    max_waiting: int | None = Field(default=None, ge=0)  # vllm:num_requests_waiting above this
    max_kv_cache_usage: float | None = Field(default=None, ge=0, le=1)  # vllm:kv_cache_usage_perc
    # a backend whose vLLM queue is longer than the shortest healthy one's by more than this
    # counts as overloaded (for a request that must go there: response-id affinity)
    max_queue_gap: int | None = Field(default=None, ge=0)

    @property
    def enabled(self) -> bool:
        return (
            self.max_waiting is not None
            or self.max_kv_cache_usage is not None
            or self.max_queue_gap is not None
        )


class HostedSettings(_Frozen):
    models: dict[str, HostedModelSettings] = Field(default_factory=dict)
    overload: OverloadSettings = OverloadSettings()


class LimitsSettings(_Frozen):
    redis_url: str | None = None  # share rate limits and budgets between replicas (redis.asyncio)
    redis_prefix: str = "nometer"
    redis_timeout_s: float = Field(default=0.25, gt=0)  # bound on every Redis call, connecting included
    redis_retry_s: float = Field(default=1.0, ge=0)  # after a failure, skip Redis this long (fail fast)


class Settings(_Frozen):
    server: ServerSettings = ServerSettings()
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    backends: tuple[BackendSettings, ...] = ()
    managed: tuple[ManagedSettings, ...] = ()
    aliases: dict[str, str] = Field(default_factory=dict)
    routing: RoutingSettings = RoutingSettings()
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)  # its default path reads the env
    meter: MeterSettings = MeterSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    hosted: HostedSettings = HostedSettings()
    policy: TeamPolicy = TeamPolicy()  # anonymous callers (open mode) and teams not listed below
    teams: dict[str, TeamPolicy] = Field(default_factory=dict)
    # How these settings were loaded, so a reload can read the same layers again (not a field).
    _origin: tuple[str | None, Mapping[str, str] | None, Mapping[str, Any] | None] | None = PrivateAttr(None)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    shortcuts = {
        "NOMETER_HOST": ("server", "host"),
        "NOMETER_PORT": ("server", "port"),
    }
    for var, (section, key) in shortcuts.items():
        if var in env:
            layer.setdefault(section, {})[key] = env[var]
    if env.get("NOMETER_DB"):
        layer["ledger"] = ledger_override(env["NOMETER_DB"])
    if env.get("NOMETER_BACKENDS"):
        layer["backends"] = [{"url": u.strip()} for u in env["NOMETER_BACKENDS"].split(",") if u.strip()]
    for var, raw in env.items():
        if not var.startswith("NOMETER_") or "__" not in var:
            continue
        path = [p.lower() for p in var[len("NOMETER_") :].split("__")]
        node = layer
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = yaml.safe_load(raw)
    return layer


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from every layer; later layers win. Raises ValueError on bad config."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = config or env.get("NOMETER_CONFIG")
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        data = _deep_merge(data, loaded)
    data = _deep_merge(data, _env_layer(env))
    if overrides:
        data = _deep_merge(data, overrides)
    settings = Settings.model_validate(data)
    settings._origin = (
        str(path) if path else None,
        None if env is os.environ else dict(env),
        dict(overrides) if overrides else None,
    )
    return settings


def reload_settings(settings: Settings) -> Settings:
    """Read the same layers again (the YAML file may have changed); ValueError/OSError on bad config."""
    if settings._origin is None:
        return settings
    path, env, overrides = settings._origin
    return load_settings(path, env=env, overrides=overrides)

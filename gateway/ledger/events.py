"""The usage event: one per request that reached routing, whatever its end.

The proxy fills a ``RequestRecord`` cheaply on the hot path (references, counters, timestamps) and
hands it to the recorder without awaiting anything. Parsing usage out of the response, estimating
missing counts and pricing happen later, in the recorder (see ``gateway.meter.usage``), off the event loop.
Prompt and completion text are never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.ids import new_id

# Outcomes, as stored in the ledger.
OK = "ok"
UPSTREAM_ERROR = "upstream_error"  # upstream answered 4xx/5xx, or broke mid-stream
CLIENT_GONE = "client_gone"  # the client disconnected before the end
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"  # no backend could be reached
REFUSED = "refused"  # the gateway refused after routing (policy, limits)
GATEWAY_ERROR = "gateway_error"  # the gateway itself failed (a bug, caught by http.boundary)


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    endpoint: str
    requested_model: str
    started: float  # unix time
    t0: float  # perf_counter at start
    stream: bool = False
    served_model: str | None = None
    backend: str | None = None
    route: str = "local"  # local | hosted
    provider: str | None = None
    fallback_cause: str | None = None
    key_id: str | None = None
    team: str | None = None
    tag: str | None = None
    run: str | None = None  # X-Nometer-Run: the agent run this request belongs to
    session: str | None = None  # X-Nometer-Session: a conversation within the run
    status: int = 0
    outcome: str = OK
    error: str | None = None
    ttft_s: float | None = None
    latency_s: float | None = None
    client_wants_usage: bool = False
    forced_usage: int = 0  # >0: the gateway asked for stream usage itself (the stream's choice count)
    busy_s: float | None = None  # this request's share of its backend's busy time
    joules: float | None = None  # its share of measured energy (None: not measured)
    hosted_cost_usd: str | None = None  # route=hosted: provider usage priced with the table (decimal string)
    cloud_tier: str = "standard"  # X-Nometer-Cloud-Tier: standard | batch | flex
    # The server's own id of this event (ledger `uid`), unique unlike the client-chosen request id:
    # sent back as `x-nometer-receipt-id`, and the key of `GET /v1/nometer/receipts/{id}`.
    uid: str = field(default_factory=new_id)
    # Raw material for the recorder: the parsed request and the response bytes (non-stream body,
    # or the list of stream chunks). Kept by reference only; never written to the ledger.
    request: dict[str, Any] | None = None
    response: bytes | None = None
    chunks: list[bytes] = field(default_factory=list)
    # Priced on the request path (``usage.nometer``, gateway/http/cost.py): the meter then builds the
    # row from the same inputs, busy share frozen at that moment and the same cached-prefix estimate.
    priced_inline: bool = False
    inline_prefix: list[Any] | None = None


# Ledger columns, in order (schema v1). Shared by the SQLite and PostgreSQL stores. The hash chain
# (``gateway.ledger.chain``) covers every one of them in this order: a new column is APPENDED here
# and must be nullable without a default, so rows sealed before it existed still verify.
EVENT_COLUMNS: tuple[str, ...] = (
    "request_id",
    "ts",
    "day",
    "endpoint",
    "requested_model",
    "served_model",
    "backend",
    "route",
    "provider",
    "fallback_cause",
    "outcome",
    "status",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "usage_source",
    "latency_ms",
    "ttft_ms",
    "key_id",
    "team",
    "tag",
    "error",
    # schema v2: the shadow meter
    "uid",
    "price_table_id",
    "cache_mode",
    "busy_s",
    "joules",
    "box",
    "local_energy_pusd",
    "local_hardware_pusd",
    "hosted_cost_pusd",
    # agent runs (X-Nometer-Run / X-Nometer-Session)
    "run_id",
    "session_id",
    # schema v8: the cloud service tier compared with (X-Nometer-Cloud-Tier; NULL in older rows = standard)
    "cloud_tier",
)
SHADOW_COLUMNS: tuple[str, ...] = (
    "event_uid",
    "ref_index",
    "ref_model",
    "price_key",
    "tokenizer",
    "estimated",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cloud_pusd",
    "savings_pusd",
    # schema v8: for a reasoning reference, whether its hidden reasoning was modelled
    "hidden_reasoning",
)

# The hash chain's own columns, on both tables, after the content columns above: the writer
# (one chain per gateway process), the row's place in it, when it was sealed, the previous row's
# digest and this row's (``gateway.ledger.chain``).
CHAIN_COLUMNS: tuple[str, ...] = ("chain_id", "chain_seq", "sealed_at", "chain_prev", "chain_digest")


def warm_up_record(now: float) -> RequestRecord:
    """A made-up request to meter once at start (rows dropped), so the tokenizers and the price
    table load then, not with the first real batch (``Recorder.warm``, the meter process's init)."""
    return RequestRecord(
        "warm-up",
        "/v1/chat/completions",
        "warm-up",
        now,
        0.0,
        status=200,
        request={"model": "warm-up", "messages": [{"role": "user", "content": "warm up"}]},
        response=b'{"choices":[{"message":{"role":"assistant","content":"ok"}}],'
        b'"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}',
    )

"""Cloud price tables: litellm's `model_prices_and_context_window` JSON as exact per-token Decimals.

Everything downstream sees `ModelPrice`, never raw JSON. Entries are parsed on first read (see
`ParsedOnDemand`), which keeps loading the ~5,000-entry snapshot well under 100 ms.

Identity. A table's id is `YYYY-MM-DD-<12 hex>`: the date the table was installed (or the file's
mtime when loaded directly) and the first 12 hex digits of the SHA-256 of the file's exact bytes.
Hashing bytes rather than a re-serialization means anyone can check an id with `sha256sum`, and no
change to this parser can silently change the id of a table a receipt already points to. Tables
derived by `pricing.overrides.apply_overrides` hash their base digest plus the overrides instead.

Absent is not zero. Every rate is `Decimal | None`: a field missing from the JSON is `None` (the
cost code then falls back or refuses to price); an explicit `0` is a real, free price. Malformed
or negative values in third-party data are treated as absent, so one bad entry cannot break the
table nor produce a wrong number; overrides, which an operator writes, are parsed strictly.

Long-context tiers. litellm spells them `<field>_above_<T>_tokens` with `T` like `200k`, `128k`
or `1m`. Keys with an extra qualifier (`cache_creation_input_token_cost_above_1hr`) or the
`_priority` suffix are not read.

Cloud service tiers. Batch and flex prices are the same fields with a `_batches` or `_flex`
suffix (`input_cost_per_token_batches`, `output_cost_per_token_above_200k_tokens_flex`); they are
parsed into `ModelPrice.services["batch" | "flex"]`, a `ModelPrice` of their own (see
`ModelPrice.for_service`). The standard tier is the model's base prices.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache, cached_property, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import orjson

from pricing.money import as_decimal

RateKind = Literal["input", "output", "cache_read", "cache_write", "reasoning"]
CloudTier = Literal["standard", "batch", "flex"]
CLOUD_TIERS: Final[tuple[CloudTier, ...]] = ("standard", "batch", "flex")
_SERVICE_SUFFIX: Final[Mapping[str, CloudTier]] = {"_batches": "batch", "_flex": "flex"}
SERVICE_SUFFIX: Final[Mapping[str, str]] = {tier: suffix for suffix, tier in _SERVICE_SUFFIX.items()}
"""Cloud service tier -> the suffix of its litellm price fields."""

RATE_KEYS: Final[Mapping[RateKind, str]] = MappingProxyType(
    {
        "input": "input_cost_per_token",
        "output": "output_cost_per_token",
        "cache_read": "cache_read_input_token_cost",
        "cache_write": "cache_creation_input_token_cost",
        "reasoning": "output_cost_per_reasoning_token",
    }
)
"""Rate kind -> litellm field name of its base (below every tier) per-token price."""

_KIND_BY_KEY: Final[Mapping[str, RateKind]] = {key: kind for kind, key in RATE_KEYS.items()}
_TIER_KEY: Final = re.compile(r"(?P<field>[a-z_]+?)_above_(?P<count>\d+)(?P<unit>[kKmM]?)_tokens")
_UNIT: Final[Mapping[str, int]] = {"": 1, "k": 1_000, "m": 1_000_000}
_ID: Final = re.compile(r"\d{4}-\d{2}-\d{2}-[0-9a-f]{12}")

SHIPPED_SNAPSHOT: Final = Path(__file__).with_name("model_prices_snapshot.json")
SAMPLE_SPEC: Final = "sample_spec"


class PriceTableError(ValueError):
    """A price table (or an override, or a stored snapshot) is malformed or does not match its id."""


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Rates that replace the base rates once the prompt is longer than `threshold` tokens."""

    threshold: int
    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None

    def rate(self, kind: RateKind) -> Decimal | None:
        return _rate(self, kind)

    def key(self, kind: RateKind) -> str:
        """The litellm field this tier's `kind` rate is read from."""
        return f"{RATE_KEYS[kind]}_above_{threshold_label(self.threshold)}_tokens"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's per-token prices in USD. `None` = not published; `Decimal(0)` = free."""

    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    tiers: tuple[PriceTier, ...] = ()
    """Sorted by ascending threshold, at most one per threshold."""
    provider: str | None = None
    mode: str | None = None
    services: Mapping[str, ModelPrice] = field(default_factory=lambda: MappingProxyType({}))
    """Batch and flex prices (`"batch"`, `"flex"`), where the table has them."""

    def rate(self, kind: RateKind) -> Decimal | None:
        return _rate(self, kind)

    def for_service(self, tier: CloudTier) -> ModelPrice | None:
        """The prices of a cloud service tier: `self` for standard; for batch and flex, their own
        input and output rates (`None` when the table lacks either: the caller labels it). A
        rate the service tier does not list (a batch cache-read rate, say) keeps the standard
        rate of that kind, as litellm does."""
        if tier == "standard":
            return self
        service = self.services.get(tier)
        if service is None or service.input is None or service.output is None:
            return None

        def kept(kind: RateKind) -> Decimal | None:
            rate = service.rate(kind)
            return self.rate(kind) if rate is None else rate

        # long-context tiers: the service tier's own only (the standard tier's would replace the
        # discounted rates with undiscounted ones; without any, the discount applies throughout)
        return ModelPrice(
            input=kept("input"),
            output=kept("output"),
            cache_read=kept("cache_read"),
            cache_write=kept("cache_write"),
            reasoning=kept("reasoning"),
            tiers=service.tiers,
            provider=self.provider,
            mode=self.mode,
        )

    def tier_for(self, prompt_tokens: int) -> PriceTier | None:
        """The highest tier whose threshold the prompt exceeds (strictly), if any."""
        chosen = None
        for tier in self.tiers:
            if prompt_tokens > tier.threshold:
                chosen = tier
        return chosen

    def fields(self) -> dict[str, Decimal]:
        """The price fields in litellm spelling: the inverse of parsing, used by overrides."""
        out = {RATE_KEYS[kind]: rate for kind in RATE_KEYS if (rate := self.rate(kind)) is not None}
        for tier in self.tiers:
            out.update({tier.key(kind): rate for kind in RATE_KEYS if (rate := tier.rate(kind)) is not None})
        for suffix, name in _SERVICE_SUFFIX.items():
            if (service := self.services.get(name)) is not None:
                out.update({f"{key}{suffix}": rate for key, rate in service.fields().items()})
        return out


def _rate(rates: ModelPrice | PriceTier, kind: RateKind) -> Decimal | None:
    match kind:
        case "input":
            return rates.input
        case "output":
            return rates.output
        case "cache_read":
            return rates.cache_read
        case "cache_write":
            return rates.cache_write
        case "reasoning":
            return rates.reasoning


def threshold_label(tokens: int) -> str:
    """`200000` -> `"200k"`, `1000000` -> `"1m"`: litellm's spelling of a tier threshold."""
    if tokens % 1_000_000 == 0:
        return f"{tokens // 1_000_000}m"
    if tokens % 1_000 == 0:
        return f"{tokens // 1_000}k"
    return str(tokens)


def parse_model_price(entry: Mapping[str, object], *, strict: bool = False) -> ModelPrice:
    """Build a `ModelPrice` from one litellm entry.

    With `strict=False` (third-party tables) unreadable values count as absent and unknown keys are
    ignored. With `strict=True` (operator overrides) both raise `PriceTableError`.
    """
    base: dict[RateKind, Decimal] = {}
    tiers: dict[int, dict[RateKind, Decimal]] = {}
    services: dict[CloudTier, dict[str, object]] = {}
    for key, value in entry.items():
        service = _service_of(key)
        if service is not None:
            services.setdefault(service[0], {})[service[1]] = value
            continue
        known = _classify(key)
        if known is None:
            if strict:
                raise PriceTableError(f"unknown price field {key!r}")
            continue
        kind, threshold = known
        if (rate := _price(key, value, strict)) is None:
            continue
        if threshold == 0:
            base[kind] = rate
        else:
            tiers.setdefault(threshold, {})[kind] = rate
    provider = entry.get("litellm_provider")
    mode = entry.get("mode")
    return ModelPrice(
        **base,
        tiers=tuple(PriceTier(threshold, **tiers[threshold]) for threshold in sorted(tiers)),
        provider=provider if isinstance(provider, str) else None,
        mode=mode if isinstance(mode, str) else None,
        services=MappingProxyType(
            {name: parse_model_price(fields, strict=strict) for name, fields in services.items()}
        ),
    )


@lru_cache(maxsize=4096)
def _service_of(key: str) -> tuple[CloudTier, str] | None:
    """`("batch", "input_cost_per_token")` for `input_cost_per_token_batches`, and so on; `None`
    for a key of the standard tier or one that is no rate (`output_cost_per_image_token_batches`)."""
    for suffix, name in _SERVICE_SUFFIX.items():
        if key.endswith(suffix) and _classify(key.removesuffix(suffix)) is not None:
            return name, key.removesuffix(suffix)
    return None


@lru_cache(maxsize=4096)
def _classify(key: str) -> tuple[RateKind, int] | None:
    """`(kind, 0)` for a base rate, `(kind, threshold)` for a tier rate, `None` for anything else."""
    if (kind := _KIND_BY_KEY.get(key)) is not None:
        return kind, 0
    match = _TIER_KEY.fullmatch(key)
    if match is None or (kind := _KIND_BY_KEY.get(match["field"])) is None:
        return None
    threshold = int(match["count"]) * _UNIT[match["unit"].lower()]
    return (kind, threshold) if threshold > 0 else None


def _price(key: str, value: object, strict: bool) -> Decimal | None:
    if type(value) is float and 0.0 <= value < math.inf:  # fast path: nearly every value in a table
        return Decimal(repr(value))
    if value is None and not strict:
        return None
    try:
        rate = as_decimal(value)
    except (TypeError, ValueError):
        if strict:
            raise PriceTableError(f"{key}: {value!r} is not a number") from None
        return None
    if rate < 0:
        if strict:
            raise PriceTableError(f"{key}: {value!r} is negative")
        return None
    return rate


@dataclass(frozen=True, eq=False)
class PriceTable:
    """An immutable, identified set of model prices. Compare tables by `id`, not `==`.

    `base` and `overrides` are set only on tables made by `apply_overrides`; they let a
    `PriceStore` persist the derived table so a receipt's table id can be fetched again.
    """

    id: str
    source: str
    models: Mapping[str, ModelPrice]
    digest: str
    """Full SHA-256 hex of the table's identity (file bytes, or base digest + overrides)."""
    base: PriceTable | None = None
    overrides: Mapping[str, Mapping[str, Decimal]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def date(self) -> dt.date:
        return dt.date.fromisoformat(self.id[:10])

    def resolve(self, name: str) -> str | None:
        """The table key that prices `name`, trying in order:

        1. `name` itself, then `name` with leading `provider/` segments removed one at a time
           (`anthropic/claude-sonnet-4-5` -> `claude-sonnet-4-5`);
        2. keys that are some `provider/` prefix plus one of those spellings (`mistral-large-latest`
           -> `mistral/mistral-large-latest`): a first-party provider's key first (it sells at
           list price; resellers may not), then the longest matched spelling, the fewest added
           segments, and alphabetical order, so the choice is deterministic;
        3. the same two steps on the lower-cased name.
        """
        for spelling in dict.fromkeys((name, name.lower())):
            candidates = list(_spellings(spelling))
            for candidate in candidates:
                if candidate in self.models:
                    return candidate
            prefixed = [
                (first_party, position, depth, key)
                for position, candidate in enumerate(candidates)
                for first_party, depth, key in self._prefixed.get(candidate, ())[:1]
            ]
            if prefixed:
                return min(prefixed)[-1]
        return None

    def lookup(self, name: str) -> ModelPrice | None:
        """The price of `name` under the spellings `resolve` accepts, or `None`."""
        key = self.resolve(name)
        return None if key is None else self.models[key]

    @cached_property
    def _prefixed(self) -> Mapping[str, tuple[tuple[int, int, str], ...]]:
        """Unprefixed spelling -> `(first-party rank, segments removed, key)` of keys that carry
        it after one or more `provider/` segments, best first."""
        index: dict[str, list[tuple[int, int, str]]] = {}
        for key in self.models:
            parts = key.split("/")
            first_party = _FIRST_PARTY.get(parts[0], len(_FIRST_PARTY))
            for depth in range(1, len(parts)):
                index.setdefault("/".join(parts[depth:]), []).append((first_party, depth, key))
        return {name: tuple(sorted(keys)) for name, keys in index.items()}


_FIRST_PARTY: Final[Mapping[str, int]] = {
    provider: rank
    for rank, provider in enumerate(
        ("openai", "anthropic", "gemini", "xai", "mistral", "deepseek", "cohere", "ai21", "moonshot")
    )
}
"""Providers that sell their own models, preferred over resellers when a bare name is ambiguous."""


def _spellings(name: str) -> Iterator[str]:
    parts = name.split("/")
    for depth in range(len(parts)):
        yield "/".join(parts[depth:])


def make_table_id(date: dt.date, digest: str) -> str:
    return f"{date.isoformat()}-{digest[:12]}"


def is_table_id(value: str) -> bool:
    """Whether `value` has the shape of a table id (also keeps ids safe to use as file names)."""
    return _ID.fullmatch(value) is not None


def parse_table(data: bytes, *, date: dt.date, source: str) -> PriceTable:
    """Parse litellm price JSON bytes into a table dated `date` (entry `sample_spec` is skipped)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PriceTableError(f"{source}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PriceTableError(f"{source}: expected a JSON object of models")
    entries = {
        name: entry for name, entry in document.items() if name != SAMPLE_SPEC and isinstance(entry, dict)
    }
    digest = hashlib.sha256(data).hexdigest()
    return PriceTable(make_table_id(date, digest), source, ParsedOnDemand(entries), digest)


class ParsedOnDemand(Mapping[str, ModelPrice]):
    """Read-only model mapping that parses an entry the first time it is read.

    Why: a gateway prices a handful of reference models out of ~5,000 entries. Parsing all of them
    costs more than the 100 ms load budget; parsing is pure and, for table data, cannot fail, so
    deferring it changes nothing observable. Concurrent first reads at worst parse twice.
    """

    __slots__ = ("_entries", "_parsed")

    def __init__(self, entries: Mapping[str, Mapping[str, object]]) -> None:
        self._entries = entries
        self._parsed: dict[str, ModelPrice] = {}

    def __getitem__(self, name: str) -> ModelPrice:
        price = self._parsed.get(name)
        if price is None:
            price = self._parsed[name] = parse_model_price(self._entries[name])
        return price

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def load_table(path: Path, *, date: dt.date | None = None) -> PriceTable:
    """Load a price file; without `date`, the file's modification date (UTC) dates the table."""
    if date is None:
        date = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date()
    return parse_table(path.read_bytes(), date=date, source=str(path))


SHIPPED_DATE: Final = dt.date(2026, 11, 28)
"""When the shipped snapshot was taken (litellm 1.110.2's backup price map). Fixed here, not read
from the file's mtime, so every clone and install gives the snapshot the same id."""


@cache
def shipped_table() -> PriceTable:
    """The snapshot shipped in this package, parsed once per process."""
    return load_table(SHIPPED_SNAPSHOT, date=SHIPPED_DATE)

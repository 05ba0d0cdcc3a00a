"""What a cloud provider would have billed for one request's tokens.

Formula (every rate per token, USD):

    uncached input x input
  + cache reads    x cache_read   (absent -> input rate)
  + cache writes   x cache_write  (absent -> input rate)
  + (output - reasoning) x output
  + reasoning      x reasoning    (absent -> output rate)

Fallbacks apply only to an *absent* rate; an explicit 0 is charged as 0. Without an input or an
output price the request is unpriced (`priced=False`, `total=None`), never a cost of 0: a wrong
number in a savings report is worse than a missing one.

Long-context tiers: when the prompt (`input_tokens`, cached tokens included) is longer than a
tier's threshold, the highest such tier's rates apply to the whole request, every term, as Gemini
and Anthropic bill it. A rate the tier does not list keeps the model's base rate for that kind
(litellm's behaviour) before any fallback to the input/output rate.

Cache modes say what a cloud provider would have cached of this request:

* `"none"` — nothing: every prompt token, cached or written locally, is billed as plain input.
* `"conservative"` — exactly what the local server cached: cache reads at the cache-read rate,
  cache writes at the cache-write rate. This yields the lower cloud cost, hence the lower savings.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Final, Literal, get_args

from pricing.money import CONTEXT
from pricing.tables import RATE_KEYS, CloudTier, ModelPrice, PriceTier, RateKind

CacheMode = Literal["none", "conservative"]
CACHE_MODES: Final[tuple[CacheMode, ...]] = get_args(CacheMode)


@dataclass(frozen=True, slots=True)
class CloudUsage:
    """Token counts as a cloud provider would report them.

    `input_tokens` is the whole prompt and includes `cached_tokens` and `cache_write_tokens`
    (OpenAI's convention); `output_tokens` includes `reasoning_tokens`.
    """

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        counts = (
            self.input_tokens,
            self.output_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        )
        for n in counts:  # a plain loop: this runs for every reference of every request
            if type(n) is not int and (isinstance(n, bool) or not isinstance(n, int)):
                raise ValueError(f"token counts must be non-negative integers: {self}")
            if n < 0:
                raise ValueError(f"token counts must be non-negative integers: {self}")
        if self.cached_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(f"cached + cache-write tokens exceed input tokens: {self}")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(f"reasoning tokens exceed output tokens: {self}")


@dataclass(frozen=True, slots=True)
class CostTerm:
    """One line of the bill: `tokens x rate = usd`, with the price field the rate came from."""

    kind: RateKind
    tokens: int
    rate: Decimal
    rate_field: str
    usd: Decimal


@dataclass(frozen=True, slots=True)
class CloudCost:
    """The cloud bill for one request. Unpriced: `priced=False`, `total=None`, no terms."""

    priced: bool
    total: Decimal | None
    terms: tuple[CostTerm, ...]
    tier: int | None
    cache_mode: CacheMode
    unpriced_reason: str | None = None


AppliedRate = tuple[Decimal, str]
"""A rate and the litellm field it was read from."""


def applied_rates(price: ModelPrice, prompt_tokens: int) -> dict[RateKind, AppliedRate] | None:
    """The rate each kind of token is billed at for a prompt this long; `None` if unpriced.

    The answer depends only on the price and the tier the prompt falls in: it is kept per
    (price object, tier) (prices are immutable; the entry holds the price, so its id stays its own)."""
    tier = price.tier_for(prompt_tokens)
    key = (id(price), None if tier is None else tier.threshold)
    hit = _RATES.get(key)
    if hit is not None and hit[0] is price:
        return hit[1]
    rates = _applied_rates(price, tier)
    if len(_RATES) >= _RATES_MAX:
        _RATES.clear()
    _RATES[key] = (price, rates)
    return rates


_RATES: dict[tuple[int, int | None], tuple[ModelPrice, dict[RateKind, AppliedRate] | None]] = {}
_RATES_MAX: Final = 4096


def _applied_rates(price: ModelPrice, tier: PriceTier | None) -> dict[RateKind, AppliedRate] | None:
    input_rate = _rate(price, tier, "input")
    output_rate = _rate(price, tier, "output")
    if input_rate is None or output_rate is None:
        return None
    return {
        "input": input_rate,
        "cache_read": _rate(price, tier, "cache_read") or input_rate,
        "cache_write": _rate(price, tier, "cache_write") or input_rate,
        "output": output_rate,
        "reasoning": _rate(price, tier, "reasoning") or output_rate,
    }


def _rate(price: ModelPrice, tier: PriceTier | None, kind: RateKind) -> AppliedRate | None:
    if tier is not None and (rate := tier.rate(kind)) is not None:
        return rate, tier.key(kind)
    if (rate := price.rate(kind)) is not None:
        return rate, RATE_KEYS[kind]
    return None


def cloud_cost(price: ModelPrice | None, usage: CloudUsage, cache_mode: CacheMode) -> CloudCost:
    """Price `usage` with `price` (see the module docstring); `price=None` means not in the table."""
    if cache_mode not in CACHE_MODES:
        raise ValueError(f"cache_mode must be one of {CACHE_MODES}, not {cache_mode!r}")
    if price is None:
        return CloudCost(False, None, (), None, cache_mode, "model not in price table")
    rates = applied_rates(price, usage.input_tokens)
    if rates is None:
        missing = [RATE_KEYS[kind] for kind in ("input", "output") if price.rate(kind) is None]
        return CloudCost(False, None, (), None, cache_mode, f"no {' or '.join(missing)}")
    tier = price.tier_for(usage.input_tokens)
    if cache_mode == "none":
        reads, writes = 0, 0
    else:
        reads, writes = usage.cached_tokens, usage.cache_write_tokens
    tokens: dict[RateKind, int] = {
        "input": usage.input_tokens - reads - writes,
        "cache_read": reads,
        "cache_write": writes,
        "output": usage.output_tokens - usage.reasoning_tokens,
        "reasoning": usage.reasoning_tokens,
    }
    with localcontext(CONTEXT):
        terms = tuple(
            CostTerm(kind, count, rates[kind][0], rates[kind][1], rates[kind][0] * count)
            for kind, count in tokens.items()
        )
        total = sum((term.usd for term in terms), Decimal(0))
    return CloudCost(True, total, terms, None if tier is None else tier.threshold, cache_mode)


def service_price(
    price: ModelPrice | None, tier: CloudTier
) -> tuple[ModelPrice | None, CloudTier, str | None]:
    """The prices to bill a request of cloud service `tier` with: `(price, tier priced, note)`.

    Batch and flex use the table's batch/flex rates (`ModelPrice.for_service`). When the table
    has none for this model, the request is priced at the standard rates and `note` says so: a
    batch job compared with standard prices overstates what the cloud would have charged, and the
    receipt must not hide that."""
    if price is None or tier == "standard":
        return price, "standard", None
    service = price.for_service(tier)
    if service is None:
        return price, "standard", f"no {tier} rates in the price table: priced at standard rates"
    return service, tier, None

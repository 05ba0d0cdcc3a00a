"""Teams, keys and policy, wired together: what ``create_app`` builds and the lifespan runs.

Holds the live parts (authenticator and key ring, policy book, rate limiter, budgets, the hosted
path) and the two background duties: re-reading keys changed by the CLI, and reloading policy
(``reload``: from the admin API or SIGHUP). A reload validates the whole file first and, if it is
good, swaps the policy book in one assignment; requests already admitted keep their rules.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import Any

import yaml

from gateway import errors
from gateway.backends.pool import BackendPool
from gateway.backends.routing import Router
from gateway.ledger.keystore import open_key_store
from gateway.policy.admission import Gate, HostedFactory, HostedService
from gateway.policy.auth import Authenticator, resolve_mode
from gateway.policy.budget import (
    SEED_SQL,
    Budgets,
    Counters,
    MemoryCounters,
    RedisCounters,
    periods,
    seed_values,
)
from gateway.policy.keys import load_ring
from gateway.policy.limits import MemoryWindows, RateLimiter, RedisWindows, Windows
from gateway.policy.redis_link import RedisLink
from gateway.policy.rules import PolicyBook
from gateway.settings import Settings, reload_settings
from pricing.tables import PriceTable

log = logging.getLogger("nometer.policy")


class Governance:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        pool: BackendPool,
        table: PriceTable,
        hosted_factory: HostedFactory | None = None,
    ):
        # the whole settings, not a section: a reload re-reads every policy section from them
        self.settings = settings
        self._hosted_factory = hosted_factory  # builds the hosted path when a policy first needs it
        self.boot = settings  # what this process started with (restart-only sections)
        self.pool = pool
        self.table = table
        self.keys = open_key_store(Path(settings.ledger.path), settings.ledger.url)
        self.auth = Authenticator(resolve_mode(settings.auth, settings.server), settings.auth.admin_key_env)
        lim = settings.limits
        link = RedisLink(lim.redis_url, lim.redis_timeout_s, lim.redis_retry_s) if lim.redis_url else None
        windows: Windows = RedisWindows(link, lim.redis_prefix) if link else MemoryWindows()
        counters: Counters = RedisCounters(link, lim.redis_prefix) if link else MemoryCounters()
        self.limiter = RateLimiter(windows)
        self.budgets = Budgets(counters)
        self.book = PolicyBook(settings)
        self.gate = Gate(self.auth, self.book, router, self.limiter)
        self.hosted: HostedService | None = None  # only when some policy falls back
        self._task: asyncio.Task[None] | None = None
        self._store: Any = None
        self.keys_read_at = time.monotonic()  # the last successful read of the key table
        self.keys_error: str | None = None  # why the latest read failed; None while reads work
        self._keys_logged = 0.0
        self._apply(self.book)

    def _apply(self, book: PolicyBook) -> None:
        for w in book.warnings():
            log.warning("policy: %s", w)
        if book.uses_hosted and self.hosted is None:
            if self._hosted_factory is None:
                raise ValueError("a policy falls back to hosted models, but this gateway has no hosted path")
            self.hosted = self._hosted_factory(self.budgets, self.table)
        if self.hosted is not None:
            self.hosted.swap(book)
        self.pool.poll_metrics = book.uses_metrics
        self.gate.hosted = self.hosted
        self.book = self.gate.book = book

    def failures(self) -> dict[tuple[str, str], int]:
        """(store, fail mode) -> requests whose counters failed (for /metrics)."""
        out: dict[tuple[str, str], int] = {}
        for store, count in (("rate_limits", self.limiter.failures), ("budgets", self.budgets.failures)):
            for mode, n in count.counts.items():
                out[store, mode] = n
        return out

    async def start(self, store: Any) -> None:
        self._store = store
        await self.refresh_keys()
        await self._seed_budgets(store)
        if self.hosted is not None:
            from adapters.hosted import load

            await asyncio.to_thread(load)  # litellm takes seconds to import: not on a request
        self._task = asyncio.create_task(self._watch_keys(), name="nometer-keys")
        log.info(
            "auth mode %s; %d active keys; %d team policies%s",
            self.auth.mode,
            len(self.auth.ring),
            len(self.book.teams),
            "; hosted fallback on" if self.hosted is not None else "",
        )

    async def _seed_budgets(self, store: Any) -> None:
        """Counters start from the ledger's hosted spend; existing counters are kept (they hold
        reservations in flight and spend the recorder has not written yet)."""
        if not any(r.has_budget for r in [self.book.default, *self.book.teams.values()]):
            return
        now = time.time()
        month_start = periods(now)[1] + "-01"
        sql = SEED_SQL.format(p="?" if getattr(store, "placeholder", "?") == "?" else "$1")
        rows = await store.fetch(sql, [month_start])
        try:
            await self.budgets.counters.seed(seed_values(rows, now))
        except errors.CountersUnavailable as exc:  # counters that exist in Redis keep their value
            log.error("budget counters not started from the ledger's spend: %s", exc.message)

    async def _watch_keys(self) -> None:
        """Pick up keys created, disabled or rotated by another process (the CLI, a replica).

        Every ``auth.refresh_s`` the key table's revision is read (cheap) and the ring reloaded
        when it moved; each successful read moves ``auth.trusted_until`` forward by
        ``auth.keys_max_stale_s``. A failed read (database down) keeps the last ring, says so in
        ``/readyz`` (``keys_health``) and in the log (the first failure with its traceback, then
        every 30 s), and after ``keys_max_stale_s`` of failures keys are refused (see
        ``Authenticator``); the first good read after that restores them."""
        while True:
            await asyncio.sleep(self.settings.auth.refresh_s)
            try:
                if await asyncio.to_thread(self.keys.revision) != self.auth.ring.revision:
                    await self.refresh_keys()
                else:
                    self._keys_read()
            except Exception as exc:  # never let the watcher die
                self._keys_failed(exc)

    async def refresh_keys(self) -> None:
        self.auth.ring = await asyncio.to_thread(load_ring, self.keys)
        self._keys_read()

    def _keys_read(self) -> None:
        now = time.monotonic()
        if self.keys_error is not None:
            log.warning(
                "API keys re-read again after %.1fs of failures (%d keys active)",
                now - self.keys_read_at,
                len(self.auth.ring),
            )
            self.keys_error = None
        self.keys_read_at = now
        stale = self.settings.auth.keys_max_stale_s
        self.auth.trusted_until = math.inf if stale is None else now + stale

    def _keys_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        first = self.keys_error is None
        self.keys_error = f"{type(exc).__name__}: {exc}"[:500]
        if first:
            log.error(
                "could not re-read API keys; serving the last %d read", len(self.auth.ring), exc_info=exc
            )
            self._keys_logged = now
        elif now - self._keys_logged >= 30:
            self._keys_logged = now
            refused = now > self.auth.trusted_until
            log.error(
                "still cannot re-read API keys (%.0fs since the last read; keys %s): %s",
                now - self.keys_read_at,
                "REFUSED" if refused else "still honoured",
                self.keys_error,
            )

    def keys_health(self) -> dict[str, Any]:
        """For /readyz: whether the keys are being re-read, and since when they are not."""
        now = time.monotonic()
        return {
            "fresh": self.keys_error is None,
            "last_read_s_ago": round(now - self.keys_read_at, 3),
            "refused": now > self.auth.trusted_until,
            "error": self.keys_error,
        }

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration and swap in its policy; ValueError/OSError on a bad file
        (the running policy stays)."""
        try:
            new = await asyncio.to_thread(reload_settings, self.settings)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML: {exc}") from None
        book = PolicyBook(new)
        if book.uses_hosted and self.hosted is None:
            from adapters.hosted import load

            await asyncio.to_thread(load)
        ignored = [
            name
            for name in ("server", "backends", "managed", "ledger", "auth", "limits")
            if getattr(new, name) != getattr(self.boot, name)
        ]
        self._apply(book)
        self.settings = new
        if self._store is not None:
            await self._seed_budgets(self._store)  # a team that just got a budget starts from its spend
        log.info(
            "policy reloaded: %d team policies%s",
            len(book.teams),
            f"; changes to {', '.join(ignored)} need a restart" if ignored else "",
        )
        return {"teams": sorted(book.teams), "warnings": book.warnings(), "restart_needed_for": ignored}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.limiter.windows.aclose()
        await self.budgets.counters.aclose()
        close = getattr(self.keys, "close", None)  # PostgresKeyStore holds a connection of its own
        if close is not None:
            await asyncio.to_thread(close)

"""The ledger schema, versioned with migrations from day one.

One list of migrations serves SQLite and PostgreSQL: each statement is written once with
``{pk}`` standing for the dialect's auto-increment primary key. A store applies, in one
transaction each, every migration above the version recorded in ``schema_version``.
"""

from __future__ import annotations

DIALECT_PK = {"sqlite": "INTEGER PRIMARY KEY", "postgres": "BIGSERIAL PRIMARY KEY"}

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE usage_events (
            id {pk},
            request_id TEXT NOT NULL,
            ts DOUBLE PRECISION NOT NULL,
            day TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            requested_model TEXT,
            served_model TEXT,
            backend TEXT,
            route TEXT NOT NULL DEFAULT 'local',
            provider TEXT,
            fallback_cause TEXT,
            outcome TEXT NOT NULL,
            status INTEGER NOT NULL,
            stream INTEGER NOT NULL,
            prompt_tokens BIGINT,
            completion_tokens BIGINT,
            total_tokens BIGINT,
            cached_tokens BIGINT,
            reasoning_tokens BIGINT,
            usage_source TEXT NOT NULL,
            latency_ms DOUBLE PRECISION,
            ttft_ms DOUBLE PRECISION,
            key_id TEXT,
            team TEXT,
            tag TEXT,
            error TEXT
        )""",
            "CREATE INDEX usage_events_ts ON usage_events (ts)",
            "CREATE INDEX usage_events_request_id ON usage_events (request_id)",
            "CREATE INDEX usage_events_day_team ON usage_events (day, team)",
        ),
    ),
    # 2: the shadow meter. Per event: the pinned price table, the cache mode, the local-cost inputs
    # (busy share, measured joules, box parameters as JSON) and results in integer pico-dollars
    # (exact SUMs in SQL); per event and reference cloud model: the re-counted tokens and prices.
    (
        2,
        (
            "ALTER TABLE usage_events ADD COLUMN uid TEXT",
            "ALTER TABLE usage_events ADD COLUMN price_table_id TEXT",
            "ALTER TABLE usage_events ADD COLUMN cache_mode TEXT",
            "ALTER TABLE usage_events ADD COLUMN busy_s DOUBLE PRECISION",
            "ALTER TABLE usage_events ADD COLUMN joules DOUBLE PRECISION",
            "ALTER TABLE usage_events ADD COLUMN box TEXT",
            "ALTER TABLE usage_events ADD COLUMN local_energy_pusd BIGINT",
            "ALTER TABLE usage_events ADD COLUMN local_hardware_pusd BIGINT",
            "ALTER TABLE usage_events ADD COLUMN receipt_sha256 TEXT",
            "ALTER TABLE usage_events ADD COLUMN hosted_cost_pusd BIGINT",  # route=hosted: what the provider billed
            "CREATE UNIQUE INDEX usage_events_uid ON usage_events (uid)",
            """CREATE TABLE shadow_costs (
            id {pk},
            event_uid TEXT NOT NULL,
            ref_index INTEGER NOT NULL,
            ref_model TEXT NOT NULL,
            price_key TEXT,
            tokenizer TEXT NOT NULL,
            estimated INTEGER NOT NULL,
            input_tokens BIGINT NOT NULL,
            cached_tokens BIGINT NOT NULL,
            cache_write_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            reasoning_tokens BIGINT NOT NULL,
            cloud_pusd BIGINT,
            savings_pusd BIGINT
        )""",
            "CREATE INDEX shadow_costs_event ON shadow_costs (event_uid)",
            "CREATE INDEX shadow_costs_model ON shadow_costs (ref_model)",
        ),
    ),
    # 3: API keys (gateway/keys.py). Only a SHA-256 digest of each key is stored; `revision`
    # grows with every write so a running gateway notices changes made by the CLI.
    (
        3,
        (
            """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            team TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            disabled DOUBLE PRECISION,
            expires DOUBLE PRECISION,
            replaced_by TEXT,
            revision BIGINT NOT NULL
        )""",
            "CREATE INDEX api_keys_team ON api_keys (team)",
            "CREATE INDEX api_keys_revision ON api_keys (revision)",
        ),
    ),
    # 4: receipts are rebuilt from their stored inputs on demand; the recorder no longer builds
    # (and digests) a full receipt per request, so the digest column goes.
    (4, ("ALTER TABLE usage_events DROP COLUMN receipt_sha256",)),
    # 5: agent runs. The run (X-Nometer-Run) and the conversation within it (X-Nometer-Session)
    # of each request, so GET /v1/nometer/runs/{id} and `nometer runs` total a run's rows.
    (
        5,
        (
            "ALTER TABLE usage_events ADD COLUMN run_id TEXT",
            "ALTER TABLE usage_events ADD COLUMN session_id TEXT",
            "CREATE INDEX usage_events_run ON usage_events (run_id, ts)",
        ),
    ),
    # 6: the hash chain (gateway/ledger/chain.py). Every row of both tables carries its writer's
    # chain id, its sequence number in that chain, when it was sealed, the previous row's digest and
    # its own; (chain_id, chain_seq) is unique per table (NULLs, i.e. rows written before this
    # migration, are exempt). `chain_legacy` remembers the highest row id of each table at this
    # migration, so `verify` can tell a row written before the chain existed from one inserted later
    # outside it. `ledger_verifications` keeps each `nometer verify` result for the report.
    (
        6,
        (
            "ALTER TABLE usage_events ADD COLUMN chain_id TEXT",
            "ALTER TABLE usage_events ADD COLUMN chain_seq BIGINT",
            "ALTER TABLE usage_events ADD COLUMN sealed_at DOUBLE PRECISION",
            "ALTER TABLE usage_events ADD COLUMN chain_prev TEXT",
            "ALTER TABLE usage_events ADD COLUMN chain_digest TEXT",
            "ALTER TABLE shadow_costs ADD COLUMN chain_id TEXT",
            "ALTER TABLE shadow_costs ADD COLUMN chain_seq BIGINT",
            "ALTER TABLE shadow_costs ADD COLUMN sealed_at DOUBLE PRECISION",
            "ALTER TABLE shadow_costs ADD COLUMN chain_prev TEXT",
            "ALTER TABLE shadow_costs ADD COLUMN chain_digest TEXT",
            "CREATE UNIQUE INDEX usage_events_chain ON usage_events (chain_id, chain_seq)",
            "CREATE UNIQUE INDEX shadow_costs_chain ON shadow_costs (chain_id, chain_seq)",
            "CREATE INDEX usage_events_sealed ON usage_events (sealed_at)",
            "CREATE TABLE chain_legacy (tbl TEXT PRIMARY KEY, max_id BIGINT NOT NULL)",
            "INSERT INTO chain_legacy (tbl, max_id) SELECT 'usage_events', COALESCE(MAX(id), 0) FROM usage_events",
            "INSERT INTO chain_legacy (tbl, max_id) SELECT 'shadow_costs', COALESCE(MAX(id), 0) FROM shadow_costs",
            """CREATE TABLE ledger_verifications (
            id {pk},
            ts DOUBLE PRECISION NOT NULL,
            period_from DOUBLE PRECISION,
            period_to DOUBLE PRECISION,
            clean INTEGER NOT NULL,
            rows_checked BIGINT NOT NULL,
            receipts BIGINT NOT NULL,
            findings BIGINT NOT NULL,
            unchained BIGINT NOT NULL,
            heads TEXT NOT NULL
        )""",
        ),
    ),
    # 7: the dead letters (gateway/ledger/writer.py). A request whose rows the store refused (a
    # data error, after gateway/ledger/sanitize.py) is written row by row apart from its batch and,
    # if it still fails, kept here as sealed JSON with the error, so the rest of the batch lands.
    # Its chain position stays empty in the ledger: `nometer verify` names it as dead-lettered.
    # Idempotent replay (INSERT ... ON CONFLICT DO NOTHING) relies on the unique request uid
    # (migration 2) and the unique chain position (migration 6), both already there.
    (
        7,
        (
            """CREATE TABLE ledger_dead_letters (
            id {pk},
            ts DOUBLE PRECISION NOT NULL,
            chain_id TEXT NOT NULL,
            chain_seq BIGINT NOT NULL,
            rows_count INTEGER NOT NULL,
            request_uid TEXT,
            error TEXT NOT NULL,
            payload TEXT NOT NULL
        )""",
            "CREATE UNIQUE INDEX ledger_dead_letters_chain ON ledger_dead_letters (chain_id, chain_seq)",
        ),
    ),
    # 8: the cloud service tier each request was compared with (X-Nometer-Cloud-Tier), and, per
    # reasoning reference, whether its hidden reasoning was modelled. Both nullable, no default,
    # appended last (the hash chain digests columns in order; old rows keep their digests).
    (
        8,
        (
            "ALTER TABLE usage_events ADD COLUMN cloud_tier TEXT",
            "ALTER TABLE shadow_costs ADD COLUMN hidden_reasoning TEXT",
        ),
    ),
)

LATEST = max(version for version, _ in MIGRATIONS)


def pending(applied: set[int]) -> list[int]:
    """The migrations a ledger lacks, in number order: every one not yet applied, not only those
    above the highest applied (numbers are reserved per change, so they may land out of order)."""
    return sorted(version for version, _ in MIGRATIONS if version not in applied)


def statements(dialect: str, version: int) -> list[str]:
    pk = DIALECT_PK[dialect]
    for v, stmts in MIGRATIONS:
        if v == version:
            return [s.replace("{pk}", pk) for s in stmts]
    raise KeyError(version)

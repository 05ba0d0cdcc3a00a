"""The ledger schema, versioned with migrations from day one.

One list of migrations serves SQLite and PostgreSQL: each statement is written once with
``{pk}`` standing for the dialect's auto-increment primary key. A store applies, in one
transaction each, every migration above the version recorded in ``schema_version``.
"""

from __future__ import annotations

DIALECT_PK = {"sqlite": "INTEGER PRIMARY KEY", "postgres": "BIGSERIAL PRIMARY KEY"}

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
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
    )),
)

LATEST = MIGRATIONS[-1][0]


def statements(dialect: str, version: int) -> list[str]:
    pk = DIALECT_PK[dialect]
    for v, stmts in MIGRATIONS:
        if v == version:
            return [s.replace("{pk}", pk) for s in stmts]
    raise KeyError(version)

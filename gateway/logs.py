"""Logs: JSON lines (one object per line) for files, pipes and collectors; readable lines on a TTY.

``setup(level, fmt)``: ``fmt`` is ``json``, ``text`` or ``auto`` (the default: ``text`` when stderr
is a terminal, else ``json``), so a person watching ``nometer serve`` reads sentences while a log
shipper still gets one JSON object per line. Both carry the same fields; uvicorn's ANSI-coloured
duplicate of each message (``color_message``) is dropped from both.

Request-scoped code names its request with ``extra={"request_id": rid}``; code that cannot
(a library, a helper deep down) is covered by ``REQUEST_ID``: whoever handles a request sets it
once and every line logged in that task gets the id. The access log (one line per request) is
written by the recorder after each batch, never by the proxy: see ``access``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import Any, Literal, TextIO

import orjson

# record attributes that are not extras: uvicorn adds `color_message` (the message again, with ANSI
# colours) and litellm, once imported, stamps every record with `litellm_redacted` (a marker object)
_STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    "color_message",
    "litellm_redacted",
}

REQUEST_ID: ContextVar[str | None] = ContextVar("nometer_request_id", default=None)
ACCESS = logging.getLogger("nometer.access")

# ledger column -> access-log field (in this order)
_ACCESS_FIELDS = (
    ("request_id", "request_id"),
    ("endpoint", "endpoint"),
    ("requested_model", "model"),
    ("served_model", "served_model"),
    ("backend", "backend"),
    ("route", "route"),
    ("status", "status"),
    ("outcome", "outcome"),
    ("stream", "stream"),
    ("latency_ms", "latency_ms"),
    ("ttft_ms", "ttft_ms"),
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("usage_source", "usage_source"),
    ("team", "team"),
    ("key_id", "key_id"),
    ("tag", "tag"),
    ("fallback_cause", "fallback_cause"),
    ("error", "error"),
)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``12:04:31 info  nometer: ready on ...  request_id=r-1`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{clock} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        extras = [f"{k}={v}" for k, v in vars(record).items() if k not in _STD]
        if extras:
            line += "  " + " ".join(extras)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


LogFormat = Literal["auto", "json", "text"]


def formatter(fmt: LogFormat, stream: TextIO) -> logging.Formatter:
    """The formatter ``setup`` installs for ``fmt``: ``auto`` is text on a terminal, JSON elsewhere."""
    tty = fmt == "auto" and hasattr(stream, "isatty") and stream.isatty()
    return ConsoleFormatter() if fmt == "text" or tty else JSONFormatter()


class RequestIdFilter(logging.Filter):
    """Adds the current request's id (``REQUEST_ID``) to records that do not name one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in vars(record):
            rid = REQUEST_ID.get()
            if rid is not None:
                record.request_id = rid
        return True


def setup(level: str = "info", fmt: LogFormat = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, sys.stderr))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


def access(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """One ``nometer.access`` line per ledger event row (``columns`` names the row's fields).

    Called by the recorder with each batch, in its worker thread: off the event loop and never
    on a request's path. Empty fields are left out; ``started`` is when the request arrived."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    index = {c: i for i, c in enumerate(columns)}
    fields = [(index[col], name) for col, name in _ACCESS_FIELDS if col in index]
    ts = index.get("ts")
    for row in rows:
        extra: dict[str, Any] = {name: row[i] for i, name in fields if row[i] is not None}
        if "stream" in extra:
            extra["stream"] = bool(extra["stream"])
        if ts is not None and row[ts] is not None:
            extra["started"] = _iso(row[ts])
        ACCESS.info(
            "%s %s %s",
            extra.get("endpoint", "-"),
            extra.get("status", "-"),
            extra.get("outcome", "-"),
            extra=extra,
        )

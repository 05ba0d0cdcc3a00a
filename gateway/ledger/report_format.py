"""Report rendering for people (a table) and spreadsheets (CSV). JSON is the report itself."""

from __future__ import annotations

import csv
import io
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


def _money(v: str | None) -> str:
    if v is None:
        return "unpriced"
    d = Decimal(v)
    q = (
        Decimal("0.01")
        if abs(d) >= 1
        else Decimal("0.0001")
        if abs(d) >= Decimal("0.01")
        else Decimal("0.000001")
    )
    return f"${d.quantize(q, rounding=ROUND_HALF_UP):,}"


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [*data["groups"], data["totals"]] if data["by"] else [data["totals"]]


def to_csv(data: dict[str, Any]) -> str:
    refs = data["references"]
    cols = [
        "group",
        "requests",
        "local_requests",
        "hosted_requests",
        "prompt_tokens",
        "completion_tokens",
        "local_energy_usd",
        "local_hardware_usd",
        "local_cost_usd",
        "hosted_spend_usd",
    ]
    for m in refs:
        cols += [
            f"cloud_input_tokens[{m}]",
            f"cloud_output_tokens[{m}]",
            f"cloud_cost_usd[{m}]",
            f"savings_usd[{m}]",
            f"unpriced_requests[{m}]",
        ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for g in _rows(data):
        row = [
            g["key"],
            g["requests"],
            g["local_requests"],
            g["hosted_requests"],
            g["local_tokens"]["prompt"],
            g["local_tokens"]["completion"],
            g["local_cost_usd"]["energy"],
            g["local_cost_usd"]["hardware"],
            g["local_cost_usd"]["total"],
            g["hosted_spend_usd"],
        ]
        for m in refs:
            t = g["cloud_tokens"].get(m, {})
            row += [
                t.get("input", 0),
                t.get("output", 0),
                g["cloud_cost_usd"].get(m, "0") or "unpriced",
                g["savings_usd"].get(m, "0") or "unpriced",
                g["unpriced_requests"].get(m, 0),
            ]
        w.writerow(row)
    return buf.getvalue()


def to_table(data: dict[str, Any]) -> str:
    refs = data["references"]
    head = ["group" if data["by"] else "", "requests", "local tokens (in/out)", "local cost"]
    for m in refs:
        est = "~" if data["totals"]["cloud_tokens"].get(m, {}).get("estimated") else ""
        head += [f"{est}{m} cost", f"savings vs {m}"]
    head.append("hosted")
    lines = []
    for g in _rows(data):
        cells = [
            str(g["key"] if g["key"] is not None else "(none)"),
            str(g["requests"]),
            f"{g['local_tokens']['prompt']:,}/{g['local_tokens']['completion']:,}",
            _money(g["local_cost_usd"]["total"]),
        ]
        for m in refs:
            unpriced = g["unpriced_requests"].get(m, 0)
            cost = g["cloud_cost_usd"].get(m)
            cells += [
                _money(cost) + (f" (+{unpriced} unpriced)" if unpriced else ""),
                _money(g["savings_usd"].get(m)),
            ]
        cells.append(_money(g["hosted_spend_usd"]))
        lines.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    out = [
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    out += [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))
        ).rstrip()
        for r in lines
    ]
    p = data["period"]
    out.append("")
    out.append(
        f"period: {p['from'] or 'start of ledger'} .. {p['to'] or 'now'}; price tables: "
        f"{', '.join(data['price_tables']) or '-'}; cache mode: {', '.join(data['cache_modes']) or '-'}"
    )
    if any(data["totals"]["cloud_tokens"].get(m, {}).get("estimated") for m in refs):
        out.append(
            "~ estimated: that provider publishes no tokenizer; counts are o200k x a documented factor"
        )
    causes = data["totals"]["hosted_spend_by_cause"]
    if causes:
        out.append(
            "hosted spend by cause: "
            + ", ".join(f"{c} {_money(v['usd'])} ({v['requests']} req)" for c, v in causes.items())
        )
    out += proof_lines(data.get("integrity"))
    pb = data["payback"]
    if pb["days_to_payback"] is not None:
        out.append(
            f"payback: the ${pb['hardware_usd']} box pays for itself in {pb['days_to_payback']:,} days "
            f"({pb['payback_date'] or 'over a century'}) at {_money(pb['net_per_day_usd'])}/day vs {pb['reference']}"
        )
    elif pb["reference"]:
        out.append(f"payback: no positive net saving vs {pb['reference']} in this period")
    return "\n".join(out) + "\n"


def proof_lines(integrity: dict[str, Any] | None) -> list[str]:
    """The report's proof state for people: verify state, chain heads, rows outside the chain."""
    if not integrity:
        return []
    last = integrity["last_verification"] or {}
    state = {
        "verified": f"verified ({last.get('at')})",
        "partly_verified": f"verified at {last.get('at')}, but rows were written since: run `nometer verify`",
        "failed": f"VERIFICATION FAILED at {last.get('at')}: {last.get('findings')} finding(s), see `nometer verify`",
        "unverified": "not verified: run `nometer verify`",
    }[integrity["verify_state"]]
    heads = ", ".join(
        f"{h['chain_id']} seq {h['head_seq']} {(h['head_digest'] or '?')[:16]}"
        for h in integrity["chain_heads"]
    )
    lines = [f"ledger proof: {state}; chain heads: {heads or '-'}"]
    un = integrity["unchained"]
    if un["requests"] or un["cost_rows"]:
        lines.append(
            f"WARNING: {un['requests']} requests and {un['cost_rows']} cost rows in this period are outside the "
            f"hash chain (local cost {_money(un['local_cost_usd'])}, savings "
            + (", ".join(f"{_money(v)} vs {m}" for m, v in un["savings_usd"].items()) or "-")
            + "): included above, not proven"
        )
    return lines

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
    if d == 0:
        return "$0.00"
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
    all_in = _all_in(data)
    for m in refs:
        cols += [
            f"cloud_input_tokens[{m}]",
            f"cloud_output_tokens[{m}]",
            f"cloud_cost_usd[{m}]",
            f"savings_usd[{m}]",
            f"unpriced_requests[{m}]",
        ]
    if all_in:  # appended, so the marginal columns keep their places
        cols += ["all_in_hardware_usd", "all_in_idle_energy_usd", "all_in_busy_energy_usd", "all_in_cost_usd"]
        cols += [f"all_in_savings_usd[{m}]" for m in refs]
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
        if all_in:
            a = g["all_in_cost_usd"]
            row += [a["hardware"], a["idle_energy"], a["busy_energy"], a["total"]]
            row += [g["all_in_savings_usd"].get(m, "0") or "unpriced" for m in refs]
        w.writerow(row)
    return buf.getvalue()


TABLE_WIDTH = 100  # `nometer report` fits a 100-column terminal unless --wide


def _count(n: int, exact: bool) -> str:
    """Token counts: exact with --wide; otherwise 3 significant digits from 10,000 (12.3k, 1.48B)."""
    if exact or abs(n) < 10_000:
        return f"{n:,}"
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:,.0f}{unit}"
    return f"{n:,}"  # not reached


def _ordered_refs(data: dict[str, Any]) -> list[str]:
    """The headline reference (the payback's) first, then the others in report order."""
    refs: list[str] = list(data["references"])
    head = data["payback"]["reference"]
    return [head, *(m for m in refs if m != head)] if head in refs else refs


def _all_in(data: dict[str, Any]) -> bool:
    return data.get("basis") == "all_in"


def _ref_cells(g: dict[str, Any], m: str) -> list[str]:
    unpriced = g["unpriced_requests"].get(m, 0)
    cost = _money(g["cloud_cost_usd"].get(m)) + (f" (+{unpriced} unpriced)" if unpriced else "")
    savings = g["all_in_savings_usd"] if "all_in_savings_usd" in g else g["savings_usd"]
    return [cost, _money(savings.get(m))]


def _fit(head: list[str], rows: list[list[str]]) -> list[int]:
    return [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "\u2026"


def to_table(data: dict[str, Any], width: int | None = TABLE_WIDTH) -> str:
    """The report for a terminal. With ``width`` (default 100 columns) the table shows as many
    reference models as fit, the headline one always, and lists the others' totals below it;
    ``width=None`` (``--wide``) shows every reference's columns and wraps nothing."""
    refs = _ordered_refs(data)
    est = {m: bool(data["totals"]["cloud_tokens"].get(m, {}).get("estimated")) for m in refs}
    groups = _rows(data)
    cost_key = "all_in_cost_usd" if _all_in(data) else "local_cost_usd"
    base_head = [
        "group" if data["by"] else "",
        "requests",
        "tokens in/out",
        "all-in cost" if _all_in(data) else "local cost",
    ]
    base = [
        [
            str(g["key"] if g["key"] is not None else "(none)"),
            f"{g['requests']:,}",
            f"{_count(g['local_tokens']['prompt'], width is None)}/"
            f"{_count(g['local_tokens']['completion'], width is None)}",
            _money(g[cost_key]["total"]),
        ]
        for g in groups
    ]
    hosted = [_money(g["hosted_spend_usd"]) for g in groups]
    shown: list[str] = []
    for m in refs:
        trial = [*shown, m]
        head, rows = _layout(base_head, base, hosted, groups, trial, est)
        if shown and width is not None and sum(_fit(head, rows)) + 2 * (len(head) - 1) > width:
            break
        shown = trial
    head, rows = _layout(base_head, base, hosted, groups, shown, est)
    widths = _fit(head, rows)
    if width is not None and (over := sum(widths) + 2 * (len(widths) - 1) - width) > 0:
        widths[0] = max(len(head[0]), 8, widths[0] - over)  # long group names give way first
        rows = [[_clip(r[0], widths[0]), *r[1:]] for r in rows]
    out = [
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    out += [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    out.append("")
    notes = _notes(data, refs, shown, est)
    wrap = (lambda line: [line]) if width is None else (lambda line: _wrap(line, width))
    for line in notes:
        out += wrap(line)
    return "\n".join(out) + "\n"


def _layout(
    base_head: list[str],
    base: list[list[str]],
    hosted: list[str],
    groups: list[dict[str, Any]],
    refs: list[str],
    est: dict[str, bool],
) -> tuple[list[str], list[list[str]]]:
    head = list(base_head)
    for m in refs:
        head += [f"{'~' if est[m] else ''}{m} cost", f"savings vs {m}"]
    head.append("hosted")
    rows = [
        [*cells, *(c for m in refs for c in _ref_cells(g, m)), h]
        for cells, g, h in zip(base, groups, hosted, strict=True)
    ]
    return head, rows


def _wrap(line: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False) or [""]


def _notes(data: dict[str, Any], refs: list[str], shown: list[str], est: dict[str, bool]) -> list[str]:
    t = data["totals"]
    out = []
    hidden = [m for m in refs if m not in shown]
    if hidden:
        out.append(
            "other references, in total (--wide shows them per group): "
            + "; ".join(
                f"{'~' if est[m] else ''}{m} would have cost {_ref_cells(t, m)[0]}, savings {_ref_cells(t, m)[1]}"
                for m in hidden
            )
        )
    p = data["period"]
    out.append(
        f"period: {p['from'] or 'start of ledger'} .. {p['to'] or 'now'}; price tables: "
        f"{', '.join(data['price_tables']) or '-'}; cache mode: {', '.join(data['cache_modes']) or '-'}"
    )
    if any(est.values()):
        out.append(
            "~ estimated: that provider publishes no tokenizer; counts are o200k x a documented factor"
        )
    causes = t["hosted_spend_by_cause"]
    if causes:
        out.append(
            "hosted spend by cause: "
            + ", ".join(f"{c} {_money(v['usd'])} ({v['requests']} req)" for c, v in causes.items())
        )
    out += proof_lines(data.get("integrity"))
    out += _basis_lines(data)
    pb = data["payback"]
    basis = " (all-in)" if _all_in(data) else ""
    if pb["days_to_payback"] is not None:
        out.append(
            f"payback{basis}: the ${pb['hardware_usd']} box pays for itself in {pb['days_to_payback']:,} days "
            f"({pb['payback_date'] or 'over a century'}) at {_money(pb['net_per_day_usd'])}/day vs {pb['reference']}"
        )
    elif pb["reference"]:
        out.append(f"payback{basis}: no positive net saving vs {pb['reference']} in this period")
    marginal = pb.get("marginal")
    if marginal and pb["reference"]:
        days = marginal["days_to_payback"]
        out.append(
            f"payback (marginal): {f'{days:,} days' if days is not None else 'no positive net saving'}"
            + (
                f" at {_money(marginal['net_per_day_usd'])}/day"
                if marginal["net_per_day_usd"] is not None
                else ""
            )
        )
    return out


def _basis_lines(data: dict[str, Any]) -> list[str]:
    """The all-in cost's terms and the marginal figures beside it."""
    if not _all_in(data):
        return []
    t = data["totals"]
    a = t["all_in_cost_usd"]
    head = data["payback"]["reference"]
    lines = [
        f"all-in (what owning the box cost in this period): {_money(a['total'])} = hardware write-off "
        f"{_money(a['hardware'])} + idle power {_money(a['idle_energy'])} + busy energy {_money(a['busy_energy'])}",
        f"marginal (what one more request costs, as on receipts): {_money(t['local_cost_usd']['total'])}"
        + (f", savings {_money(t['savings_usd'].get(head))} vs {head}" if head in t["savings_usd"] else ""),
    ]
    for b in data["all_in"]["boxes"]:
        on = f"{b['hours_on']} h/day" if b["hours_on"] is not None else "schedule " + ", ".join(b["schedule"])
        lines.append(
            f"box {b['box']}: on {on}; {_hours(b['on_seconds'])} on, {_hours(b['busy_seconds'])} busy, "
            f"{_hours(b['idle_seconds'])} idle of {_hours(b['period_seconds'])}"
        )
    return lines


def _hours(seconds: str) -> str:
    return f"{Decimal(seconds) / 3600:,.1f} h"


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

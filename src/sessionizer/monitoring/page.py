"""The status page: one server-rendered HTML page that refreshes itself (no script, no build step)."""

from __future__ import annotations

import time
from html import escape
from typing import Any, Iterable

import orjson

from .status import Snapshot, Throughput

REFRESH_SECONDS = 5

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#f6f7f9}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .5em}
.facts{color:#555}.facts b{color:#1d2330;font-weight:600}
.state{display:inline-block;padding:.15em .6em;border-radius:1em;font-weight:600;margin-right:.5em}
.ok{background:#d5f5dd;color:#14632b}.bad{background:#fde0df;color:#8a1c17}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}
th,td{padding:.35em .8em;border-bottom:1px solid #e4e6ea;text-align:right;vertical-align:top}
th{background:#eef0f4;font-weight:600}td.l,th.l{text-align:left}
td.detail{text-align:left;max-width:48em;word-break:break-word;font-size:.92em}
code,pre{font:12.5px ui-monospace,monospace}pre{background:#fff;padding:1em;box-shadow:0 1px 2px #0002;overflow:auto}
svg{background:#fff;box-shadow:0 1px 2px #0002}.muted{color:#888}
"""


def render(title: str, facts: dict[str, Any], live: tuple[bool, dict], ready: tuple[bool, dict],
           snapshot: Snapshot, throughput: Throughput, dead_letters: Iterable[bytes],
           config: dict[str, Any]) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _state(live, ready),
        '<p class="facts">' + " &middot; ".join(f"{escape(k)} <b>{escape(str(v))}</b>" for k, v in facts.items())
        + f' &middot; page of {escape(_utc(snapshot.taken_at))}</p>',
    ]
    if snapshot.partitions or facts.get("mode") == "run":
        parts += ["<h2>Partitions</h2>", _partitions(snapshot)]
    parts += ["<h2>Throughput</h2>", _throughput(throughput)]
    parts += ["<h2>Counts</h2>", _counts(snapshot)]
    parts += ["<h2>Last dead letters</h2>", _dead_letters(list(dead_letters))]
    parts += ["<h2>Config in effect</h2>", '<p class="muted">Secrets are shown as ***.</p>', _config(config)]
    parts.append("</body></html>")
    return "".join(parts)


def _state(live: tuple[bool, dict], ready: tuple[bool, dict]) -> str:
    is_live, live_body = live
    is_ready, ready_body = ready
    return ("<p>"
            + f'<span class="state {"ok" if is_live else "bad"}" id=live>{"live" if is_live else "stuck"}</span>'
            + f'<span class="state {"ok" if is_ready else "bad"}" id=ready>{"ready" if is_ready else "not ready"}'
            + "</span>"
            + escape(str(ready_body.get("why", "")))
            + (f" &middot; {escape(live_body['why'])}" if "why" in live_body else "")
            + "</p>")


def _partitions(snapshot: Snapshot) -> str:
    if not snapshot.partitions:
        return '<p class="muted">No partition assigned.</p>'
    aggregations = sorted({name for row in snapshot.partitions for name in row.open_windows})
    head = ("<tr><th>partition</th><th>lag (records)</th><th class=l>stream time (UTC)</th>"
            "<th>behind wall clock</th><th>open sessions</th>"
            + "".join(f"<th>open windows<br><code>{escape(name)}</code></th>" for name in aggregations)
            + "<th>records read</th></tr>")
    rows = []
    for row in snapshot.partitions:
        rows.append(
            f"<tr class=partition data-partition={row.partition}><td>{row.partition}</td>"
            f"<td>{'-' if row.lag is None else f'{row.lag:,}'}</td>"
            f"<td class=l>{'-' if row.stream_time_ms < 0 else escape(_utc(row.stream_time_ms / 1000))}</td>"
            f"<td>{'-' if row.behind_s is None else escape(_duration(row.behind_s))}</td>"
            f"<td>{row.open_sessions:,}</td>"
            + "".join(f"<td>{row.open_windows.get(name, 0):,}</td>" for name in aggregations)
            + f"<td>{row.records_read:,}</td></tr>")
    return f"<table id=partitions>{head}{''.join(rows)}</table>"


def _throughput(throughput: Throughput) -> str:
    rates = throughput.rates()
    summary = []
    for label, seconds in (("last minute", 60), ("last 5 minutes", 300), ("last 15 minutes", 900)):
        rate = throughput.rate_over(seconds)
        summary.append(f"{label}: <b>{'-' if rate is None else f'{rate:,.0f}'}</b> records/s")
    if not rates:
        return f"<p>{' &middot; '.join(summary)}</p>"
    width, height = 720, 120
    peak = max(rate for _, rate in rates) or 1.0
    step = width / max(len(rates), 1)
    bars = "".join(
        f'<rect x="{i * step:.1f}" y="{height - rate / peak * (height - 16):.1f}" width="{max(step - 1, 1):.1f}" '
        f'height="{rate / peak * (height - 16):.1f}" fill="#4a7bd0"><title>{escape(_utc(t))}: {rate:,.0f}/s'
        "</title></rect>"
        for i, (t, rate) in enumerate(rates))
    return (f"<p>{' &middot; '.join(summary)}</p>"
            f'<svg width="{width}" height="{height}" role="img" aria-label="records per second">{bars}'
            f'<text x="4" y="12" font-size="11" fill="#555">peak {peak:,.0f}/s</text></svg>')


def _counts(snapshot: Snapshot) -> str:
    cells = [("transactions " + result, f"{count:,}") for result, count in sorted(snapshot.transactions.items())]
    if snapshot.last_commit_at is not None:
        cells.append(("last commit", f"{_duration(time.time() - snapshot.last_commit_at)} ago"))
    if snapshot.transactions:
        cells += [("rewinds", f"{snapshot.rewinds:,}"), ("restores", f"{snapshot.restores:,}"),
                  ("producer queue", f"{snapshot.producer_queue:,}")]
    cells += [(f"dead letters {code}", f"{count:,}") for code, count in sorted(snapshot.dead_letters.items())]
    cells += [(label, f"{value:,}" if isinstance(value, int) else str(value)) for label, value in snapshot.extra.items()]
    rows = "".join(f"<tr><th class=l>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in cells)
    return f"<table id=counts>{rows}</table>"


def _dead_letters(letters: list[bytes]) -> str:
    if not letters:
        return '<p class="muted">None committed since this process started.</p>'
    rows = []
    for raw in reversed(letters):  # newest first
        try:
            letter = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        source = letter.get("source") or {}
        where = ", ".join(f"{k} {v}" for k, v in source.items()) if isinstance(source, dict) else str(source)
        rows.append(f"<tr class=dead-letter><td class=l><code>{escape(str(letter.get('error')))}</code></td>"
                    f"<td class=l>{escape(str(letter.get('aggregation') or '-'))}</td>"
                    f"<td class=detail>{escape(str(letter.get('detail', '')))}</td>"
                    f"<td class=l>{escape(where)}</td></tr>")
    return ("<table id=dead-letters><tr><th class=l>error</th><th class=l>aggregation</th><th class=l>detail</th>"
            f"<th class=l>source</th></tr>{''.join(rows)}</table>")


def _config(config: dict[str, Any]) -> str:
    blocks = []
    for title, value in config.items():
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()
        blocks.append(f"<h3>{escape(title)}</h3><pre>{escape(text)}</pre>")
    return "".join(blocks)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _duration(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    if seconds < 3600:
        return f"{sign}{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{sign}{seconds / 3600:.1f} h"
    return f"{sign}{seconds / 86400:.1f} d"

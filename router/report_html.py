"""The cost report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.

The tables show the same cells as the terminal report (router/report.py builds both), the
charts come from router/svg.py. Sections are a list, so another one is one more function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from html import escape

from .report import (
    TAG_HEADER,
    TURNAROUND_HEADER,
    DaySpend,
    Report,
    money,
    opportunity_header,
    opportunity_rows,
    seconds_text,
    tag_rows,
    turnaround_rows,
)
from .svg import Series, bar_chart

REALTIME_COLOR = "#dd6b20"
BATCH_COLOR = "#2b6cb0"
COUNTERFACTUAL_COLOR = "#1a202c"

# No script, no font, no image, nothing from anywhere: only the page's own inline styles.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
  max-width: 980px; color: #1a202c; background: #fff; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #e2e8f0; padding-bottom: 4px; }
p.note { color: #4a5568; font-size: 13px; margin: 4px 0 10px; }
.headline { display: flex; gap: 16px; flex-wrap: wrap; margin: 16px 0; }
.figure { border: 1px solid #e2e8f0; border-radius: 6px; padding: 10px 16px; min-width: 150px; }
.figure .value { font-size: 24px; font-weight: 600; }
.figure .label { font-size: 12px; color: #4a5568; }
#saving .value { color: #2f855a; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #edf2f7; text-align: right; white-space: nowrap; }
th { background: #f7fafc; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { border: 1px solid #edf2f7; border-radius: 4px; }
"""


def table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table of text cells."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(figure_id: str, value: str, label: str) -> str:
    return (
        f'<div class="figure" id="{figure_id}"><div class="value">{escape(value)}</div>'
        f'<div class="label">{escape(label)}</div></div>'
    )


def _headline(report: Report) -> str:
    s = report.summary
    return (
        '<div class="headline">'
        + _figure("saving", money(s.saving), f"saved to date ({s.saving_pct:.1f}% of all-real-time)")
        + _figure("spent", money(s.total_cost), "spent")
        + _figure("all-realtime", money(s.all_realtime_cost), "had everything gone real time")
        + _figure("requests", f"{s.requests:,}", "billed calls")
        + "</div>"
    )


def _lanes(report: Report) -> str:
    s = report.summary
    rows = [
        (name, f"{t.requests:,}", f"{t.tokens:,}", money(t.cost), money(t.realtime_cost))
        for name, t in (("realtime", s.realtime), ("batch", s.batch))
    ]
    rows.append(
        ("total", f"{s.requests:,}", f"{s.tokens:,}", money(s.total_cost), money(s.all_realtime_cost))
    )
    notes = []
    duplicates = s.realtime.duplicates + s.batch.duplicates
    if duplicates:
        notes.append(f"{duplicates} duplicate result(s) for requests already answered are included in cost.")
    unpriced = s.realtime.unpriced + s.batch.unpriced
    if unpriced:
        notes.append(
            f"{unpriced} call(s) of models with no known price: {', '.join(sorted(s.unknown_models))}."
        )
    return (
        "<h2>By lane</h2>"
        + table("lanes", ("lane", "calls", "tokens", "cost", "all-real-time"), rows)
        + "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    )


def _spend(report: Report) -> str:
    if not report.days:
        return '<h2>Spend per day</h2><p class="note">Nothing billed in this period.</p>'
    labels = [d.date[5:] for d in report.days]  # MM-DD
    chart = bar_chart(
        labels,
        [
            Series("batch", BATCH_COLOR, [d.batch for d in report.days]),
            Series("real time", REALTIME_COLOR, [d.realtime for d in report.days]),
        ],
        line=Series("all real time", COUNTERFACTUAL_COLOR, [d.all_realtime for d in report.days]),
        title="Spend per day (USD), stacked by lane, against sending everything real time",
        y_format=lambda v: f"${v:,.4g}",
        chart_id="spend",
    )
    return (
        "<h2>Spend per day</h2>"
        '<p class="note">Bars: what each lane billed (UTC days). Dashed line: what the same calls'
        " would have cost sent real time.</p>" + chart
    )


def _tags(report: Report) -> str:
    if not report.tags:
        return ""
    return (
        "<h2>By tag</h2>"
        '<p class="note">Cache hits: share of input tokens read from the prompt cache. Escalated:'
        " deferred calls a deadline sent real time. Missed: requests finished after their deadline.</p>"
        + table("tags", TAG_HEADER, tag_rows(report))
    )


def _opportunities(report: Report) -> str:
    if not report.opportunities:
        return ""
    classes = report.opportunities[0].options
    note = "; ".join(f"{c.name}: {c.flushes}" for c in classes) or "no batch class is configured"
    return (
        "<h2>Opportunities</h2>"
        '<p class="note">Tags whose calls went real time, and what those calls would have cost'
        f" through each batch class ({escape(note)}).</p>"
        + table("opportunities", opportunity_header(report), opportunity_rows(report))
    )


def _bucket_labels(bounds: Sequence[float]) -> list[str]:
    return [*(f"\u2264{seconds_text(b)}" for b in bounds), f">{seconds_text(bounds[-1])}"]


def _turnarounds(report: Report) -> str:
    if not report.turnarounds:
        return ""
    charts = "".join(
        bar_chart(
            _bucket_labels(m.bounds),
            [Series(f"{m.model}: batches", BATCH_COLOR, [float(n) for n in m.histogram])],
            title=f"Batch turnaround of {m.model}: batches per time bucket",
            y_format=lambda v: f"{v:g}",
            chart_id=f"turnaround-{index}",
            integers=True,
            width=480,
            height=220,
        )
        for index, m in enumerate(report.turnarounds)
    )
    return (
        "<h2>Batch turnaround</h2>"
        '<p class="note">From batch creation to its end at the API, per model, of every batch on record'
        " (whatever the period above).</p>"
        + table("turnarounds", TURNAROUND_HEADER, turnaround_rows(report))
        + f'<div class="charts">{charts}</div>'
    )


# The page's sections in order; each returns HTML ("" to leave itself out).
SECTIONS: list[Callable[[Report], str]] = [_headline, _spend, _lanes, _tags, _opportunities, _turnarounds]


def render_html(report: Report) -> str:
    """The whole page."""
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.generated_at))
    period = (
        f"since {DaySpend(report.since_day, 0, 0, 0).date}" if report.since_day is not None else "all history"
    )
    body = "".join(section(report) for section in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # The browser itself refuses every fetch and script: the page is complete as it is.
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        "<title>hybrid-router cost report</title>"
        f"<style>{_STYLE}</style></head><body>"
        f'<h1>hybrid-router cost report</h1><p class="note">{escape(period)}; generated {generated}.</p>'
        f"{body}</body></html>\n"
    )

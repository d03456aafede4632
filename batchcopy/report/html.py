"""`batchcopy report --html OUT.html`: one self-contained page about a run, for people
who look rather than query.

    progress   rows finished and CopyImageSet calls over time, against the quota line
               (the configured copy rate: the most the run could have done)
    durations  copy durations (the service's) and queue waits (started -> sent)
    causes     rows that did not succeed, by status and cause
    tables     FAILED / CONFLICT / UNKNOWN rows with their messages (rows that failed
               alike, same code and message, on one line with their count and row ids),
               NOT_RUN by cause, why rows were SKIPPED, the image sets the run created, the
               run's options and the package versions

The page fits a window 800 pixels wide without scrolling sideways: long ids and messages
wrap anywhere, charts scale to the width.

Charts are drawn by matplotlib as inline SVG (text kept as text): no script, no font, no
stylesheet and no image is fetched, so the page works offline, from a mail attachment or
a ticket. Curves are sampled on a fixed grid and tables are capped, so the page stays
small whatever the number of rows. matplotlib is an optional extra
(`pip install 'batchcopy[report]'`), imported only here.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.commands.report import ReportError
from batchcopy.report.view import PROBLEM_STATUSES, RunView, percentiles, run_line
from batchcopy.core.specs import Status

INSTALL_HINT = ("--html draws its charts with matplotlib, which is not installed: "
                "pip install 'batchcopy[report]'")
TABLE_ROWS = 500  # rows listed per status on the page
GRID = 300  # points per curve
COLORS = {"SUCCEEDED": "#2e7d32", "SKIPPED": "#78909c", "FAILED": "#c62828",
          "CONFLICT": "#ef6c00", "UNKNOWN": "#6a1b9a", "NOT_RUN": "#9e9e9e"}
CALLS, ROWS, QUOTA, REFUSED = "#1565c0", "#2e7d32", "#616161", "#c62828"


def require_plotting() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(INSTALL_HINT) from None


# ---------------------------------------------------------------- charts

def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=72, layout="constrained")
    return fig


def _svg(fig: Any) -> str:
    """The figure as an inline <svg> element: no XML prolog, no DOCTYPE (a URL), no RDF
    metadata (more URLs), ids salted so that two runs give the same text."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "batchcopy"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None,
                                                 "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return text


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _epoch(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _unit(span_s: float) -> tuple[float, str]:
    if span_s <= 180:
        return 1.0, "seconds"
    if span_s <= 3 * 3600:
        return 60.0, "minutes"
    if span_s <= 3 * 86400:
        return 3600.0, "hours"
    return 86400.0, "days"


def _cumulative(times: Sequence[float], grid: Any) -> Any:
    import numpy as np

    return np.searchsorted(np.sort(np.asarray(times, dtype=float)), grid, side="right")


def progress_chart(view: RunView) -> str | None:
    """Cumulative rows finished and calls sent (and refused) over time, with the quota."""
    import numpy as np

    finished, sent = list(view.finished_at), list(view.sent_at)
    if not finished and not sent:
        return None
    refused = [t for t, ok in zip(view.sent_at, view.call_accepted) if not ok]
    start = _epoch((view.run or {}).get("started_at"))
    t0 = min([t for t in (start,) if t is not None] + finished + sent)
    t1 = max(finished + sent)
    span = max(t1 - t0, 1e-3)
    scale, unit = _unit(span)
    grid = np.linspace(t0, t1, GRID)
    x = (grid - t0) / scale
    fig = _figure(12.0, 4.2)
    ax = fig.add_subplot()
    if sent:
        ax.step(x, _cumulative(sent, grid), where="post", color=CALLS, lw=2,
                label=f"CopyImageSet calls sent ({len(sent):,})")
    if refused:
        ax.step(x, _cumulative(refused, grid), where="post", color=REFUSED, lw=1.5,
                label=f"of them refused: throttled or invalid ({len(refused):,})")
    if finished:
        ax.step(x, _cumulative(finished, grid), where="post", color=ROWS, lw=2,
                label=f"rows finished ({len(finished):,})")
    rate = view.copy_rate()
    if rate and sent:
        first = min(sent)
        qx = np.array([first, t1])
        ax.plot((qx - t0) / scale, 1 + rate * (qx - first), color=QUOTA, lw=1.2, ls="--",
                label=f"quota line: {rate:g} CopyImageSet calls/s")
    ax.set_xlabel(f"{unit} since the run started")
    ax.set_ylabel("count")
    ax.set_xlim(0, span / scale)
    ax.set_ylim(bottom=0)
    _integer_ticks(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", frameon=False)
    return _svg(fig)


def durations_chart(view: RunView) -> str | None:
    copies, waits = list(view.copy_durations), list(view.queue_waits)
    if not copies and not waits:
        return None
    fig = _figure(12.0, 3.4)
    axes = fig.subplots(1, 2)
    for ax, values, title, color in (
            (axes[0], copies, "copy duration, copied rows", CALLS),
            (axes[1], waits, "queue wait (started -> sent), rows with a call", QUOTA)):
        ax.set_title(title, fontsize=10)
        if not values:
            ax.text(0.5, 0.5, "none in this run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax.hist(values, bins=min(40, max(5, len(values) // 2)), color=color, alpha=0.85)
        p = percentiles(values)
        ax.axvline(p["p50"], color="black", lw=1, ls=":")
        ax.set_xlabel(f"seconds (median {p['p50']:.2f}, p90 {p['p90']:.2f}, max {p['max']:.2f})")
        ax.set_ylabel("rows")
        _integer_ticks(ax.yaxis)
        ax.grid(alpha=0.3)
    return _svg(fig)


def causes_chart(view: RunView) -> str | None:
    if not view.causes:
        return None
    ranked = sorted(view.causes.items(), key=lambda kv: (-kv[1], kv[0]))[:15][::-1]
    labels = [f"{status} · {cause}" for (status, cause), _ in ranked]
    fig = _figure(12.0, 1.0 + 0.3 * len(ranked))
    ax = fig.add_subplot()
    bars = ax.barh(labels, [n for _, n in ranked], height=0.6,
                   color=[COLORS.get(status, "#9e9e9e") for (status, _), _ in ranked])
    ax.bar_label(bars, labels=[f"{n:,}" for _, n in ranked], padding=3)
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("rows")
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


# ---------------------------------------------------------------- the page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;
 margin:24px auto;max-width:1100px;padding:0 16px;color:#212121}
pre{white-space:pre-wrap} td.msg{min-width:12em}
h1,.sub,code,pre,td.msg,table.context td{overflow-wrap:anywhere}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.sub{color:#555;margin:0 0 16px}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.tile{border-radius:6px;padding:8px 14px;color:#fff;min-width:90px}
.tile b{display:block;font-size:22px}
.ok{background:#e8f5e9;border:1px solid #a5d6a7;padding:10px 14px;border-radius:6px}
figure{margin:8px 0 0} figure svg{width:100%;height:auto}
figcaption{color:#555;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e0e0e0;text-align:left;padding:4px 8px;vertical-align:top}
th{background:#f5f5f5} td.msg{white-space:pre-wrap;word-break:break-word}
code{font-size:12px} details{margin:6px 0}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _tiles(view: RunView) -> str:
    cells = [f'<div class="tile" style="background:#37474f"><b>{view.counts.rows:,}</b>rows</div>']
    for status, n in view.counts.by_status.items():
        if n:
            cells.append(f'<div class="tile" style="background:{COLORS.get(status, "#555")}">'
                         f"<b>{n:,}</b>{_e(status)}</div>")
    return '<div class="tiles" id="counts">' + "".join(cells) + "</div>"


def _ids(ids: list[str], total: int) -> str:
    shown = ", ".join(ids)
    return shown + (f" and {total - len(ids):,} more" if total > len(ids) else "")


def _problem_tables(view: RunView) -> str:
    """One table per status; rows that failed alike (same code and message) are one line
    with their count and row ids, so 48 identical failures are one line, not 48."""
    parts: list[str] = []
    for status in PROBLEM_STATUSES:
        total = view.counts.by_status.get(status.value, 0)
        if not total:
            continue
        groups = sorted((g for g in view.groups.values() if g.status == status.value),
                        key=lambda g: (-g.rows, g.first.manifest_row))[:TABLE_ROWS]
        extras = any(g.first.extras for g in groups)  # the manifest's own columns
        body = "".join(_group_row(g, extras) for g in groups)
        shown = sum(g.rows for g in groups)
        more = (f"<p>… and {total - shown:,} more rows: <code>batchcopy report SOURCE --output "
                f"json</code> lists them all.</p>" if total > shown else "")
        kinds = f"{len(groups):,} kind{'s' if len(groups) > 1 else ''}"
        alike = f" rows, {kinds} of failure" if len(groups) < total else ""
        parts.append(
            f'<h3>{_e(status.value)} ({total:,}{alike})</h3><p class="sub">{_e(view.meaning[status])}</p>'
            f'<table class="failures" data-status="{_e(status.value)}"><thead><tr><th>rows</th>'
            "<th>row_id</th><th>error code</th><th>message</th><th>source</th><th>destination</th>"
            + ("<th>extras</th>" if extras else "") + f"</tr></thead><tbody>{body}</tbody></table>{more}")
    not_run = view.counts.by_status.get(Status.NOT_RUN.value, 0)
    if not_run:
        causes = sorted(view.not_run.values(), key=lambda c: -c.rows)
        body = "".join(
            f"<tr><td>{c.rows:,}</td><td>{_e(c.error_code or '-')}</td><td class=\"msg\">"
            f"{_e(c.message or '-')}</td><td>{_e(_ids(c.row_ids, c.rows))}</td></tr>" for c in causes)
        parts.append(
            f'<h3>NOT_RUN ({not_run:,}) by cause</h3><p class="sub">{_e(view.meaning[Status.NOT_RUN])}</p>'
            '<table class="not-run"><thead><tr><th>rows</th><th>error code</th><th>cause</th>'
            f"<th>row ids</th></tr></thead><tbody>{body}</tbody></table>")
    return "".join(parts)


def _group_row(g: Any, extras: bool) -> str:
    p = g.first
    one = g.rows == 1
    rows = f"row {p.manifest_row}" if one else f"{g.rows:,} rows"
    source = (f"<code>{_e(p.source_image_set_id)}</code>" if g.one_source
              else "several image sets")
    dest = (f"<code>{_e(p.destination_image_set_id or 'new')}</code>" if one or g.one_source
            else "-")
    cells = (f"<td>{rows}</td><td>{_e(_ids(g.row_ids, g.rows))}</td><td>{_e(g.error_code or '-')}"
             f"</td><td class=\"msg\">{_e(g.message or '-')}</td><td>{source}</td><td>{dest}</td>")
    if extras:
        cells += f"<td>{_e(_extras(p.extras)) if one else ''}</td>"
    return f'<tr class="group" data-rows="{g.rows}">{cells}</tr>'


def _created(view: RunView) -> str:
    """The image sets the run's copies created (rows with no destination)."""
    if not view.created_total:
        return "<p>None: this run made no new image set.</p>"
    body = "".join(
        f"<tr><td><code>{_e(c.image_set_id)}</code></td><td>{_e(c.version_id or '-')}</td>"
        f"<td>{_e(c.status)}</td><td><code>{_e(c.source_image_set_id)}</code></td>"
        f"<td>{c.manifest_row}</td><td>{_e(c.row_id)}</td></tr>"
        for c in view.created[:TABLE_ROWS])
    more = (f"<p>… and {view.created_total - TABLE_ROWS:,} more: the report's "
            "<code>result_image_set_id</code> column has them all.</p>"
            if view.created_total > TABLE_ROWS else "")
    return (f'<p class="sub">{view.created_total:,} image set(s) created by this run\'s copies '
            "(a copy that ended COPY_FAILED still leaves its image set).</p>"
            '<table class="created"><thead><tr><th>image set</th><th>version</th><th>status</th>'
            f"<th>copied from</th><th>row</th><th>row_id</th></tr></thead><tbody>{body}</tbody>"
            f"</table>{more}")


def _skipped_reasons(view: RunView) -> str:
    if not view.skipped:
        return ""
    reasons = sorted(view.skipped.values(), key=lambda r: -r.rows)
    body = "".join(
        f"<tr><td>{r.rows:,}</td><td>{_e(r.label)}</td><td class=\"msg\">{_e(r.example or '-')}"
        f"</td><td>{_e(_ids(r.row_ids, r.rows))}</td></tr>" for r in reasons)
    return ("<h2>Why rows were SKIPPED</h2><p class=\"sub\">Nothing was copied for these rows, "
            "and nothing needs to be: their copies are there already.</p>"
            '<table class="skipped"><thead><tr><th>rows</th><th>why</th><th>evidence (one row)</th>'
            f"<th>row ids</th></tr></thead><tbody>{body}</tbody></table>")


def _extras(text: str | None) -> str:
    if not text:
        return ""
    try:
        found = json.loads(text)
    except ValueError:
        return text
    if isinstance(found, dict):
        return "; ".join(f"{k}: {v}" for k, v in found.items())
    return text


def _rate(value: Any) -> str:
    return f"{value:.3g}/s" if isinstance(value, (int, float)) else "-"


def _context(view: RunView) -> str:
    run = view.run or {}
    if not run:
        return ("<p>This report does not record its run's context (reports written by a run do, since "
                "report format 2).</p>")
    rows = []
    for key in ("run_id", "manifest", "journal", "report", "started_at", "finished_at",
                "exit_code", "stop_reason", "wall_time_s"):
        if run.get(key) is not None:
            rows.append(f"<tr><th>{_e(key)}</th><td>{_e(run[key])}</td></tr>")
    rate = run.get("copy_rate") or {}
    if rate:
        rows.append(f"<tr><th>CopyImageSet rate</th><td>{_rate(rate.get('achieved_per_s'))} achieved"
                    f" of {_rate(rate.get('configured_per_s'))} configured</td></tr>")
    calls = (run.get("api") or {}).get("calls")
    if calls:
        rows.append(f"<tr><th>API calls</th><td>{_e(', '.join(f'{k} {v}' for k, v in calls.items()))}"
                    "</td></tr>")
    versions = run.get("versions") or {}
    if versions:
        rows.append(f"<tr><th>versions</th><td>{_e(', '.join(f'{k} {v}' for k, v in versions.items()))}"
                    "</td></tr>")
    options = run.get("options")
    opts = (f"<details><summary>options of the run</summary><pre>{_e(json.dumps(options, indent=2))}"
            "</pre></details>") if options else ""
    return f'<table class="context">{"".join(rows)}</table>{opts}'


def render_html(view: RunView) -> str:
    title = f"batchcopy report: {view.source}"
    line = run_line(view)
    sections = [f"<h1>{_e(title)}</h1>",
                f'<p class="sub">{_e(line)}</p>' if line else "",
                _tiles(view)]
    if view.ok and view.counts.rows:
        sections.append(f'<p class="ok">{_e(view.meaning["ok"])}</p>')
    if view.earlier_rows:
        sections.append(f'<p class="sub">{view.earlier_rows:,} rows were done by earlier runs of this '
                        "journal: the charts show this run only.</p>")
    charts = (
        ("progress", "Progress", progress_chart(view),
         "Cumulative counts. The quota line is the configured CopyImageSet rate from the first "
         "call: calls cannot climb faster than it; a gap between calls and rows is copies in "
         "progress." + ("" if view.calls_from_journal else
                        " From a report file only the calls that carried rows to their end are "
                        "known; the journal has every attempt.")),
        ("durations", "Copy durations and queue waits", durations_chart(view),
         "Queue wait: from the row's start (reading versions, prechecks, waiting for the copy "
         "quota, earlier attempts) to its last call. Copy duration: from that call to the "
         "copy's end."),
        ("causes", "Rows that did not succeed, by cause", causes_chart(view), None),
    )
    for key, heading, svg, caption in charts:
        sections.append(f"<h2>{_e(heading)}</h2>")
        if svg is None:
            sections.append(f'<p class="sub" id="chart-{key}-empty">'
                            + ("No row failed." if key == "causes" else "Nothing to draw: no "
                               "call or finished row in this run.") + "</p>")
            continue
        sections.append(f'<figure class="chart" id="chart-{key}">{svg}'
                        + (f"<figcaption>{_e(caption)}</figcaption>" if caption else "")
                        + "</figure>")
    problems = _problem_tables(view)
    sections.append("<h2>Rows that went wrong</h2>" + (problems or "<p>None.</p>"))
    sections.append(_skipped_reasons(view))
    sections.append("<h2>Image sets this run created</h2>" + _created(view))
    sections.append("<h2>The run</h2>" + _context(view))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections.append(f'<p class="sub">Written by batchcopy report on {generated}.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(s for s in sections if s) + "</body></html>\n")


def write_html(view: RunView, path: Path) -> None:
    """Write the page atomically (parents created)."""
    from batchcopy.report.files import write_local_atomic

    write_local_atomic(render_html(view).encode("utf-8"), Path(path))

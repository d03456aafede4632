"""`batchcopy report [SOURCE]`: read a state (its ledger: a directory, a journal file, or
s3://bucket/prefix/; by default --state, BATCHCOPY_STATE or the state directory) or a report
(local or s3://), print what went wrong (a table, or JSON), and on request write the retry
manifest, the Parquet report (rebuilt from a ledger) and the HTML page.

    state    rows derived from the ledger (report/results.py) for its current manifest (the
             latest run's), the latest run's context and calls from its `runs` / `calls`
             tables; the report is rebuilt (--out, or reports/<state name>.parquet)
    report   the rows as written, the run's context from the file's metadata (format 2)
             or the summary JSON beside it
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchcopy.report.source import ReportError, Source, locate, open_source
from batchcopy.report.view import collect, default_limit, show


@dataclass
class Options:
    source: str | None  # None: the state (--state, BATCHCOPY_STATE, the state directory)
    output: str = "table"  # table | json
    html: Path | None = None
    limit: int | None = None  # None: the default for the output; 0: all
    failed_manifest: Path | None = None
    out: str | None = None
    state: str | None = None


def run(opts: Options) -> int:
    """Print the report of opts.source; 0 once read (whatever the rows' statuses), 2 if it
    cannot be read."""
    from batchcopy.report.retry_manifest import write_failed_manifest

    if opts.html is not None:
        from batchcopy.report.html import require_plotting

        require_plotting()  # before any work: the install hint, exit 2
    if opts.out is not None and locate(opts.source, opts.state) is None:
        raise ReportError("--out rebuilds a report from a journal; SOURCE is already a report")
    extra: dict[str, Any] = {}
    notes: list[str] = []
    with open_source(opts.source, opts.state) as src:
        if src.journal is not None:
            _rebuild(src, opts, extra, notes)
        if src.report_version is not None:
            extra["report_version"] = src.report_version
        view = collect(src.rows(), source=src.name, kind=src.kind, run=src.run, calls=src.calls,
                       limit=default_limit(opts.output, opts.limit))
        if opts.failed_manifest is not None:
            n = write_failed_manifest(src.rows(), opts.failed_manifest,
                                      form=(src.run or {}).get("manifest_form"))
            extra["failed_manifest"] = {"path": str(opts.failed_manifest), "rows": n}
            notes.append(f"{n} row(s) to retry written to {opts.failed_manifest}")
    if opts.html is not None:
        from batchcopy.report.html import write_html

        write_html(view, opts.html)
        extra["html"] = str(opts.html)
        notes.append(f"HTML report (one self-contained file, works offline): {opts.html}")
    show(view, opts.output, extra, notes)
    return 0


def _rebuild(src: Source, opts: Options, extra: dict[str, Any], notes: list[str]) -> None:
    """From a journal: write the Parquet report and its summary again."""
    from batchcopy.commands.run import write_outputs

    dest = opts.out or str(Path("reports") / f"{src.location.name}.parquet")
    stats = {k: v for k, v in (src.run or {}).items()
             if k not in ("rows", "by_status", "by_error_code")}
    summary = asyncio.run(write_outputs(src.journal, dest, {**stats, "journal": src.name,
                                                            "report": dest}))
    extra["report"] = summary.get("report", dest)
    notes.append(f"report rebuilt from the journal: {extra['report']}")

"""`batchcopy report SOURCE`: read a journal or a report (local or s3://), print what went
wrong (a table, or JSON), and on request write the retry manifest, the Parquet report
(rebuilt from a journal) and the HTML page.

    journal  rows derived from the ledger (results.py), the latest run's context and
             calls from its `runs` / `calls` tables; the report is rebuilt (--out, or
             reports/<journal>.parquet)
    report   the rows as written, the run's context from the file's metadata (format 2)
             or the summary JSON beside it
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.report_view import RunView, as_json, collect, render_table

TABLE_LIMIT = 50


class ReportError(Exception):
    """A source that cannot be read, or an output that cannot be made: one line, exit 2."""


@dataclass
class Options:
    source: str
    output: str = "table"  # table | json
    html: Path | None = None
    limit: int | None = None  # None: the default for the output; 0: all
    failed_manifest: Path | None = None
    out: str | None = None


def is_journal(source: str) -> bool:
    return source.endswith(".sqlite") or source.endswith(".journal")


def journal_context(journal: Any) -> dict[str, Any] | None:
    """The latest run of a journal as the report's run context (its stats flattened in)."""
    record = journal.run_record()
    if record is None:
        return None

    def iso(t: float | None) -> str | None:
        return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()

    return {**record["stats"], "run_id": record["run_id"], "manifest": record["manifest"],
            "started_at": iso(record["started_at"]), "finished_at": iso(record["finished_at"]),
            "exit_code": record["exit_code"]}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


@contextmanager
def _local_report(source: str) -> Iterator[Path]:
    from batchcopy import storage

    if not storage.is_s3(source):
        path = Path(source)
        if not path.is_file():
            raise ReportError(f"report not found: {source}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="batchcopy-report-") as tmp:
        try:
            yield asyncio.run(storage.download(source, Path(tmp)))
        except FileNotFoundError:
            raise ReportError(f"report not found: {source}") from None


def run(opts: Options) -> int:
    """Print the report of opts.source; 0 once read (whatever the rows' statuses), 2 if it
    cannot be read."""
    if opts.html is not None:
        from batchcopy.html_report import require_plotting

        require_plotting()  # before any work: the install hint, exit 2
    limit = opts.limit if opts.limit is not None else (TABLE_LIMIT if opts.output == "table" else 0)
    limit = limit or None
    extra: dict[str, Any] = {}
    notes: list[str] = []
    if is_journal(opts.source):
        view = _from_journal(opts, limit, extra, notes)
    else:
        view = _from_report(opts, limit, extra, notes)
    if opts.html is not None:
        from batchcopy.html_report import write_html

        write_html(view, opts.html)
        extra["html"] = str(opts.html)
        notes.append(f"HTML report (one self-contained file, works offline): {opts.html}")
    if opts.output == "json":
        json.dump(as_json(view, extra), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        for note in notes:
            print(note, file=sys.stderr)
    else:
        print(render_table(view))
        if notes:
            print()
        for note in notes:
            print(note)
    return 0


def _from_journal(opts: Options, limit: int | None, extra: dict[str, Any],
                  notes: list[str]) -> RunView:
    from batchcopy.job import write_outputs
    from batchcopy.journal import Journal, JournalError
    from batchcopy.results import journal_results
    from batchcopy.retry_manifest import write_failed_manifest

    if not Path(opts.source).exists():
        raise ReportError(f"journal not found: {opts.source}")
    try:
        journal = Journal(Path(opts.source), create=False)
    except JournalError as exc:
        raise ReportError(str(exc)) from None
    try:
        run = journal_context(journal)
        dest = opts.out or str(Path("reports") / (
            Path(opts.source).name.removesuffix(".journal.sqlite").removesuffix(".sqlite")
            + ".parquet"))
        stats = {k: v for k, v in (run or {}).items()
                 if k not in ("rows", "by_status", "by_error_code")}
        summary = asyncio.run(write_outputs(journal, dest, {**stats, "journal": opts.source,
                                                            "report": dest}))
        extra["report"] = summary.get("report", dest)
        notes.append(f"report rebuilt from the journal: {extra['report']}")
        calls = journal.run_calls(run["run_id"]) if run else None
        view = collect(journal_results(journal), source=opts.source, kind="journal", run=run,
                       calls=calls, limit=limit)
        if opts.failed_manifest is not None:
            n = write_failed_manifest(journal_results(journal), opts.failed_manifest)
            extra["failed_manifest"] = {"path": str(opts.failed_manifest), "rows": n}
            notes.append(f"{n} row(s) to retry written to {opts.failed_manifest}")
        return view
    finally:
        journal.close()


def _from_report(opts: Options, limit: int | None, extra: dict[str, Any],
                 notes: list[str]) -> RunView:
    from batchcopy.report import iter_report_rows, report_metadata
    from batchcopy.retry_manifest import write_failed_manifest
    from batchcopy.summary import summary_path

    if opts.out is not None:
        raise ReportError("--out rebuilds a report from a journal; SOURCE is already a report")
    with _local_report(opts.source) as local:
        try:
            meta = report_metadata(local)
        except Exception as exc:  # not Parquet, truncated...
            raise ReportError(f"{opts.source} is not a readable batchcopy report: {exc}") from None
        run = meta["run"]
        if run is None and local == Path(opts.source):  # a format-1 report: its summary JSON
            run = _read_json(Path(summary_path(opts.source)))
            if run is not None:
                run = {k: v for k, v in run.items() if k not in ("rows", "by_status", "by_error_code")}
        extra["report_version"] = meta["report_version"]
        view = collect(iter_report_rows(local), source=opts.source, kind="report", run=run,
                       limit=limit)
        if opts.failed_manifest is not None:
            n = write_failed_manifest(iter_report_rows(local), opts.failed_manifest)
            extra["failed_manifest"] = {"path": str(opts.failed_manifest), "rows": n}
            notes.append(f"{n} row(s) to retry written to {opts.failed_manifest}")
    return view

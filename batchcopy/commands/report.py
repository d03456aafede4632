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
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.report.parquet import RowResult
from batchcopy.report.view import RunView, as_json, collect, render_table

TABLE_LIMIT = 50


class ReportError(Exception):
    """A source that cannot be read, or an output that cannot be made: one line, exit 2."""


@dataclass
class Options:
    source: str | None  # None: the state (--state, BATCHCOPY_STATE, the state directory)
    output: str = "table"  # table | json
    html: Path | None = None
    limit: int | None = None  # None: the default for the output; 0: all
    failed_manifest: Path | None = None
    out: str | None = None
    state: str | None = None


def locate(source: str | None, state: str | None = None) -> Any:
    """The state SOURCE names (None: SOURCE is a report); with no SOURCE, --state /
    BATCHCOPY_STATE / the state directory."""
    from batchcopy.journal.state import StateError, resolve, source_location

    try:
        return source_location(source) if source else resolve(state)
    except StateError as exc:
        raise ReportError(str(exc)) from None


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


@dataclass
class Source:
    """A journal or a report, opened: its rows (read again at each call), the run's
    context, and (from a journal) the run's calls and the journal itself."""

    name: str
    kind: str  # "journal" (a state's ledger) | "report"
    run: dict[str, Any] | None
    rows: Callable[[], Iterator[RowResult]]
    calls: list[tuple[float, str, str | None]] | None = None
    journal: Any = None
    report_version: str | None = None
    location: Any = None  # the state, for a ledger


@contextmanager
def open_source(source: str | None, state: str | None = None) -> Iterator[Source]:
    """Open a state's ledger or a report (local or s3://); a source that cannot be read is
    a ReportError."""
    location = locate(source, state)
    if location is not None:
        with _ledger(location) as found:
            yield found
    else:
        assert source is not None
        with _local_report(source) as local:
            yield _report(source, local)


@contextmanager
def _ledger(location: Any) -> Iterator[Source]:
    from batchcopy.journal.state import StateError, StateUnavailable, open_for_reading
    from batchcopy.report.results import journal_results

    try:
        opened = open_for_reading(location)
    except (StateError, StateUnavailable) as exc:
        raise ReportError(str(exc)) from None
    try:
        journal = opened.journal
        name = location.url if location.kind == "s3" else str(journal.path)
        run = journal_context(journal)
        calls = journal.run_calls(run["run_id"]) if run else None
        yield Source(name, "journal", run, lambda: journal_results(journal), calls, journal,
                     location=location)
    finally:
        opened.close()


def _report(source: str, local: Path) -> Source:
    from batchcopy.report.parquet import iter_report_rows, report_metadata
    from batchcopy.report.summary import summary_path

    try:
        meta = report_metadata(local)
    except Exception as exc:  # not Parquet, truncated...
        raise ReportError(f"{source} is not a readable batchcopy report: {exc}") from None
    run = meta["run"]
    if run is None and local == Path(source):  # a format-1 report: the summary JSON beside it
        run = _read_json(Path(summary_path(source)))
        if run is not None:
            run = {k: v for k, v in run.items() if k not in ("rows", "by_status", "by_error_code")}
    return Source(source, "report", run, lambda: iter_report_rows(local),
                  report_version=meta["report_version"])


@contextmanager
def _local_report(source: str) -> Iterator[Path]:
    from batchcopy.aws import storage

    if not storage.is_s3(source):
        path = Path(source)
        if not path.is_file():
            raise ReportError(f"report not found: {source}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="batchcopy-report-") as tmp:
        try:
            local = asyncio.run(storage.download(source, Path(tmp)))
        except FileNotFoundError:
            raise ReportError(f"report not found: {source}") from None
        yield local


def default_limit(output: str, limit: int | None) -> int | None:
    """Rows listed per status: --limit, else 50 in a table and all in JSON (0 = all)."""
    chosen = limit if limit is not None else (TABLE_LIMIT if output == "table" else 0)
    return chosen or None


def show(view: RunView, output: str, extra: dict[str, Any], notes: list[str], *,
         out: Any = None) -> None:
    """Print the view as a table (then the notes) or as JSON (the notes to stderr)."""
    out = out or sys.stdout
    if output == "json":
        json.dump(as_json(view, extra), out, indent=2, default=str)
        out.write("\n")
        for note in notes:
            print(note, file=sys.stderr)
        return
    print(render_table(view), file=out)
    if notes:
        print(file=out)
    for note in notes:
        print(note, file=out)


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

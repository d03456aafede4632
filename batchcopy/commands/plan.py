"""`batchcopy plan`: a run previewed, without calling the service.

One streaming pass over the manifest (scan_manifest: every check `validate` makes, the
cross-row rules included) feeds the forecast (plan/forecast.py); with `--rows` each row's plan
is written as soon as its batch is planned, so a million-row manifest never sits in
memory. An invalid manifest exits 2, like `validate` and `run`.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
from typing import Any, TextIO

from batchcopy.core.durations import human_duration
from batchcopy.plan.forecast import DEFAULT_COPY_SECONDS, Figures, Forecaster


def run_plan(manifest: str, *, datastore_id: str | None, delimiter: str | None,
             extra_columns: str, merge: bool, copy_rate: float, rate_given: bool,
             copy_seconds: float | None, rows: bool, output: str,
             out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the plan of `manifest`; the exit code (0, or 2 for an unusable manifest)."""
    from batchcopy.cli.options import local_manifest as _local_manifest
    from batchcopy.manifest.scan import ManifestInvalid, scan_manifest

    out = out or sys.stdout
    err = err or sys.stderr
    copy_s = DEFAULT_COPY_SECONDS if copy_seconds is None else copy_seconds
    as_json = output == "json"
    forecaster = Forecaster(merge=merge, rows=rows)
    with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
        local = _local_manifest(manifest, tmp)
        try:
            scan = scan_manifest(local, display_name=manifest, default_datastore_id=datastore_id,
                                 delimiter=delimiter, extra_columns=extra_columns)  # type: ignore[arg-type]
        except FileNotFoundError:
            return _invalid(manifest, [f"manifest not found: {manifest}"], 1, as_json, out, err)
        except ManifestInvalid as exc:
            return _invalid(manifest, [str(e) for e in exc.errors], len(exc.errors), as_json,
                            out, err)
        if as_json:
            out.write("{" + json.dumps("manifest") + ": " + json.dumps(manifest))
            if rows:
                out.write(', "row_plans": [')
        first = True
        # nothing planned here makes reference cycles: the cyclic collector would only
        # walk the planner's million entries again and again
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            for batch in scan:
                for row in forecaster.add_batch(batch):
                    if as_json:
                        out.write(("" if first else ",") + "\n  " + json.dumps(row.as_dict()))
                    else:
                        out.write(f"row {row.row_id}: {row.describe()}\n")
                    first = False
        finally:
            if gc_was_on:
                gc.enable()
        report = scan.report
    figures = forecaster.figures()
    if as_json:
        if rows:
            out.write("\n]")
        body: dict[str, Any] = {"valid": report.ok,
                                "errors": [str(e) for e in report.errors[:1000]],
                                "error_count": len(report.errors) + report.more_errors}
        if report.ok:
            body.update(figures.as_dict(copy_rate, copy_s))
            body["time"]["rate_source"] = "--rate" if rate_given else "published default quota"
        out.write(", " + json.dumps(body, indent=2)[1:].rstrip() + "\n")
    if not report.ok:
        total = len(report.errors) + report.more_errors
        if not as_json:
            for e in report.errors[:200]:
                err.write(f"{e}\n")
            if total > 200:
                err.write(f"... and {total - 200} more\n")
        err.write(f"batchcopy: {manifest}: {total} error(s); nothing would be sent\n")
        return 2
    if not as_json:
        out.write("\n".join(describe(manifest, figures, copy_rate, copy_s, rate_given)) + "\n")
    return 0


def _invalid(manifest: str, errors: list[str], count: int, as_json: bool, out: TextIO,
             err: TextIO) -> int:
    if as_json:
        out.write(json.dumps({"manifest": manifest, "valid": False, "errors": errors,
                              "error_count": count}, indent=2) + "\n")
    else:
        for e in errors:
            err.write(f"{e}\n")
    err.write(f"batchcopy: {manifest}: cannot be planned; nothing would be sent\n")
    return 2


def _n(value: int, one: str, many: str | None = None) -> str:
    return f"{value:,} {one if value == 1 else (many or one + 's')}"


def describe(manifest: str, f: Figures, rate: float, copy_s: float, rate_given: bool) -> list[str]:
    """The plan in a few lines."""
    t = f.total
    stores = len(f.stores)
    lines = [f"{manifest}: {_n(t.rows, 'row')}, valid ({_n(stores, 'data store')})"]
    merged = (f": {_n(t.merged_calls, 'merged call')} carry {_n(t.rows_in_merged_calls, 'row')} "
              f"({_n(t.rows - t.calls, 'call')} saved)" if t.merged_calls else " (no rows merged)")
    lines.append(f"  {_n(t.rows, 'row')} -> {_n(t.calls, 'CopyImageSet call')}{merged}")
    lines.append(f"  {_n(t.new_image_set_calls, 'call')} make new image sets, "
                 f"{t.existing_destination_calls:,} copy into existing image sets")
    chain = f.longest
    if chain is not None and chain.calls > 1:
        lines.append(f"  {_n(t.chained_calls, 'call')} wait for an earlier copy of the same "
                     f"image set; the longest chain is {_n(chain.calls, 'call')}, ending with "
                     f"row {chain.last_row_id} (image set {chain.image_set_id})")
    else:
        lines.append("  no call waits for another: every call can run as soon as the quota allows")
    source = "from --rate" if rate_given else "the published default quota; raise it with --rate"
    lines.append(f"time at CopyImageSet {rate:g}/s ({source}):")
    lines.append(f"  about {human_duration(f.seconds(rate, copy_s))}; sending the calls takes "
                 f"{human_duration(f.send_seconds(rate))}")
    if chain is not None and chain.calls > 1:
        lines.append(f"  the longest chain alone takes {human_duration(f.chain_seconds(rate, copy_s))}"
                     f" ({chain.calls} copies one after another, {copy_s:g} s each assumed: "
                     f"--copy-seconds)")
    if stores > 1:
        lines.append("per data store:")
        lines.append(f"  {'datastore_id':<32}  {'rows':>9}  {'calls':>9}  {'merged':>7}  "
                     f"{'new sets':>9}  {'existing':>9}  {'chain':>6}")
        for s in f.stores:
            lines.append(f"  {s.datastore_id:<32}  {s.rows:>9,}  {s.calls:>9,}  "
                         f"{s.merged_calls:>7,}  {s.new_image_set_calls:>9,}  "
                         f"{s.existing_destination_calls:>9,}  {s.longest_chain:>6,}")
    lines.append("(as a first run: running a manifest again skips the rows done before)")
    return lines


def confirmation_text(figures: Figures, rate: float, copy_s: float = DEFAULT_COPY_SECONDS) -> str:
    """The figures `batchcopy run` shows before it asks."""
    t = figures.total
    text = (f"{_n(t.rows, 'row')} to copy: {_n(t.calls, 'CopyImageSet call')}"
            + (f" ({_n(t.rows - t.calls, 'call')} saved by merging)" if t.rows > t.calls else "")
            + f"; about {human_duration(figures.seconds(rate, copy_s))} at {rate:g} calls/s")
    if figures.longest is not None and figures.longest.calls > 1:
        text += f"; longest chain {_n(figures.longest.calls, 'call')}"
    if figures.rows_not_runnable:
        text += f". {_n(figures.rows_not_runnable, 'row')} done before are skipped"
    return text

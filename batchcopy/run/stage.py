"""Stage a manifest into the ledger before a run: read it once, validate it, and commit it in
one transaction, only after this machine's holds on its image sets are taken.

    scan      manifest/scan.py, streamed into the open staging transaction (nothing is
              visible before the commit)
    prepare   rows a run attempts again go back to PENDING; `--fresh`: the manifest's rows
              forget their status (rows whose call is still open keep it: they are settled
              first, never copied twice)
    holds     the image sets its pending rows may write, machine-wide (journal/holds.py):
              HeldElsewhere (exit 4) rolls everything back
    commit    the committer's: the local file, or S3 (journal/s3commit.py)

So `--fresh` changes nothing until the state's lock (taken before staging) and the holds
are this run's.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchcopy.aws.preflight import SetupError
from batchcopy.console import logs
from batchcopy.journal.holds import Holds, state_unwritable


@dataclass(frozen=True)
class Staged:
    rows: int


def say_invalid(text: str, **fields: Any) -> None:
    logs.say(f"batchcopy: invalid manifest, nothing was sent{text}", level=logging.ERROR,
             event="invalid_manifest", **fields)


def stage_manifest(journal: Any, local: Path, opts: Any, *, holds: Holds, scope: str,
                   state: str) -> Staged | None:
    """Stage `local` (opts.manifest) into `journal`. None if the manifest is invalid (the
    errors are printed; the ledger is left as it was). HeldElsewhere if another run on this
    machine holds its image sets; SetupError if the ledger cannot be written."""
    from batchcopy.journal.s3io import StateUnavailable
    from batchcopy.manifest.scan import ManifestInvalid, scan_manifest

    try:
        scan = scan_manifest(local, display_name=opts.manifest,
                             default_datastore_id=opts.datastore_id, delimiter=opts.delimiter,
                             extra_columns=opts.extra_columns)
    except ManifestInvalid as exc:
        say_invalid(f":\n{exc}")
        return None
    journal.begin_manifest()
    committed = False
    try:
        for batch in scan:
            journal.stage(batch)
        report = scan.report
        if not report.ok:
            total = len(report.errors) + report.more_errors
            listed = "\n".join(f"  {err}" for err in report.errors[:50])
            more = (f"\n  ... and {total - 50} more (batchcopy validate lists them)"
                    if total > 50 else "")
            say_invalid(f" ({total} error(s)):\n{listed}{more}",
                        errors=[str(e) for e in report.errors[:50]])
            return None
        journal.set_manifest_form(scan.form)  # report --failed-manifest writes this form
        if opts.resume and not journal.staged_known():
            raise SetupError(f"--resume: the state {state} knows none of the rows of "
                             f"{opts.manifest}: nothing to resume (run without --resume to "
                             "start, or give the right --state/--journal)")
        statements = journal.prepare_manifest(fresh=opts.fresh)
        try:
            holds.acquire(scope, journal.staged_image_sets(), manifest=opts.manifest,
                          journal=state)
        except (OSError, sqlite3.Error) as exc:  # the holds' file, not the ledger
            raise SetupError(state_unwritable(exc)) from None
        try:
            journal.commit_staged(statements)
        except StateUnavailable as exc:
            raise SetupError(f"cannot write the state {state}: {exc}; nothing was sent") from None
        committed = True
    except ManifestInvalid as exc:
        say_invalid(f":\n{exc}")
        return None
    except sqlite3.Error as exc:
        raise SetupError(f"cannot write the journal {journal.path}: {exc}") from None
    finally:
        if not committed:
            journal.rollback_manifest()
    if opts.fresh:
        logs.say(f"batchcopy: --fresh: the rows of {opts.manifest} in {state} start over "
                 "(rows another call may still be copying are settled first)")
    return Staged(report.rows)

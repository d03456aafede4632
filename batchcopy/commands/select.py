"""`batchcopy select`: write a manifest from a query of a data store (query/), ready for
`validate`, `plan` and `run` as it is.

    checks     --where, --out, endpoint, profile, region, credentials     (exit 2, no call)
    into       --into names an image set of the data store (GetImageSet)   (exit 2)
    select     query/selector.py, with a progress line; rows go to the manifest as they come
    publish    the manifest at --out (local or s3://), once complete
    summary    what was searched, read and selected; what could not be written as asked

Exit codes: 0 the manifest is written (or nothing matched: no manifest), 1 some image sets
could not be read (the manifest lacks them; the same command again reads only those),
2 usage or setup, 3 credentials or access refused, 130 interrupted (what was read is kept
in the cache: the same command continues).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from batchcopy.core.durations import human_duration
from batchcopy.core.specs import ExitCode

if TYPE_CHECKING:
    from batchcopy.aws.api import ImagingApi
    from batchcopy.console.logs import ConsoleOptions, LogSetup
    from batchcopy.query.selector import Tally
    from batchcopy.query.where import Query


@dataclass
class SelectOptions:
    datastore_id: str
    out: str
    where: list[str] = field(default_factory=list)
    into: str | None = None
    force: bool = False
    pin: bool = False
    limit: int | None = None
    rates: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    concurrency: int = 16
    cache: bool = True
    console: ConsoleOptions | None = None  # --progress, --log-*, -v; None: defaults


STOPPED = ("batchcopy select: interrupted, no manifest written; what was read is kept: the "
           "same command continues from there")


class SelectSetupError(Exception):
    """A mistake found before or at the first call: one line, exit 2."""


def run_select(opts: SelectOptions, *, stream: TextIO | None = None) -> int:
    from batchcopy.aws import preflight
    from batchcopy.console import logs
    from batchcopy.manifest.cells import ID_RE
    from batchcopy.query.where import WhereError, parse

    err = stream or sys.stderr
    console = opts.console or logs.ConsoleOptions()
    try:
        if not ID_RE.fullmatch(opts.datastore_id):
            raise SelectSetupError(f"--datastore-id {opts.datastore_id!r} is not a data store id "
                                   "(32 characters [0-9a-z])")
        if opts.into is not None and not ID_RE.fullmatch(opts.into):
            raise SelectSetupError(f"--into {opts.into!r} is not an image set id (32 characters "
                                   "[0-9a-z])")
        query = parse(opts.where, base=Path.cwd())
        preflight.check_manifest_destination(opts.out)
        preflight.check_endpoint(opts.endpoint_url)
        region = preflight.check_aws(opts.profile, opts.region)
        setup = logs.configure(level=console.log_level, fmt=console.log_format,
                               file=console.log_file, stream=err)
    except (SelectSetupError, WhereError, preflight.SetupError) as exc:
        print(f"batchcopy select: {exc}", file=err, flush=True)
        return int(ExitCode.USAGE)
    except OSError as exc:
        print(f"batchcopy select: --log-file: cannot open {console.log_file}: "
              f"{exc.strerror or exc}", file=err, flush=True)
        return int(ExitCode.USAGE)
    try:
        return asyncio.run(_select(opts, query, region, err, setup, console))
    except SelectSetupError as exc:
        logs.say(f"batchcopy select: {exc}", level=logging.ERROR, event="setup_error")
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        logs.say(STOPPED, event="interrupted")
        return int(ExitCode.INTERRUPTED)
    finally:
        setup.close()


async def _select(opts: SelectOptions, query: Query, region: str, err: TextIO,
                  setup: LogSetup, console: ConsoleOptions) -> int:
    from batchcopy.aws.client import CallStats, ClientSettings, ImagingApi, open_client
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.journal.holds import state_dir
    from batchcopy.query.cache import SeriesCache, cache_path
    from batchcopy.query.output import ManifestWriter
    from batchcopy.console import logs
    from batchcopy.console.stopsignals import stop_on_signals
    from batchcopy.query.selector import SelectAborted, Selector

    stats = CallStats()
    settings = ClientSettings(endpoint_url=opts.endpoint_url, region=region, profile=opts.profile,
                              max_pool_connections=max(10, opts.concurrency + 10))
    cache = SeriesCache(cache_path(state_dir(), opts.datastore_id) if opts.cache else None)
    writer = ManifestWriter(opts.out)
    started = time.monotonic()
    try:
        async with open_client(settings) as client:
            api = ImagingApi(client, RateLimiter(opts.rates), stats=stats)
            if opts.into is not None:
                await _check_into(api, opts.datastore_id, opts.into)
            selector = Selector(api, opts.datastore_id, query, into=opts.into, force=opts.force,
                                pin=opts.pin, limit=opts.limit, cache=cache,
                                concurrency=opts.concurrency, now=time.time())
            ticker = Ticker(selector.tally, _mode(console.progress, setup, err),
                            console.log_interval_s, err, started, lines=setup.to_file)
            task = asyncio.create_task(ticker.run())
            work = asyncio.create_task(selector.run(writer.write))
            try:
                with stop_on_signals(asyncio.get_running_loop(), work.cancel, "",
                                     announce=lambda _, name: logs.say(
                                         f"batchcopy select: {name}: stopping (signal again to "
                                         "exit at once)", event="stopping", signal=name)):
                    await work
            except asyncio.CancelledError:
                if not work.cancelled():
                    raise
                writer.abort()
                ticker.close()
                logs.say(STOPPED, event="interrupted")
                return int(ExitCode.INTERRUPTED)
            except BaseExceptionGroup as group:  # the select's task group: its first error
                first = _first(group)
                if isinstance(first, SelectAborted) or _run_fatal(first):
                    from batchcopy.aws.retry import error_code, error_message

                    why = first if isinstance(first, SelectAborted) else \
                        f"{error_code(first)}: {error_message(first)}"
                    writer.abort()
                    ticker.close()
                    logs.say(f"batchcopy select: stopped: {why} (nothing more can be read with "
                             "these credentials)", level=logging.ERROR, event="aborted")
                    return int(ExitCode.ABORTED)
                raise _setup_or_bug(first, opts) from None
            finally:
                task.cancel()
                ticker.close()
        written = await writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        cache.close()
    tally = selector.tally
    logs.say(summary_text(tally, query.describe(), written, opts, stats.to_dict(),
                          time.monotonic() - started), event="select_summary",
             manifest=written, image_sets=tally.found, candidates=tally.candidates,
             reads=tally.reads, cached=tally.cached, selected=tally.selected, rows=tally.rows,
             unreadable=len(tally.unreadable), api=stats.to_dict())
    return int(ExitCode.ROWS_FAILED if tally.unreadable else ExitCode.OK)


async def _check_into(api: ImagingApi, datastore_id: str, into: str) -> None:
    from botocore.exceptions import ClientError

    from batchcopy.aws.retry import error_code

    try:
        await api.get_image_set(datastore_id, into)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise SelectSetupError(f"--into {into}: no such image set in data store "
                                   f"{datastore_id}") from None
        raise


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _run_fatal(exc: BaseException) -> bool:
    """Credentials or access refused (exit 3, as `run` and `verify`)."""
    from batchcopy.aws.retry import ErrorKind, classify

    return isinstance(exc, Exception) and classify(
        exc, operation="SearchImageSets") is ErrorKind.RUN_FATAL


def _setup_or_bug(exc: BaseException, opts: SelectOptions) -> BaseException:
    """A failed select's error: a data store the service does not know, or a search it
    refuses, as a setup error (exit 2); the rest as it is."""
    from batchcopy.aws.retry import error_code, error_message

    code = error_code(exc) if isinstance(exc, Exception) else None
    if code == "ResourceNotFoundException":
        return SelectSetupError(f"--datastore-id {opts.datastore_id}: {error_message(exc)}")
    if code == "ValidationException":
        return SelectSetupError(f"the service refused the search: {code}: {error_message(exc)}")
    return exc


def _mode(progress: str, setup: LogSetup, err: TextIO) -> str:
    """--progress as run reads it (a bar where a person watches, else stats lines); a
    terminal with no size gets stats lines."""
    from batchcopy.console.logs import display_mode
    from batchcopy.console.tally import terminal_columns

    mode = display_mode(progress, setup)
    return "log" if mode == "bar" and terminal_columns(err) == 0 else mode


WINDOW_S = 15.0  # the progress line's rates are over this many seconds


class Ticker:
    """The select's progress: a line redrawn on a terminal (`bar`), or a stats record every
    `interval` seconds (`log`, off a terminal, and into --log-file with `lines`: timestamped
    text or JSON, event select_stats); nothing with `off`."""

    def __init__(self, tally: Tally, mode: str, interval: float, stream: TextIO, started: float,
                 *, lines: bool = False) -> None:
        self.tally, self.mode, self.interval, self.stream = tally, mode, interval, stream
        self.lines = mode == "log" or (lines and mode != "off")
        self.started = started
        self._last = started
        self._drawn = False
        self._samples: deque[tuple[float, int, int]] = deque()  # (time, examined, reads)

    async def run(self) -> None:
        if self.mode == "off":
            return
        self._samples.append((time.monotonic(), self.tally.examined, self.tally.reads))
        while True:
            await asyncio.sleep(min(0.5, self.interval) if self.mode == "bar" else self.interval)
            self.show()

    def rates(self, now: float) -> tuple[float, float]:
        """(reads/s, candidates examined/s) over the last WINDOW_S seconds: a burst at the
        start (the quota's) or a stretch of cached image sets does not stay in the figure."""
        self._samples.append((now, self.tally.examined, self.tally.reads))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW_S:
            self._samples.popleft()
        then, examined, reads = self._samples[0]
        span = now - then
        if span <= 0:
            return 0.0, 0.0
        return (self.tally.reads - reads) / span, (self.tally.examined - examined) / span

    def show(self) -> None:
        from batchcopy.console import logs
        from batchcopy.console.tally import terminal_columns

        now = time.monotonic()
        reads_s, examined_s = self.rates(now)
        line = progress_line(self.tally, reads_s, examined_s)
        if self.mode == "bar":
            width = max(20, terminal_columns(self.stream) - 1)
            self.stream.write("\r" + line[:width].ljust(width))
            self.stream.flush()
            self._drawn = True
        if self.lines and now - self._last >= self.interval - 0.01:
            self._last = now
            t = self.tally
            logs.emit(logs.NOTICE, "select_stats", line, image_sets=t.found,
                      candidates=t.candidates, search_done=t.search_done, examined=t.examined,
                      reads=t.reads, cached=t.cached, selected=t.selected, rows=t.rows,
                      reads_per_s=round(reads_s, 2))

    def close(self) -> None:
        if self._drawn:
            self._drawn = False
            self.stream.write("\n")
            self.stream.flush()


def progress_line(tally: Tally, reads_s: float, examined_s: float) -> str:
    """select: searched N, M match; examined E (read R, cached C); selected S (rows); the
    recent read rate; the time left once the search is done (at the recent pace)."""
    searched = f"searched {tally.found:,} image sets" + ("" if tally.search_done else "...")
    parts = [f"select: {searched}, {tally.candidates:,} match the study conditions",
             f"examined {tally.examined:,} (read {tally.reads:,}, cached {tally.cached:,})",
             f"selected {tally.selected:,} ({tally.rows:,} rows)"]
    if tally.reads:
        parts.append(f"{reads_s:.1f} reads/s")
    left = tally.candidates - tally.examined
    if tally.search_done and examined_s > 0 and left > 0:
        parts.append(f"about {human_duration(left / examined_s)} left")
    return "; ".join(parts)


def summary_text(tally: Tally, described: str, written: str | None, opts: SelectOptions,
                 api: dict[str, Any], wall_s: float) -> str:
    calls = ", ".join(f"{op} {n:,}" for op, n in (api.get("calls") or {}).items()) or "none"
    lines = [f"batchcopy select: {tally.found:,} image set(s) searched ({tally.pages:,} page(s)), "
             f"{tally.candidates:,} match the study conditions; {tally.reads:,} read, "
             f"{tally.cached:,} from the cache; calls: {calls}; {human_duration(wall_s)}",
             f"where {described}: {tally.selected:,} source image set(s) selected, "
             f"{tally.rows:,} row(s)" + (f" (stopped at --limit {opts.limit})" if tally.limited else "")]
    if tally.not_primary:
        lines.append(f"  {tally.not_primary:,} of them not primary image sets (copies made "
                     "earlier, e.g. by a run): --where IsPrimary=true leaves them out")
    if tally.no_match:
        lines.append(f"  {tally.no_match:,} read but no series matched")
    if tally.gone:
        lines.append(f"  {tally.gone:,} deleted since the search (left out)")
    if tally.split:
        lines.append(f"  {len(tally.split):,} source(s) with more than 1,000 frames in the matching "
                     f"series: several rows each, so several new image sets (e.g. {tally.split[0]})")
    if tally.left_out:
        source, uid = tally.left_out[0]
        lines.append(f"  {len(tally.left_out):,} series above 1,000 frames left out: one copy "
                     f"cannot carry them into a new image set (e.g. series {uid} of {source}); "
                     "--into an existing image set takes them instance by instance")
    if tally.unreadable:
        source, why = tally.unreadable[0]
        lines.append(f"  {len(tally.unreadable):,} image set(s) could not be read (e.g. {source}: "
                     f"{why}): the manifest lacks them; run the same command again (what was "
                     "read is not read again)")
    if written is None:
        lines.append("nothing matched: no manifest written")
        return "\n".join(lines)
    out = shlex.quote(written)
    lines.append(f"manifest: {written}")
    lines.append(f"next: batchcopy plan {out} && batchcopy run {out}")
    return "\n".join(lines)

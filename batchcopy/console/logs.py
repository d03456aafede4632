"""Log lines for people, cron and log shippers: the standard `logging` module, two small
formatters, and hooks that report API calls without their contents.

Levels (rclone's ladder):

    ERROR    setup problems, aborts, internal errors
    WARNING  rows that did not succeed (FAILED, CONFLICT, UNKNOWN, NOT_RUN), with why
    NOTICE   the default: the run's start and end, its summary, a stats line every
             --log-interval (off a terminal, or into --log-file)
    INFO     -v: every row's outcome and every CopyImageSet call (sent, answered, ended)
    DEBUG    -vv / --debug: every API request: operation, HTTP status or error code,
             latency. Never parameters, headers, bodies or credentials.

Text lines: `2026-11-28T10:09:19.123Z NOTICE  message`; every line of a multi-line message
carries the stamp. On a terminal, messages meant for the person at it (`say`: the summary,
setup errors, stop notices) print as they are. JSON lines: one object per record: time,
level, event, run_id, message, and the record's fields (row_id, manifest_row, call_id,
status, error_code, latency_ms, ...).

`configure()` installs the handlers for one run and returns a `LogSetup` whose `close()`
restores the logger. With `--log-file`, every record goes to the file and the terminal
keeps warnings, errors and `say` messages. A progress bar registers itself on the console
handler so that log lines print above the bar instead of through it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TextIO

LOG = logging.getLogger("batchcopy")
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "notice": NOTICE,
          "info": logging.INFO, "debug": logging.DEBUG}
FORMATS = ("text", "json")

RUN_ID: ContextVar[int | None] = ContextVar("batchcopy_run_id", default=None)
CALL_ID: ContextVar[int | None] = ContextVar("batchcopy_call_id", default=None)


def emit(level: int, event: str, message: str, **fields: Any) -> None:
    """One log record: `event` names what happened (JSON `event`), `fields` are its data."""
    if LOG.isEnabledFor(level):
        LOG.log(level, message, extra={"event": event, "fields": fields})


def say(message: str, *, level: int = NOTICE, event: str = "message", **fields: Any) -> None:
    """A message for the person running batchcopy: shown whatever --log-level says, plain
    on a terminal, timestamped (or JSON) otherwise. Without configure(): plain stderr."""
    if not LOG.handlers:
        print(message, file=sys.stderr, flush=True)
        return
    LOG.log(level, message, extra={"event": event, "fields": fields, "plain": True})


def enabled(level: int) -> bool:
    return LOG.isEnabledFor(level)


# ---- formatting -------------------------------------------------------------------------
def _stamp(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <message>` on every line; `say` messages as they are when
    `plain_messages` (a terminal)."""

    def __init__(self, *, plain_messages: bool = False) -> None:
        super().__init__()
        self.plain_messages = plain_messages

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if self.plain_messages and getattr(record, "plain", False):
            return message
        head = f"{_stamp(record.created)} {record.levelname:<7}"
        return "\n".join(f"{head} {line}".rstrip() for line in message.splitlines() or [""])


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, event, run_id, call_id (when one is being
    made), message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _stamp(record.created), "level": record.levelname.lower(),
                               "event": getattr(record, "event", None) or "log",
                               "run_id": RUN_ID.get()}
        call_id = CALL_ID.get()
        if call_id is not None:
            out["call_id"] = call_id
        out["message"] = record.getMessage()
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        out.update(getattr(record, "fields", None) or {})
        return json.dumps(out, default=str, ensure_ascii=False)


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr; while a tqdm bar is drawn there (`bar`), lines print above it."""

    bar: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.bar is None:
            super().emit(record)
            return
        try:
            type(self.bar).write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging must never break the run
            self.handleError(record)


class _Threshold(logging.Filter):
    """Records at `level` or above, and `say` messages."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or bool(getattr(record, "plain", False))


@dataclass
class LogSetup:
    console: ConsoleHandler
    file: logging.Handler | None
    level: int
    format: str
    console_is_terminal: bool
    _saved: tuple[int, bool]

    @property
    def to_file(self) -> bool:
        return self.file is not None

    @property
    def console_json(self) -> bool:
        return self.format == "json" and self.file is None

    def close(self) -> None:
        for handler in (self.console, self.file):
            if handler is not None:
                LOG.removeHandler(handler)
                handler.close()
        LOG.setLevel(self._saved[0])
        LOG.propagate = self._saved[1]


@dataclass(frozen=True)
class ConsoleOptions:
    """How a command logs and shows progress: --progress (auto | bar | log | off; --quiet is
    off), --log-interval, --log-format, --log-file, --log-level (-v, --debug settled)."""

    progress: str = "auto"
    log_interval_s: float = 30.0
    log_format: str = "text"
    log_file: str | None = None
    log_level: str = "notice"

    def configure(self) -> "LogSetup":
        return configure(level=self.log_level, fmt=self.log_format, file=self.log_file)


def display_mode(requested: str, setup: "LogSetup") -> str:
    """--progress auto: a bar where a person watches (unless JSON goes there too), else
    stats lines."""
    if requested != "auto":
        return requested
    return "bar" if setup.console_is_terminal and not setup.console_json else "log"


def configure(*, level: str = "notice", fmt: str = "text", file: str | None = None,
              stream: TextIO | None = None) -> LogSetup:
    """Install the handlers of one run. `fmt` applies to --log-file when there is one (the
    terminal then stays text), else to stderr. OSError if the log file cannot be opened."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: expected {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: expected {', '.join(FORMATS)}")
    threshold = LEVELS[level]
    stream = stream or sys.stderr
    terminal = _isatty(stream)
    file_handler: logging.Handler | None = None
    if file:
        file_handler = logging.FileHandler(file, mode="a", encoding="utf-8")
        file_handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        file_handler.addFilter(_Threshold(threshold))
    console = ConsoleHandler(stream)
    if fmt == "json" and file_handler is None:
        console.setFormatter(JsonFormatter())
    else:
        console.setFormatter(TextFormatter(plain_messages=terminal))
    console.addFilter(_Threshold(max(threshold, logging.WARNING) if file_handler else threshold))
    saved = (LOG.level, LOG.propagate)
    LOG.setLevel(min(threshold, NOTICE))
    LOG.propagate = False
    LOG.addHandler(console)
    if file_handler is not None:
        LOG.addHandler(file_handler)
    return LogSetup(console, file_handler, threshold, fmt, terminal, saved)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# ---- API calls (aiobotocore event hooks: nothing in aws/client.py) ---------------------------
_SERVICE = "medical-imaging"
_STARTED = "batchcopy_started"


def attach_api_logging(client: Any) -> None:
    """DEBUG lines for every API request `client` makes: operation, HTTP status or error
    code, latency, and the call id when a CopyImageSet call is being made. Nothing from
    the request, its headers or the response body but the error code. A no-op unless DEBUG
    is on."""
    if not LOG.isEnabledFor(logging.DEBUG):
        return
    events = client.meta.events
    events.register(f"before-call.{_SERVICE}", _before_call)
    events.register(f"after-call.{_SERVICE}", _after_call)
    events.register(f"after-call-error.{_SERVICE}", _after_call_error)


def _latency_ms(context: dict[str, Any]) -> float | None:
    started = context.get(_STARTED)
    return None if started is None else round((time.monotonic() - started) * 1000, 1)


def _before_call(context: dict[str, Any], **_: Any) -> None:
    context[_STARTED] = time.monotonic()


def _after_call(http_response: Any, parsed: dict[str, Any], model: Any,
                context: dict[str, Any], **_: Any) -> None:
    status = int(http_response.status_code)
    code = (parsed.get("Error") or {}).get("Code") if status >= 300 else None
    API.answered(model.name, status, code, _latency_ms(context))


def _after_call_error(exception: BaseException, context: dict[str, Any], event_name: str,
                      **_: Any) -> None:
    API.failed(event_name.rsplit(".", 1)[-1], exception, _latency_ms(context))


class ApiLog:
    """The DEBUG line of one API exchange, whichever path made it (botocore's events above,
    or the light request path, aws/lightcalls.py, which calls these itself)."""

    @staticmethod
    def answered(operation: str, status: int, code: str | None, latency_ms: float | None) -> None:
        emit(logging.DEBUG, "api", f"api {operation}: HTTP {status}" + (f" {code}" if code else "")
             + f" in {latency_ms} ms", operation=operation, http_status=status, error_code=code,
             latency_ms=latency_ms)

    @staticmethod
    def failed(operation: str, exc: BaseException, latency_ms: float | None) -> None:
        code = type(exc).__name__
        emit(logging.DEBUG, "api", f"api {operation}: no answer ({code}) after {latency_ms} ms",
             operation=operation, http_status=None, error_code=code, latency_ms=latency_ms)


API = ApiLog()


def api_observer() -> ApiLog | None:
    """The light path's observer: API lines at DEBUG, else None (nothing to do per call)."""
    return API if LOG.isEnabledFor(logging.DEBUG) else None


# ---- rows ---------------------------------------------------------------------------------
GOOD = frozenset({"SUCCEEDED", "SKIPPED"})


def log_rows(names: Sequence[tuple[str | None, int | None]], status: str, *,
             error_code: str | None = None, error_message: str | None = None,
             call_id: int | None = None, latency_s: float | None = None,
             evidence: str | None = None) -> None:
    """One record per row that reached `status`: INFO when it succeeded or was skipped,
    WARNING otherwise. `names` are (row_id, manifest_row)."""
    level = logging.INFO if status in GOOD else logging.WARNING
    if not LOG.isEnabledFor(level):
        return
    why = ": ".join(p for p in (error_code, error_message) if p)
    if not why and status == "SKIPPED":
        why = evidence or ""
    tail = []
    if call_id is not None:
        tail.append(f"call {call_id}")
    if latency_s is not None:
        tail.append(f"{latency_s:.1f} s after it was sent")
    for row_id, manifest_row in names:
        where = f"row {row_id}" + (f" (manifest row {manifest_row})" if manifest_row else "")
        text = f"{where}: {status}" + (f": {why}" if why else "") + (
            f" ({', '.join(tail)})" if tail else "")
        emit(level, "row", text, row_id=row_id, manifest_row=manifest_row, status=status,
             call_id=call_id, error_code=error_code, error_message=error_message,
             latency_ms=None if latency_s is None else round(latency_s * 1000, 1))

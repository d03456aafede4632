"""When a request really leaves, for pacing: the before-send hook's context (set in the task
that makes the call) and a trace of aiohttp's writes, so a bucket spaces requests from when
their bytes reached the connection, not from when botocore signed them.

    SPACED   the request left through its bucket's space(): a throttle of it may be jitter
    SENDING  (bucket, send number) of the request about to be written, for the write trace
    PACE     the bucket to space the request with once aiohttp has its connection ready
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from batchcopy.aws.ratelimit import TokenBucket

# Set by the before-send hook in the task that makes the call: the request left through
# the bucket's space() (so a throttle of it may be jitter, not a quota).
SPACED: ContextVar[bool] = ContextVar("batchcopy_spaced", default=False)
# Set by the same hook: (bucket, send number) of the request about to be written, for
# the aiohttp trace that sees its headers and body reach the connection (see trace_writes;
# the task aiohttp writes a body in inherits it).
SENDING: ContextVar[tuple[TokenBucket, int] | None] = ContextVar("batchcopy_sending",
                                                                  default=None)
# Set by the same hook when the client's sessions carry the trace: the bucket to space the
# request with once aiohttp has its connection ready (see _ready).
PACE: ContextVar[TokenBucket | None] = ContextVar("batchcopy_pace", default=None)


async def _ready(*_: Any) -> None:
    """aiohttp trace: the request is about to be written on its connection. When the
    before-send hook left its spacing to us, space it now: aiohttp has connected it by
    then, and requests spaced before they waited for new connections would leave
    together (a run's first hundred version reads did, and the service refused some)."""
    bucket = PACE.get()
    if bucket is None:
        await _written()
        return
    PACE.set(None)
    if await bucket.space() is not None:
        SENDING.set((bucket, bucket.sends))


async def _written(*_: Any) -> None:
    """aiohttp trace: the request's headers, then each chunk of its body, are written to
    the connection. Tell its bucket when, if that is later than the before-send hook stamped
    it. aiohttp (3.10 and later) holds the headers back to send them with the body, which
    a task of its own writes a turn of the event loop later: a request with a body leaves
    at its first chunk."""
    sending = SENDING.get()
    if sending is not None:
        bucket, send = sending
        bucket.left(send, bucket.now())


_TRACE: Any = None


def trace_writes(client: Any) -> None:
    """Best effort: add a trace of request writes to the client's aiohttp sessions, so a
    request the event loop held up between before-send and the socket spaces the next
    one from when it really left. aiobotocore makes its sessions on first use and offers
    no trace option, so this reaches into them; if that ever fails, pacing keeps the
    before-send stamps (as with a session made after this call, until the next one)."""
    global _TRACE
    try:
        import aiohttp

        if _TRACE is None:
            _TRACE = aiohttp.TraceConfig()
            _TRACE.on_request_headers_sent.append(_ready)
            _TRACE.on_request_chunk_sent.append(_written)
            _TRACE.freeze()
        for session in client._endpoint.http_session._sessions.values():
            traces = session._trace_configs
            if _TRACE not in traces:
                traces.append(_TRACE)
    except (AttributeError, ImportError, TypeError):
        return


def traced(client: Any) -> bool:
    """Whether the client has an aiohttp session, and each carries the trace."""
    try:
        sessions = list(client._endpoint.http_session._sessions.values())
        return bool(sessions) and all(_TRACE in s._trace_configs for s in sessions)
    except (AttributeError, TypeError):
        return False

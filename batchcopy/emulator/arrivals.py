"""When requests arrive: the kernel's receive stamp of a request's first bytes, so that the
emulator's request quotas count arrivals as the service's front end would, and not when
this process got round to them.

A burst-1 quota (CopyImageSet's) refuses a request that arrives less than one interval
after the one before. Stamped when its handler runs, an arrival is late by however long
this process waited for a CPU and for the requests ahead of it in its event loop: on a
loaded two-core machine 5 to 20 ms now and then, so a request the client wrote to its
socket 103 ms after the one before was counted 95 ms after it, and refused, though it
reached the machine on time. The kernel stamps what it receives (SO_TIMESTAMPNS): each
connection's socket is read with `recvmsg`, and the stamp of the first bytes after an
answer is the next request's arrival (clients send a request once the last one is
answered; aiohttp's, botocore's and boto3's do).

`serve(runner, host, port)` starts the aiohttp runner's server with every connection
watched; `waited(request)` is how long ago the request arrived, 0.0 where there is no
stamp (a platform without SO_TIMESTAMPNS, a transport without a socket): the quota then
counts the request when its handler runs, as it does with `EmulatorConfig.kernel_arrivals`
off. Reading the stamps means reading through asyncio's selector
transport's socket (its `_sock`), which is why this stays best effort.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import sys
import time
from typing import Any

from aiohttp import web

SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS",
                                     35 if sys.platform.startswith("linux") else None)
_ANCILLARY = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The receive stamp in `ancillary` on time.monotonic's clock (the kernel gives
    CLOCK_REALTIME)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            return seconds + nanoseconds / 1e9 - time.time() + time.monotonic()
    return None


class _StampingSocket:
    """A connection's socket, read with recvmsg: `first` is the stamp of the first bytes
    received since the last answer was sent."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.first: float | None = None

    def recv(self, size: int) -> bytes:
        data, ancillary, _, _ = self._sock.recvmsg(size, _ANCILLARY)
        if data and self.first is None:
            self.first = _stamp(ancillary)
        return data

    def recv_into(self, buffer: Any, size: int = 0) -> int:
        view = memoryview(buffer)
        count, ancillary, _, _ = self._sock.recvmsg_into([view[:size] if size else view],
                                                         _ANCILLARY)
        if count and self.first is None:
            self.first = _stamp(ancillary)
        return int(count)

    def send(self, data: Any, *flags: int) -> int:
        self.first = None
        return self._sock.send(data, *flags)

    def sendmsg(self, *args: Any) -> int:
        self.first = None
        return self._sock.sendmsg(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _watch(transport: asyncio.BaseTransport) -> None:
    sock = getattr(transport, "_sock", None)
    if SO_TIMESTAMPNS is None or not _ANCILLARY or not isinstance(sock, socket.socket):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return
    transport._sock = _StampingSocket(sock)  # type: ignore[attr-defined]


class _Watched:
    """aiohttp's protocol for one connection, whose transport is watched first."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _watch(transport)
        self._protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> Any:
        return self._protocol.eof_received()

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


async def serve(runner: web.AppRunner, host: str, port: int,
                ssl_context: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
    """Listen on host:port with the (set up) runner's server, every connection watched
    (over TLS, `ssl_context`, connections are not stamped: `waited()` is 0.0); close it
    before `runner.cleanup()`."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    return await asyncio.get_running_loop().create_server(
        lambda: _Watched(server()), host, port,  # type: ignore[arg-type, return-value]
        ssl=ssl_context)


def waited(request: web.Request) -> float:
    """How long ago the request's first bytes reached this machine (0.0 without a stamp)."""
    sock = getattr(request.transport, "_sock", None)
    first = sock.first if isinstance(sock, _StampingSocket) else None
    return 0.0 if first is None else max(0.0, time.monotonic() - first)

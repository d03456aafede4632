"""Servers on 127.0.0.1 that are not HealthImaging, for tests: what a first real run may
meet instead of the service (a load balancer's HTML page, a web server's 404, a proxy).

    Canned(answer)     an HTTP server in a thread; answer(method, path) -> (status, headers,
                       body) for every request; .endpoint, .requests (method, path) seen
    html_404           an answer: a web server's HTML "404 Not Found" page for every path
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

Answer = tuple[int, dict[str, str], bytes]


def html_404(method: str, path: str) -> Answer:
    return (404, {"Content-Type": "text/html"},
            b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
            b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
            b"</body>\r\n</html>\r\n")


class Canned:
    """An aiohttp server on 127.0.0.1:0 in a daemon thread, answering every request with
    `answer(method, path)`; `ssl` (an ssl.SSLContext) serves TLS. Use as a context manager."""

    def __init__(self, answer: Callable[[str, str], Answer], *, ssl: Any = None,
                 host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.ssl = ssl
        self.host = host
        self.requests: list[tuple[str, str]] = []
        self.endpoint = ""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.rel_url.path))
        await request.read()
        status, headers, body = self.answer(request.method, request.rel_url.path)
        return web.Response(status=status, headers=headers, body=body)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        scheme = "https" if self.ssl is not None else "http"
        self.endpoint = f"{scheme}://{self.host}:{self.port}"

    def __enter__(self) -> "Canned":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

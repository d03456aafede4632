"""A fault-injecting HTTP proxy on 127.0.0.1, between a client and moto's S3 server: what a
flaky network or a struggling S3 does to an `s3://` state's requests.

    proxy = FaultProxy(moto_endpoint).start()      # AWS_ENDPOINT_URL_S3=proxy.url
    proxy.set(seed=1, error=0.05, lost=0.02, ...)   # rates per request, for methods/paths
    proxy.block()                                  # every request refused from now on
    proxy.counts                                   # what was injected, by kind

Kinds (each a rate in [0, 1], drawn from a seeded RNG per request):
    error     503 SlowDown, the request not forwarded
    error_after  forwarded (it lands), then 500 InternalError instead of the answer
    timeout   forwarded, then the answer held longer than the client waits (a lost answer)
    lost      forwarded, then the connection closed without an answer
    refused412   a conditional PUT answered 412 PreconditionFailed, not forwarded
    landed412    a conditional PUT forwarded (it lands), then answered 412 (as if a twin
                 request had won the race)
`only` restricts faults to request lines containing one of its strings (e.g. "/log/");
`times` to that many faults in all.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = ("error", "error_after", "timeout", "lost", "refused412", "landed412")
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade"}
_XML = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{msg}'
        '</Message></Error>')


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.rates: dict[str, float] = {}
        self.only: tuple[str, ...] = ()
        self.hold_s = 2.0
        self.blocked = False
        self.times: int | None = None  # faults left to inject (None: no limit)
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self._rng = random.Random(0)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def set(self, *, seed: int = 0, only: tuple[str, ...] = (), hold_s: float = 2.0,
            times: int | None = None, **rates: float) -> None:
        unknown = set(rates) - set(KINDS)
        assert not unknown, unknown
        with self._lock:
            self.rates, self.only, self.hold_s, self.times = dict(rates), only, hold_s, times
            self._rng = random.Random(seed)

    def block(self, on: bool = True) -> None:
        self.blocked = on

    def draw(self, line: str, conditional: bool) -> str | None:
        """The fault for this request, or None."""
        with self._lock:
            self.requests += 1
            if self.blocked:
                self.counts["blocked"] += 1
                return "blocked"
            if self.only and not any(s in line for s in self.only):
                return None
            if self.times is not None and self.times <= 0:
                return None
            for kind in KINDS:
                rate = self.rates.get(kind, 0.0)
                if kind.endswith("412") and not conditional:
                    continue
                if rate and self._rng.random() < rate:
                    self.counts[kind] += 1
                    if self.times is not None:
                        self.times -= 1
                    return kind
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP
                                 and k.lower() != "content-length"], data
        finally:
            conn.close()

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, msg: str) -> None:
        self._reply(status, [("Content-Type", "application/xml")],
                    _XML.format(code=code, msg=msg).encode())

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self) -> None:
        body = self._body()
        conditional = "If-None-Match" in self.headers or "If-Match" in self.headers
        fault = self.owner.draw(f"{self.command} {self.path}", conditional)
        if fault == "blocked":
            self._error(503, "SlowDown", "injected: blocked")
        elif fault == "error":
            self._error(503, "SlowDown", "injected: please reduce your request rate")
        elif fault == "refused412":
            self._error(412, "PreconditionFailed", "injected: a precondition did not hold")
        else:
            status, headers, data = self._forward(body)
            if fault == "error_after":
                self._error(500, "InternalError", "injected: we encountered an internal error")
            elif fault == "landed412":
                self._error(412, "PreconditionFailed", "injected: a twin request won")
            elif fault == "timeout":
                time.sleep(self.owner.hold_s)
                self._drop()
            elif fault == "lost":
                self._drop()
            else:
                self._reply(status, headers, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

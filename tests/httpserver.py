"""A real HTTP server on loopback for download tests: Range requests, and misbehaviour on demand.

Each served path is a :class:`Resource` whose successive requests can be answered differently: a different
body (a corrupted copy first), a connection cut after N bytes, a stall longer than the client's timeout, a
5xx, a server that ignores ``Range``, one that answers a Range with the wrong bytes under the right
Content-Range, or one that trickles the body a byte at a time. Every request is recorded (path, Range header).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANGE_RE = re.compile(r"bytes=(\d+)-$")
JOIN_TIMEOUT_S = 5.0


@dataclass
class Resource:
    bodies: list[bytes]                                  # body of request i (the last one repeats)
    cut_after: dict[int, int] = field(default_factory=dict)   # request i: close after this many bytes
    stall_s: dict[int, float] = field(default_factory=dict)   # request i: sleep before the body
    fail_first: int = 0                                  # the first N requests get 503
    ignore_range: bool = False                           # answer 200 with the whole body to Range requests
    wrong_offset: set[int] = field(default_factory=set)  # request i: 206 with a right Content-Range, bytes from 0
    trickle_s: float = 0.0                               # send the body one byte at a time, this far apart
    hits: int = 0


@dataclass
class Request:
    path: str
    range: str | None


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, OSError):  # the client went away (timeouts, cuts): not an error here
            pass

    def do_GET(self) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(Request(self.path, self.headers.get("Range")))
            res = owner.resources.get(self.path)
            n = -1
            if res is not None:
                n = res.hits
                res.hits += 1
        if res is None:
            self.send_error(404, "Not Found")
            return
        if n < res.fail_first:
            self.send_error(503, "Service Unavailable")
            return
        body = res.bodies[min(n, len(res.bodies) - 1)]
        match = RANGE_RE.match(self.headers.get("Range", ""))
        if match and not res.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload = body[: len(body) - start] if n in res.wrong_offset else body[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            payload = body
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if n in res.stall_s:
            time.sleep(res.stall_s[n])
        if n in res.cut_after:
            self.wfile.write(payload[: res.cut_after[n]])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if res.trickle_s:
            for i in range(len(payload)):
                self.wfile.write(payload[i:i + 1])
                self.wfile.flush()
                time.sleep(res.trickle_s)
            return
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "LoopbackServer"


class LoopbackServer:
    """``with LoopbackServer() as srv: srv.add('/f.fits', data); fetch(srv.url('/f.fits'), ...)``."""

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def add(self, path: str, *bodies: bytes, **behaviour: object) -> Resource:
        res = Resource(bodies=list(bodies), **behaviour)  # type: ignore[arg-type]
        self.resources[path] = res
        return res

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(JOIN_TIMEOUT_S)


def closed_port_url(path: str = "/file.fits") -> str:
    """A loopback URL on which nothing listens (connection refused), like an unreachable archive."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"

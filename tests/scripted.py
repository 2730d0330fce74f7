"""A scripted HTTP server for sequences the sandbox cannot produce (403, 422, exact
Retry-After timing). It answers from a list, records every request, and runs on 127.0.0.1.
Nothing is mocked: the client under test talks real HTTP to it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, bytes/str -> as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


def batch(batch_id: str, status: str = "STOPPED", cancel_time: str | None = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"meta": {"request_id": "req_scripted01"},
            "data": {"@type": "query_batch", "batch_id": batch_id, "status_code": status,
                     "cancel_time": cancel_time, "end_time": cancel_time}}


def envelope(code: str, message: str = "scripted") -> dict[str, Any]:
    return {"meta": {"request_id": "req_scripted02"}, "error": {"code": code, "message": message}}


class Scripted:
    """Serve `replies` in order (the last one repeats), or call `responder(method, path)`."""

    def __init__(self, replies: list[Reply] | None = None,
                 responder: Callable[[str, str], Reply] | None = None) -> None:
        self.replies = list(replies or [])
        self.responder = responder
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                with outer._lock:
                    outer.log.append({"method": self.command, "path": self.path, "time": time.monotonic(),
                                      "auth": self.headers.get("Authorization")})
                    if outer.responder is not None:
                        reply = outer.responder(self.command, self.path)
                    else:
                        reply = outer.replies.pop(0) if len(outer.replies) > 1 else outer.replies[0]
                body = reply.payload()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_DELETE = do_POST = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/enterprise/v2"

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

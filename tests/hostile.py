"""A hostile HTTP server on 127.0.0.1 for what neither the sandbox nor `scripted.py` can do:
answers that drip one byte at a time (status line, headers, body, endless `100 Continue`),
answers that never come, bodies of any size streamed without holding them in memory, and
raw header values no well-behaved server library would send.

It speaks raw bytes over a real socket (nothing is mocked) and records every request it
reads, with the time, so tests can check that nothing arrived after a call returned.
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Behaviour = Callable[["Conn"], None]


@dataclass
class Conn:
    sock: socket.socket
    method: str
    path: str
    server: Hostile

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def alive(self) -> bool:
        return not self.server.closing.is_set()

    def drip(self, data: bytes, interval: float) -> None:
        """Send `data` one byte every `interval` seconds (until the client hangs up)."""
        for i in range(len(data)):
            if not self.alive():
                return
            self.sock.sendall(data[i:i + 1])
            time.sleep(interval)  # the behaviour under test: bytes that come slowly, for ever


def head(status: int = 200, headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")  # raw bytes, as a broken server sends


def reply(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Behaviour:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()

    def behave(c: Conn) -> None:
        h = {"Content-Type": "application/json", "Content-Length": str(len(payload)), "Connection": "close"}
        h.update(headers or {})
        c.send(head(status, h) + payload)

    return behave


def stopped_batch(batch_id: str) -> dict[str, Any]:
    return {"meta": {"request_id": "req_hostile01"},
            "data": {"@type": "query_batch", "batch_id": batch_id, "status_code": "STOPPED",
                     "cancel_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}}


def drip_status_and_headers(interval: float = 0.1) -> Behaviour:
    """Status line and then an endless header section, one byte at a time."""
    def behave(c: Conn) -> None:
        c.drip(b"HTTP/1.1 200 OK\r\n", interval)
        while c.alive():
            c.drip(b"X-Pad: a\r\n", interval)

    return behave


def drip_body(interval: float = 0.1) -> Behaviour:
    """Headers at once, then a body announced as 1 GB sent one byte at a time."""
    def behave(c: Conn) -> None:
        c.send(head(200, {"Content-Type": "application/json", "Content-Length": str(10**9)}))
        while c.alive():
            c.drip(b" ", interval)

    return behave


def endless_continue(interval: float = 0.1) -> Behaviour:
    """Interim `100 Continue` answers, for ever, each well within any read timeout."""
    def behave(c: Conn) -> None:
        while c.alive():
            c.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(interval)  # the behaviour under test: interim answers, each well within a timeout

    return behave


def reset() -> Behaviour:
    """Read the request, then reset the connection (RST, not a clean close): the request was
    sent, and no answer comes."""
    def behave(c: Conn) -> None:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return behave


def silent() -> Behaviour:
    """Read the request and never answer."""
    def behave(c: Conn) -> None:
        c.server.closing.wait()  # until the server closes

    return behave


def huge_body(size: int, status: int = 200, chunked: bool = False) -> Behaviour:
    """A body of `size` bytes of JSON-ish padding, streamed from one small buffer."""
    block = b" " * 65536

    def behave(c: Conn) -> None:
        h = {"Content-Type": "application/json"}
        h.update({"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(size)})
        c.send(head(status, h))
        sent = 0
        while sent < size and c.alive():
            n = min(len(block), size - sent)
            c.send((b"%x\r\n" % n + block[:n] + b"\r\n") if chunked else block[:n])
            sent += n
        if chunked:
            c.send(b"0\r\n\r\n")

    return behave


def gzip_bomb(inflated: int, status: int = 200) -> Behaviour:
    """A gzip body that inflates to `inflated` bytes (1 GB of spaces is about 1 MB on the wire)."""
    body = _bomb(inflated)

    def behave(c: Conn) -> None:
        c.send(head(status, {"Content-Type": "application/json", "Content-Encoding": "gzip",
                             "Content-Length": str(len(body))}) + body)

    return behave


_BOMBS: dict[int, bytes] = {}


def _bomb(inflated: int) -> bytes:
    if inflated not in _BOMBS:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
            block = b" " * (1 << 20)
            left = inflated
            while left > 0:
                gz.write(block[:min(left, len(block))])
                left -= len(block)
        _BOMBS[inflated] = out.getvalue()
    return _BOMBS[inflated]


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)


class Hostile:
    """Serve `behaviour(method, path)` for every request; one request per connection."""

    def __init__(self, behaviour: Callable[[str, str], Behaviour]) -> None:
        self.behaviour = behaviour
        self.log: list[dict[str, Any]] = []
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}/enterprise/v2"

    def count(self) -> int:
        with self._lock:
            return len(self.log)

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            method, path = line.split(" ")[:2]
            with self._lock:
                self.log.append({"method": method, "path": path, "time": time.monotonic()})
            self.behaviour(method, path)(Conn(sock, method, path, self))
        except (OSError, ValueError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> Hostile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._sock.close()

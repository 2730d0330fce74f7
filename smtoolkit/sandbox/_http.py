"""The wire: a threading HTTP/1.1 server that feeds requests to the app and carries out
connection-level faults (resets, truncated bodies, slow answers)."""

from __future__ import annotations

import socket
import struct
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._app import Response

MAX_BODY = 1 << 20


def exclusive_bind(platform: str = sys.platform) -> tuple[bool, int | None]:
    """(SO_REUSEADDR?, the option that makes the port ours alone) for `platform`.

    On POSIX, SO_REUSEADDR only lets a restarted server take back a port in TIME_WAIT; two
    listeners still cannot share it. On Windows it lets a second server bind the same port,
    so there the sandbox uses SO_EXCLUSIVEADDRUSE instead.
    """
    if platform == "win32":
        return False, getattr(socket, "SO_EXCLUSIVEADDRUSE", -5)  # -5: ~SO_REUSEADDR, its Winsock value
    return True, None


def linger_abort(platform: str = sys.platform) -> bytes:
    """SO_LINGER {on, 0 s} (close with a TCP RST): `struct linger` is two ints on POSIX and
    two u_shorts in Winsock."""
    return struct.pack("HH" if platform == "win32" else "ii", 1, 0)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address, _exclusive = exclusive_bind()
    request_queue_size = 128

    def server_bind(self) -> None:
        if self._exclusive is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, self._exclusive, 1)
        super().server_bind()

    def __init__(
        self,
        address: tuple[str, int],
        dispatch: Callable[[str, str, dict[str, str], bytes], Response],
        closing: threading.Event,
    ) -> None:
        self.dispatch = dispatch
        self.closing = closing
        if ":" in address[0]:  # an IPv6 literal such as ::1 (the class default is IPv4 only)
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smtoolkit-sandbox"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after this
    server: Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the app keeps its own request log

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; without TCP_NODELAY, Nagle's algorithm holds the
        # body until the client's delayed ACK (~40 ms), so every request on a keep-alive
        # connection took ~40 ms and one session could never reach the per-second limit.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def _serve(self) -> None:
        length = self.headers.get("Content-Length")
        try:
            n = int(length) if length else 0
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self.send_error(400, "Bad Content-Length")
            return
        body = self.rfile.read(n) if n else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        resp = self.server.dispatch(self.command, self.path, headers, body)
        if resp.action == "reset_before":
            self._reset()
            return
        if resp.delay > 0 and self.server.closing.wait(resp.delay):
            self._reset()
            return
        if resp.action == "reset_after":
            self._reset()
            return
        body = resp.body
        if resp.action == "truncate":
            # A gateway that cut the body short but declared the length it sent: the client
            # sees a complete HTTP answer whose JSON is broken.
            body = body[: max(1, len(body) // 2)]
        self.send_response(resp.status, resp.reason)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST, as a crashed proxy would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_abort())
            self.connection.close()
        except OSError:
            pass

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

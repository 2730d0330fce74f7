"""One HTTP exchange, bounded in time and in size.

`requests` bounds each socket operation, not an exchange: a server that sends one byte a
second (in the status line, the headers, the body, or as endless `100 Continue`) can hold a
call for ever, and `.content` reads and inflates a body of any size. Here:

- a `Watchdog` shuts the connection's socket down when the exchange's deadline passes, so a
  blocked read returns at once wherever it is (headers, body, interim answers);
- the body is read as a stream and inflated by us (gzip/deflate) with a bound on the output,
  and reading stops at `MAX_ANSWER_BYTES`: memory per exchange stays about that size.

A failure is also told apart by *when* it happened: one before a connection existed (the
host name did not resolve, the connection was refused, the TLS handshake or its certificate
failed, connecting timed out) sent nothing, and `TransportError.not_sent` says why; any later
one, on a new or a kept-alive connection, may have reached the server.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_match_hostname import CertificateError

from .core.answers import MAX_ANSWER_BYTES

# Compressed bytes read per step; with the bound on inflation, peak memory per exchange is
# about MAX_ANSWER_BYTES plus this.
_CHUNK = 16 * 1024
ACCEPT_ENCODING = "gzip, deflate"


class TransportError(Exception):
    """No complete answer: the message is short, key-free and says why.

    `not_sent` is one of `NOT_SENT_CAUSES` when the request never left this machine (no
    connection was made), and None when it may have reached the server.
    """

    def __init__(self, message: str, not_sent: str | None = None) -> None:
        super().__init__(message)
        self.not_sent = not_sent


#: Why a request never left this machine: its connection failed before anything was sent.
NOT_SENT_CAUSES = ("dns", "refused", "certificate", "tls", "timeout", "proxy", "connect")


@dataclass(frozen=True, slots=True)
class Received:
    """An answer as read off the wire: `body` holds at most MAX_ANSWER_BYTES."""

    http_status: int
    headers: Mapping[str, str]
    body: bytes
    too_large: bool


class Watchdog:
    """Calls `abort` callbacks when their deadlines pass; one daemon thread, started lazily.

    The thread exits when it has had nothing to watch for a while, and comes back when needed.
    """

    IDLE_EXIT = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, abort: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            heapq.heappush(self._heap, (deadline, token, abort))
            self._live.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="smtoolkit-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == token:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)

    def _watch(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(self.IDLE_EXIT)
                    if not self._heap:
                        self._thread = None
                        return
                    continue
                deadline, token, abort = self._heap[0]
                left = deadline - self._clock()
                if left > 0:
                    self._cond.wait(min(left, self.IDLE_EXIT))
                    continue
                heapq.heappop(self._heap)
                self._live.discard(token)
            try:
                abort()
            except Exception:  # noqa: BLE001 - the socket may be gone already
                pass


class _Exchange:
    """The connection one exchange uses, so the watchdog can cut it (and only while the
    exchange lasts: once finished, a late abort must not cut the next user of the connection).

    Also whether it ever had a connection: `connecting` once one was being opened, `connected`
    once one was open (or a kept-alive one was reused). Until then nothing can have been sent.
    """

    __slots__ = ("conn", "aborted", "finished", "connecting", "connected", "_lock")

    def __init__(self) -> None:
        self.conn: Any = None
        self.aborted = False
        self.finished = False
        self.connecting = False
        self.connected = False
        self._lock = threading.Lock()

    def attach(self, conn: Any) -> None:
        with self._lock:
            self.conn = conn
            if self.aborted:
                _shutdown(conn)

    def abort(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.aborted = True
            if self.conn is not None:
                _shutdown(self.conn)

    def finish(self) -> None:
        with self._lock:
            self.finished = True


def _shutdown(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            # The plain socket's shutdown, also under TLS: it wakes a blocked read at once
            # without touching the TLS object another thread is reading through.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


_current = threading.local()


def _register(conn: Any, *, connecting: bool = False, connected: bool = False) -> None:
    ex = getattr(_current, "exchange", None)
    if ex is not None:
        ex.connecting = ex.connecting or connecting
        ex.connected = ex.connected or connected
        ex.attach(conn)


class _Watched:
    """Mixed into urllib3's connections: each tells the current exchange which socket it uses
    (new connections on connect, kept-alive ones on every request), and whether it is open."""

    def connect(self) -> None:
        _register(self, connecting=True)
        super().connect()  # type: ignore[misc]  # DNS, TCP, proxy tunnel and TLS handshake
        _register(self, connected=True)

    def request(self, *args: Any, **kwargs: Any) -> None:
        # A kept-alive socket is already open: whatever fails from here may have been sent.
        _register(self, connected=getattr(self, "sock", None) is not None)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):  # type: ignore[misc]
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):  # type: ignore[misc]
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class BoundedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections the watchdog can cut (direct and through proxies)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme"):
            manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


_FAILURES = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError)


def exchange(session: requests.Session, watchdog: Watchdog, method: str, url: str,
             params: Mapping[str, Any] | None, timeout: float) -> Received:
    """Send one request and read its whole answer within `timeout` seconds in total.

    Raises TransportError when no complete answer arrived in time (or the connection failed).
    An answer larger than MAX_ANSWER_BYTES is returned cut off, with `too_large` set.
    """
    ex = _Exchange()
    token = watchdog.arm(time.monotonic() + timeout, ex.abort)
    _current.exchange = ex
    resp: requests.Response | None = None
    complete = False
    try:
        resp = session.request(method, url, params=params, stream=True, allow_redirects=False,
                               timeout=(min(timeout, 10.0), timeout))
        body, too_large = _read_body(resp)
        if ex.aborted:  # what arrived before the cut is not the whole answer
            raise TransportError(f"no complete answer within the timeout ({timeout:g} s)")
        complete = not too_large
        return Received(resp.status_code, resp.headers, body, too_large)
    except _FAILURES as exc:
        cause = _never_sent(ex, exc)
        if cause is not None:
            raise TransportError(describe_not_sent(cause, exc, url, timeout, aborted=ex.aborted), cause) from None
        if ex.aborted:
            raise TransportError(f"no complete answer within the timeout ({timeout:g} s)") from None
        raise TransportError(describe(exc)) from None
    finally:
        _current.exchange = None
        watchdog.disarm(token)
        ex.finish()  # before the connection can go back to the pool
        if resp is not None:
            _release(resp, complete and not ex.aborted)


def _read_body(resp: requests.Response) -> tuple[bytes, bool]:
    encoding = (resp.headers.get("Content-Encoding") or "").strip().lower()
    inflate = _Inflater(encoding)
    buf = bytearray()
    for chunk in resp.raw.stream(_CHUNK, decode_content=False):
        if not inflate.feed(chunk, buf):
            return bytes(buf[:MAX_ANSWER_BYTES]), True
    if not inflate.flush(buf):
        return bytes(buf[:MAX_ANSWER_BYTES]), True
    return bytes(buf), False


class _Inflater:
    """gzip/deflate decoding with a bound on the output; other encodings pass through."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._d: Any = None
        self._raw_deflate_tried = False
        self._head = b""  # deflate input before any output: replayed if it was raw deflate
        if encoding in ("gzip", "x-gzip"):
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._d = zlib.decompressobj()

    def feed(self, data: bytes, buf: bytearray) -> bool:
        """Append the decoded `data` to `buf`; False once more than MAX_ANSWER_BYTES."""
        if self._d is None:
            buf += data
            return len(buf) <= MAX_ANSWER_BYTES
        if self.encoding == "deflate" and not buf and not self._raw_deflate_tried and len(self._head) < _CHUNK * 4:
            self._head += data
        while data:
            room = MAX_ANSWER_BYTES + 1 - len(buf)
            if room <= 0:
                return False
            try:
                buf += self._d.decompress(data, room)
            except zlib.error:
                if self.encoding == "deflate" and not self._raw_deflate_tried and not buf:
                    # Some servers send raw deflate without the zlib wrapper: start over on
                    # everything received so far (a first chunk may have been a single byte).
                    self._raw_deflate_tried = True
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                    data, self._head = self._head, b""
                    continue
                raise ValueError("the answer's compressed body is corrupt") from None
            data = self._d.unconsumed_tail
            if self._d.eof:
                break
        return len(buf) <= MAX_ANSWER_BYTES

    def flush(self, buf: bytearray) -> bool:
        if self._d is not None:
            buf += self._d.flush(MAX_ANSWER_BYTES + 1 - len(buf)) if len(buf) <= MAX_ANSWER_BYTES else b""
        return len(buf) <= MAX_ANSWER_BYTES


def _release(resp: requests.Response, complete: bool) -> None:
    """A fully read answer gives its connection back for reuse; any other closes it."""
    raw = resp.raw
    try:
        if complete:
            raw.release_conn()
        else:
            raw.close()
            raw.release_conn()
    except Exception:  # noqa: BLE001 - the connection is unusable anyway
        pass


def describe(exc: BaseException) -> str:
    """A short, key-free description of a transport failure."""
    kind = type(exc).__name__
    text = str(exc)
    low = text.lower()
    if "timed out" in low:
        return f"{kind}: no answer within the timeout"
    if any(w in low for w in ("badstatusline", "linetoolong", "got more than", "unknownprotocol", "invalid http")):
        return f"{kind}: the answer was not valid HTTP"
    if "reset" in low or "aborted" in low:
        return f"{kind}: the connection was reset"
    if ("incompleteread" in low or "cut off" in low or isinstance(exc, requests.exceptions.ChunkedEncodingError)
            or "incomplete" in low):
        return f"{kind}: the answer was cut off"
    if "failed to establish" in low or "refused" in low:
        return f"{kind}: could not connect to the server"
    if "compressed body is corrupt" in low or isinstance(exc, requests.exceptions.ContentDecodingError):
        return f"{kind}: the answer's compressed body could not be decoded"
    return f"{kind}: {text[:200]}"


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception behind it: requests wraps urllib3's MaxRetryError (in `args`),
    which holds the real failure in `reason`/`__cause__`, which may hold the OS error in its
    `__context__` (urllib3 1.26) or `__cause__` (urllib3 2)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 32:
        e = todo.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None), getattr(e, "original_error", None),
                    *getattr(e, "args", ())):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return seen


_U3 = urllib3.exceptions
_NAME_RESOLUTION: tuple[type[BaseException], ...] = (socket.gaierror,) + (
    (_U3.NameResolutionError,) if hasattr(_U3, "NameResolutionError") else ())  # urllib3 2 only
_PROXY = (_U3.ProxyError, requests.exceptions.ProxyError)
_CERTIFICATE = (ssl.SSLCertVerificationError, CertificateError)
_TLS = (ssl.SSLError, _U3.SSLError, requests.exceptions.SSLError)
_CONNECT_TIMEOUT = (_U3.ConnectTimeoutError, requests.exceptions.ConnectTimeout)
# Only raised while connecting: with one of these in the chain nothing was sent, even when the
# connection class was not ours to watch. (Not ProxyError: urllib3 1.26 also raises it for a
# connection reset after sending through a proxy.)
_CONNECT_PHASE = (_U3.NewConnectionError, *_CONNECT_TIMEOUT, *_NAME_RESOLUTION, ConnectionRefusedError,
                  *_CERTIFICATE)


def _never_sent(ex: _Exchange, exc: BaseException) -> str | None:
    """Why the request never left this machine (one of NOT_SENT_CAUSES), or None when it may
    have been sent. Decided by what the exchange saw (no connection was ever open), and named
    from the exception chain, never from its text."""
    if ex.connected:
        return None  # a connection was open (new or kept-alive): the request may have gone out
    chain = _chain(exc)
    if not ex.connecting and not any(isinstance(e, _CONNECT_PHASE) for e in chain):
        return None  # we saw no connection attempt and the failure does not say "connecting": be safe

    def has(kinds: tuple[type[BaseException], ...]) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    if has(_PROXY):
        return "proxy"
    if has(_NAME_RESOLUTION):
        return "dns"
    if has((ConnectionRefusedError,)):
        return "refused"
    if has(_CERTIFICATE):
        return "certificate"
    if has(_TLS):
        return "tls"
    if ex.aborted or has(_CONNECT_TIMEOUT) or has((TimeoutError,)):
        return "timeout"
    return "connect"


def describe_not_sent(cause: str, exc: BaseException, url: str, timeout: float, *, aborted: bool = False) -> str:
    """A short, key-free sentence naming why no connection was made (the host, never a header)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    where = f"{host}:{port}"
    chain = _chain(exc)
    if cause == "dns":
        return f"the host name {host!r} could not be resolved (DNS)"
    if cause == "refused":
        return f"{where} refused the connection"
    if cause == "certificate":
        cert = next((e for e in chain if isinstance(e, _CERTIFICATE)), None)
        why = getattr(cert, "verify_message", None) or (str(cert).splitlines()[0][:150] if cert else "")
        return f"the TLS certificate of {where} is not trusted ({why})" if why else \
            f"the TLS certificate of {where} is not trusted"
    if cause == "tls":
        tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
        why = getattr(tls, "reason", None) or getattr(tls, "strerror", None)
        return f"the TLS handshake with {where} failed" + (f" ({str(why).lower()})" if why else "")
    if cause == "timeout":
        if aborted:
            return f"no connection to {where} within the timeout ({timeout:g} s)"
        return f"connecting to {where} timed out"
    if cause == "proxy":
        inner = [e for e in chain if not isinstance(e, (requests.exceptions.RequestException, _U3.HTTPError))]
        why = str(inner[0]).splitlines()[0][:150] if inner and str(inner[0]) else ""
        return "the proxy could not be reached, or refused to connect to the API" + (f" ({why})" if why else "")
    os_error = next((e for e in chain if isinstance(e, OSError) and e.errno is not None), None)
    if os_error is not None and os_error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{where} is unreachable from this network ({os_error.strerror})"
    why = os_error.strerror if os_error is not None else type(exc).__name__
    return f"could not connect to {where} ({why})"

"""A dead network fails fast, and says so (issue 21, item 9).

When no connection can be made (a host name that does not resolve, a closed port, a TLS
certificate that is not trusted), nothing was sent: such a row is retried a little, never
verified with GETs, and says `not sent`; a run whose rows keep failing that way halts
(`unreachable`) and names what to check. A failure *after* a connection existed (a reset after
the request was read, on a new or a kept-alive connection) may have been sent, and is still
verified. Everything here is real sockets on this machine: an unresolvable `.invalid` name, a
port nobody listens on, a TLS server with a self-signed certificate in a thread.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.core.retry import CONNECT_RETRIES
from smtoolkit.runner import UNREACHABLE_ROWS
from smtoolkit.transport import BoundedAdapter, TransportError, Watchdog, exchange
from tests.helpers import fast_client
from tests.hostile import Hostile, reply, reset, silent, stopped_batch

KEY = "sm_test_key_unreachable_5f0c"
IDS = [f"qrb_{i:012x}" for i in range(200)]
UNRESOLVABLE = "api.smtoolkit-test.invalid"  # the .invalid TLD never resolves (RFC 6761)


# -- the three dead ends ------------------------------------------------------------------------
def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on: bound once to get it, then closed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture
def unresolvable() -> str:
    try:
        socket.getaddrinfo(UNRESOLVABLE, 443)
    except socket.gaierror:
        return f"https://{UNRESOLVABLE}/enterprise/v2"
    pytest.skip(f"this machine's resolver answers for {UNRESOLVABLE}")


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no trust store knows (made by the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class UntrustedTLS:
    """A TLS server on 127.0.0.1 with a self-signed certificate (a corporate proxy's, say).

    Counts every connection and every handshake that completed; after a completed handshake
    it would read a request (counted) and answer 200. `close()` joins its thread, so the
    counts are final afterwards."""

    def __init__(self, cert: Path, key: str | Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.connections = 0
        self.handshakes = 0
        self.requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self._sock.getsockname()[1]}/enterprise/v2"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    if tls.recv(65536):
                        self.requests += 1
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def untrusted(self_signed: tuple[Path, Path]) -> Iterator[UntrustedTLS]:
    srv = UntrustedTLS(*self_signed)
    try:
        yield srv
    finally:
        srv.close()


# -- what every dead-end run must show ----------------------------------------------------------
@dataclass
class Run:
    report: pd.DataFrame
    warnings: list[str]
    took: float


def cancel_all(base_url: str, **kwargs: Any) -> Run:
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = sm.cancel_batches(IDS, api_key=KEY, base_url=base_url, progress=False, **kwargs)
    return Run(report, [str(w.message) for w in caught], time.monotonic() - started)


def assert_failed_fast_and_truthfully(run: Run, cause: str, check: str, label: str) -> None:
    """The run halted as unreachable; every row says it was not sent and why; no row was
    verified (a row's attempts are its DELETEs, at most 1 + CONNECT_RETRIES)."""
    r, a = run.report, run.report.attrs
    print(f"\n{label}: {len(r)} IDs in {run.took:.2f} s, {a['requests_sent']} connection attempts, "
          f"{(r['outcome'] == 'skipped').sum()} skipped")
    assert a["stopped"] == "unreachable", a
    assert len(r) == len(IDS) and list(r["batch_id"]) == IDS
    assert set(r["outcome"]) == {"network_error", "skipped"}, r["outcome"].value_counts()
    tried = r[r["outcome"] == "network_error"]
    skipped = r[r["outcome"] == "skipped"]
    assert set(tried["error_code"]) == {"CONNECT_FAILED"}
    assert tried["error_message"].str.startswith("not sent: ").all()
    assert tried["error_message"].str.contains(cause, regex=False).all(), tried["error_message"].iloc[0]
    assert tried["error_description"].str.contains(check, regex=False).all()
    assert set(skipped["error_code"]) == {"SKIPPED_UNREACHABLE"}
    assert skipped["error_message"].str.startswith("not sent: the API could not be reached (").all()
    assert skipped["error_message"].str.contains(cause, regex=False).all()
    assert (skipped["attempts"] == 0).all()
    # No verification GETs: each tried row's attempts are its own DELETEs, a blip's worth.
    assert tried["attempts"].between(1, 1 + CONNECT_RETRIES).all(), tried["attempts"].tolist()
    assert a["requests_sent"] == tried["attempts"].sum()
    assert len(tried) >= UNREACHABLE_ROWS
    # Before: every row tried 6 times and was verified 3 times (1,050 attempts for 200 IDs).
    assert len(skipped) >= 150 and a["requests_sent"] <= 3 * (len(IDS) - 150)
    assert not r["error_message"].str.contains("may have been sent").any()
    halts = [w for w in run.warnings if "could not be reached" in w]
    assert len(halts) == 1, run.warnings
    assert cause in halts[0] and check in halts[0] and f"{len(skipped)} row(s) not sent" in halts[0]
    assert KEY not in r.to_csv() and not any(KEY in w for w in run.warnings)


def test_an_unresolvable_host_halts_at_once_and_every_row_says_nothing_was_sent(unresolvable: str) -> None:
    run = cancel_all(unresolvable)
    assert_failed_fast_and_truthfully(run, f"the host name '{UNRESOLVABLE}' could not be resolved (DNS)",
                                      "the network connection and the VPN", "unresolvable host")


def test_a_closed_port_halts_at_once_and_every_row_says_nothing_was_sent() -> None:
    port = closed_port()
    run = cancel_all(f"http://127.0.0.1:{port}/enterprise/v2")
    assert_failed_fast_and_truthfully(run, f"127.0.0.1:{port} refused the connection",
                                      "Check the base URL (host and port)", "closed port")


def test_an_untrusted_certificate_halts_at_once_and_nothing_was_sent(untrusted: UntrustedTLS) -> None:
    run = cancel_all(untrusted.base_url)
    untrusted.close()  # joins the server: its counts are final
    assert_failed_fast_and_truthfully(run, "is not trusted (self-signed certificate)", "REQUESTS_CA_BUNDLE",
                                      "untrusted certificate")
    # Every attempt was one TLS handshake, refused by the client: no request ever arrived.
    assert untrusted.connections == run.report.attrs["requests_sent"]
    assert untrusted.handshakes == 0 and untrusted.requests == 0


def test_the_cli_exits_3_naming_what_to_check(tmp_path: Path) -> None:
    port = closed_port()
    ids = tmp_path / "ids.csv"
    ids.write_text("batch_id\n" + "\n".join(IDS) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERMETRICS_")}
    env.update(SUPERMETRICS_API_KEY=KEY, PYTHONIOENCODING="utf-8")
    p = subprocess.run([sys.executable, "-m", "smtoolkit", "cancel", "-f", str(ids), "--yes", "--no-progress",
                        "-o", "csv", "--base-url", f"http://127.0.0.1:{port}/enterprise/v2"],
                       env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and KEY not in p.stdout + p.stderr
    assert "could not be reached" in p.stderr and f"127.0.0.1:{port} refused the connection" in p.stderr
    assert "Check the base URL" in p.stderr and "run halted on an error" not in p.stderr
    from io import StringIO
    report = pd.read_csv(StringIO(p.stdout))
    assert len(report) == len(IDS)
    assert set(report["error_code"]) == {"CONNECT_FAILED", "SKIPPED_UNREACHABLE"}
    assert (report["error_code"] == "SKIPPED_UNREACHABLE").sum() >= 150


def test_one_cancel_to_a_dead_host_is_not_verified_and_reads_well() -> None:
    """What the panel shows for one cancel: the code, that nothing was sent, why, what to check."""
    port = closed_port()
    with Client(api_key=KEY, base_url=f"http://127.0.0.1:{port}/enterprise/v2", backoff_base=0.01) as c:
        r = c.cancel("qrb_1")
        assert c.pacing()["requests_sent"] == r.attempts == 1 + CONNECT_RETRIES  # retried a little, no GET
    assert r.outcome.value == "network_error" and r.error_code == "CONNECT_FAILED"
    assert r.error_message == f"not sent: 127.0.0.1:{port} refused the connection"
    assert r.error_description is not None and "Check the base URL" in r.error_description


# -- failures after sending are still "may have been sent" --------------------------------------
def test_a_reset_after_the_request_was_read_is_verified_and_never_halts_the_run() -> None:
    ids = [f"qrb_{i}" for i in range(UNREACHABLE_ROWS + 3)]
    with Hostile(lambda method, path: reset()) as h:
        report = sm.cancel_batches(ids, api_key=KEY, base_url=h.base_url, max_retries=1, workers=2,
                                   backoff_base=0.01, backoff_cap=0.02, progress=False)
        log = list(h.log)
    assert report.attrs["stopped"] is None
    assert set(report["outcome"]) == {"network_error"} and set(report["error_code"]) == {"NETWORK_ERROR"}
    assert not report["error_message"].str.startswith("not sent").any()
    for bid in ids:  # each cancel tried twice, then checked with three GETs
        mine = [r["method"] for r in log if r["path"].endswith(f"/{bid}")]
        assert sorted(mine) == ["DELETE", "DELETE", "GET", "GET", "GET"], (bid, mine)
    assert (report["attempts"] == 5).all() and report.attrs["requests_sent"] == len(log)


def test_a_reset_cancel_is_confirmed_by_a_get() -> None:
    def behave(method: str, path: str) -> Any:
        return reset() if method == "DELETE" else reply(200, stopped_batch(path.rsplit("/", 1)[-1]))

    with Hostile(behave) as h:
        report = sm.cancel_batches(["qrb_a", "qrb_b"], api_key=KEY, base_url=h.base_url, max_retries=0,
                                   progress=False)
    assert list(report["outcome"]) == ["cancelled", "cancelled"]
    assert report["error_description"].str.contains("own answer was lost").all()


class KeepAliveThenReset:
    """Answers the first request of a connection and keeps it open; reads the second request
    on that connection and resets it. A new connection's first request gets a STOPPED batch."""

    def __init__(self) -> None:
        self.log: list[tuple[int, str]] = []  # (connection number, request line)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/enterprise/v2"

    def _accept(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            n += 1
            t = threading.Thread(target=self._serve, args=(conn, n), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        import json
        import struct

        conn.settimeout(10)
        buf = b""
        try:
            for i in range(2):
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                self.log.append((n, line))
                if i == 1:  # the second request on this connection: read, then reset
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                bid = line.split(" ")[1].rsplit("/", 1)[-1]
                body = json.dumps(stopped_batch(bid)).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._sock.close()


def test_a_failure_on_a_kept_alive_connection_may_have_been_sent() -> None:
    srv = KeepAliveThenReset()
    try:
        with fast_client(srv, api_key=KEY, max_retries=0) as c:
            first = c.cancel("qrb_first")
            second = c.cancel("qrb_second")  # on the kept-alive connection: read, then reset
    finally:
        srv.close()
    assert first.outcome.value == "cancelled" and first.attempts == 1
    # The DELETE went out on a connection that was already open: it may have been applied, so it
    # was checked with a GET (on a new connection), never called "not sent".
    assert second.outcome.value == "cancelled" and second.attempts == 2
    assert "own answer was lost" in (second.error_description or "")
    assert [line.split(" ")[0] for _, line in srv.log] == ["DELETE", "DELETE", "GET"]
    assert srv.log[0][0] == srv.log[1][0] != srv.log[2][0]


# -- the transport tells before from after -------------------------------------------------------
def _exchange(url: str, timeout: float = 5.0) -> TransportError:
    session = requests.Session()
    adapter = BoundedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    with session, pytest.raises(TransportError) as info:
        exchange(session, Watchdog(), "DELETE", url, None, timeout)
    return info.value


def test_failures_before_a_connection_are_named_and_not_sent(self_signed: tuple[Path, Path]) -> None:
    srv = UntrustedTLS(*self_signed)
    port = closed_port()
    try:
        cases = {
            "refused": _exchange(f"http://127.0.0.1:{port}/x"),
            "certificate": _exchange(f"{srv.base_url}/x"),
            "certificate-by-name": _exchange(srv.base_url.replace("127.0.0.1", "localhost") + "/x"),
        }
    finally:
        srv.close()
    assert cases["refused"].not_sent == "refused"
    assert str(cases["refused"]) == f"127.0.0.1:{port} refused the connection"
    assert cases["certificate"].not_sent == cases["certificate-by-name"].not_sent == "certificate"
    assert "self-signed certificate" in str(cases["certificate"])
    assert srv.handshakes == 0


def test_a_plain_http_server_behind_https_is_a_tls_failure_not_sent() -> None:
    """https:// to a server that speaks plain HTTP at once (a proxy port, a wrong base URL)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        err = _exchange(f"https://127.0.0.1:{listener.getsockname()[1]}/x")
    finally:
        t.join(10)
        listener.close()
    assert err.not_sent == "tls" and "TLS handshake" in str(err)


def test_a_connect_that_hangs_is_a_timeout_not_sent() -> None:
    # A listening socket whose tiny backlog is full: the kernel drops further SYNs (Linux), so
    # connecting hangs until the connect timeout.
    full = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(4):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(full.getsockname())
            fillers.append(f)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.3)
        try:
            probe.connect(full.getsockname())
            pytest.skip("this OS accepts connections beyond a full backlog")
        except TimeoutError:
            pass
        finally:
            probe.close()
        err = _exchange(f"http://127.0.0.1:{full.getsockname()[1]}/x", timeout=0.5)
    finally:
        for f in fillers:
            f.close()
        full.close()
    assert err.not_sent == "timeout" and "127.0.0.1" in str(err)


@pytest.mark.parametrize("behaviour", [reset(), silent()], ids=["reset-after-reading", "no-answer"])
def test_failures_after_a_connection_may_have_been_sent(behaviour: Any) -> None:
    with Hostile(lambda m, p: behaviour) as h:
        err = _exchange(f"{h.base_url}/query/batch/qrb_1", timeout=0.5)
        arrived = threading.Event()
        while not arrived.wait(0.01):  # the server logs a request once it has read it
            if h.count() == 1:
                arrived.set()
    assert err.not_sent is None


def test_a_truncated_answer_may_have_been_sent() -> None:
    def cut(c: Any) -> None:
        # Chunked, cut inside a chunk: an error on urllib3 1.26 too (which does not enforce
        # Content-Length by default).
        c.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"40\r\n{\"da")

    with Hostile(lambda m, p: cut) as h:
        err = _exchange(f"{h.base_url}/query/batch/qrb_1")
    assert err.not_sent is None and "cut off" in str(err)

"""`smtoolkit panel` as a process: what it refuses before serving anything, the URL it prints,
and how it stops. The page itself, in a browser, is tested in tests/browser/test_share_browser.py."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import requests

from smtoolkit.sandbox import Sandbox
from tests.helpers import GUARD, wait_for
from tests.served import ServedPanel, run_panel

KEY = "sbx_SERVER-SECRET-KEY_8d2f6b0c41"
pytestmark = pytest.mark.sandbox(api_key=KEY, seed=9)  # the `sandbox` fixture, with this key
posix_only = pytest.mark.skipif(os.name != "posix", reason="Ctrl-C is sent as SIGINT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "panel.example.com"])
def test_a_host_other_than_loopback_without_a_token_is_refused_and_nothing_listens(
        host: str, tmp_path: Path) -> None:
    port = free_port()
    done = run_panel(tmp_path, "--host", host, "--port", str(port), "--no-token", key=KEY)
    assert done.returncode == 2, done.stderr
    assert f"refusing to serve on {host} without a token" in done.stderr
    assert "anyone who can reach it could cancel batches" in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert not listening(port)
    assert not (tmp_path / "smtoolkit-panel-audit.jsonl").exists()  # nothing was even prepared
    assert KEY not in done.stdout + done.stderr


@pytest.mark.parametrize("args, key, code, said", [
    (["--token", "short"], KEY, 2, "at least 16 characters"),
    (["--token", "a token with spaces in it"], KEY, 2, "at least 16 characters"),
    (["--token", "x" * 20, "--no-token"], KEY, 2, "contradict"),
    (["--port", "70000"], KEY, 2, "--port must be from 0"),
    (["--audit", "no/such/folder/audit.jsonl"], KEY, 2, "does not exist"),
    ([], None, 3, "--ask-key"),
    (["--base-url", "http://api.example.com/enterprise/v2"], KEY, 3, "refusing plain http://"),
    (["--max-visitors", "0"], KEY, 2, "--max-visitors must be at least 1"),
    (["--max-pages-per-visitor", "0"], KEY, 2, "--max-pages-per-visitor must be at least 1"),
    (["--connect-timeout", "0"], KEY, 2, "--connect-timeout must be more than 0"),
])
def test_options_that_cannot_work_are_refused_before_serving(
        args: list[str], key: str | None, code: int, said: str, tmp_path: Path) -> None:
    port = free_port()
    done = run_panel(tmp_path, "--port", str(port), *args, key=key)
    assert done.returncode == code, done.stderr
    assert said in done.stderr and done.stderr.startswith("smtoolkit: error: ")
    assert done.stdout == "" and "Traceback" not in done.stderr and not listening(port)


@pytest.mark.parametrize("args", [["--max-visitors", "ten"], ["--max-pages-per-visitor", "1.5"]])
def test_a_limit_that_is_not_a_whole_number_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    port = free_port()
    done = run_panel(tmp_path, "--port", str(port), *args, key=KEY)
    assert done.returncode == 2 and f"argument {args[0]}" in done.stderr and "invalid int value" in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr and not listening(port)


def test_panel_is_in_the_help_with_its_exit_codes(tmp_path: Path) -> None:
    import subprocess
    import sys

    top = subprocess.run([sys.executable, "-m", "smtoolkit", "--help"], capture_output=True, text=True, timeout=60)
    assert "panel" in top.stdout and "web page" in top.stdout
    done = run_panel(tmp_path, "--help", key=None)
    assert done.returncode == 0
    shown = " ".join(done.stdout.split())  # argparse wraps lines
    for option in ("--host", "--port", "--token", "--no-token", "--ask-key", "--audit", "$SMTK_PANEL_TOKEN",
                   "--max-visitors N", "(default 8)", "--max-pages-per-visitor N", "(default 3)",
                   "Exit codes: 0 stopped with Ctrl-C; 2 refused", "3 no API key"):
        assert option in shown, option
    assert "--connect-timeout" not in shown  # for tests only


@posix_only
def test_the_printed_url_is_the_one_that_works_and_ctrl_c_stops_cleanly(
        sandbox: Sandbox, tmp_path: Path) -> None:
    pytest.importorskip("voila", reason="pip install -e '.[browser]'")
    served = ServedPanel(tmp_path, key=KEY, base_url=sandbox.base_url)
    try:
        out = served.out()
        token = served.url.split("?token=")[1]
        assert served.url.startswith("http://127.0.0.1:") and ":0/" not in served.url  # the real port
        assert out.count(token) == 1  # printed once, with the URL
        assert f"Audit trail: {tmp_path / 'audit.jsonl'}" in out and "SUPERMETRICS_API_KEY" in out

        refused = requests.get(served.base, allow_redirects=False, timeout=10)
        assert refused.status_code == 302 and "/login" in refused.headers["Location"]
        assert requests.get(served.base + "?token=" + "0" * len(token), allow_redirects=False,
                            timeout=10).status_code == 302
        assert served.kernels() == []  # nobody got in: no kernel

        page = requests.get(served.url, timeout=90)  # the printed URL, as printed
        assert page.status_code == 200 and "smtk-notice" in page.text
        assert KEY not in page.text
        assert len(served.kernels()) == 1
    finally:
        code = served.stop()
    err = served.err()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "smtoolkit panel stopped" in err
    assert served.kernels() == []
    assert KEY not in served.out() + err
    assert token not in err  # the request log names paths, never the query that holds the token


@posix_only
def test_a_token_from_the_environment_works_and_is_never_printed(sandbox: Sandbox, tmp_path: Path) -> None:
    pytest.importorskip("voila", reason="pip install -e '.[browser]'")
    token = "env-token-" + "7" * 22
    served = ServedPanel(tmp_path, key=KEY, base_url=sandbox.base_url, token=token)
    try:
        assert "?token=" not in served.url and token not in served.out()
        assert "SMTK_PANEL_TOKEN" in served.out()
        assert requests.get(served.base, allow_redirects=False, timeout=10).status_code == 302
        ok = requests.get(served.base, headers={"Authorization": f"token {token}"}, timeout=90)
        assert ok.status_code == 200 and "smtk-notice" in ok.text
    finally:
        assert served.stop() == 0
    assert token not in served.out() + served.err()


def test_a_port_in_use_is_refused_with_exit_2(sandbox: Sandbox, tmp_path: Path) -> None:
    pytest.importorskip("voila", reason="pip install -e '.[browser]'")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_panel(tmp_path, "--port", str(port), key=KEY, base_url=sandbox.base_url)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == "" and KEY not in done.stderr


def test_ctrl_c_stops_the_page_where_asyncio_has_no_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows: the event loop cannot add signal handlers, so plain signal handlers stop it, and
    a periodic wake-up lets Ctrl-C reach a blocked select(). Simulated on this machine: a real
    tornado loop on an asyncio loop that refuses signal handlers as the Proactor loop does,
    os.name "nt", no SIGTERM, and a real SIGINT."""
    import asyncio
    import selectors
    import signal

    from tornado.platform.asyncio import AsyncIOLoop

    from smtoolkit.ui import server as panel_server

    class Selector(selectors.DefaultSelector):
        """A real selector that records how long each select() was allowed to block."""

        def __init__(self) -> None:
            super().__init__()
            self.timeouts: list[float | None] = []

        def select(self, timeout: float | None = None) -> list[Any]:
            self.timeouts.append(timeout)
            return super().select(timeout)

    class WindowsLikeLoop(asyncio.SelectorEventLoop):
        def add_signal_handler(self, *a: object) -> None:
            raise NotImplementedError  # what asyncio's Proactor loop does on Windows

    selector = Selector()
    loop = WindowsLikeLoop(selector)
    ioloop = AsyncIOLoop(asyncio_loop=loop)
    before = signal.getsignal(signal.SIGINT)
    asyncio.set_event_loop(loop)
    guarded: list[bool] = []
    try:
        with monkeypatch.context() as m:
            m.delattr(signal, "SIGTERM", raising=False)  # as on Windows, where only some exist
            m.setattr(os, "name", "nt")
            panel_server._stop_on_signals(ioloop)
        assert signal.getsignal(signal.SIGINT) is not before  # a plain handler, as on Windows
        # Ctrl-C comes while the loop idles (2 s in: time for the wake-ups to show).
        ioloop.call_later(2.0, signal.raise_signal, signal.SIGINT)
        ioloop.call_later(GUARD, lambda: (guarded.append(True), ioloop.stop()))
        ioloop.start()  # returns once stopped
    finally:
        signal.signal(signal.SIGINT, before)
        asyncio.set_event_loop(None)
        ioloop.close(all_fds=True)
    assert not guarded, "Ctrl-C did not stop the loop"
    # Idle, the loop never blocked for longer than the 500 ms wake-up (else up to the 2 s).
    idle = [t for t in selector.timeouts if t]
    assert idle and max(idle) <= 0.5, selector.timeouts


def other_loopback_addresses() -> list[str]:
    """127.0.0.2 and .3 as a second and third visitor, where this machine can send from them."""
    found = []
    for address in ("127.0.0.2", "127.0.0.3"):
        with socket.socket() as s:
            try:
                s.bind((address, 0))
            except OSError:
                pytest.skip(f"cannot send from {address} here (Linux can): one address cannot show the server cap")
        found.append(address)
    return found


@posix_only
def test_pages_past_the_caps_are_refused_with_503_and_no_kernel_while_the_open_ones_stay(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A script loading the page in a loop: past 2 pages from its address, and past 3 on the
    server, each load is answered 503 "Too many open pages" with Retry-After, before any kernel
    starts; the kernel count, and with it the memory, stays at the cap."""
    pytest.importorskip("voila", reason="pip install -e '.[browser]'")
    second, third = other_loopback_addresses()
    served = ServedPanel(tmp_path, "--max-visitors", "3", "--max-pages-per-visitor", "2", "--connect-timeout", "600",
                         key=KEY, base_url=sandbox.base_url)
    try:
        assert "Open pages: at most 3, 2 per visitor address" in served.out()
        assert [served.get_page()[0] for _ in range(2)] == [200, 200]
        status, headers, text = served.get_page()
        assert status == 503 and headers["Retry-After"] == "60" and headers["Content-Type"].startswith("text/html")
        assert "Too many open pages" in text and "You already have 2 pages of this panel open" in text
        assert KEY not in text and "smtk-notice" not in text
        assert len(served.kernels()) == 2

        assert served.get_page(second)[0] == 200  # another visitor still gets in, up to the server's cap
        status, headers, text = served.get_page(third)
        assert status == 503 and headers["Retry-After"] == "60"
        assert "This panel already has 3 pages open, as many as its server allows" in text
        one_kernel = served.kernels_rss() / 3

        for source in ["127.0.0.1", second, third] * 3:  # a script reloading in a loop
            assert served.get_page(source)[0] == 503
        assert len(served.kernels()) == 3
        print(f"\n3 kernels at the cap: {served.kernels_rss() / 2**20:.0f} MiB together "
              f"(about {one_kernel / 2**20:.0f} MiB each) after 12 page loads")
        assert served.kernels_rss() < 3 * 400 * 2**20
    finally:
        assert served.stop() == 0
    err = served.err()
    assert err.count("503 GET / (127.0.0.1)") == 4 and "Traceback" not in err
    assert served.kernels() == []


@posix_only
def test_a_kernel_whose_page_never_connects_is_ended_and_its_place_freed(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """Loaded by a script, the page never opens its kernel connection: its kernel is ended after
    the (here 3 s) connect timeout, and the server admits a page again."""
    import re

    pytest.importorskip("voila", reason="pip install -e '.[browser]'")
    served = ServedPanel(tmp_path, "--max-visitors", "1", "--connect-timeout", "3", key=KEY,
                         base_url=sandbox.base_url)
    try:
        assert served.get_page()[0] == 200
        started = re.findall(r"Kernel started: ([0-9a-f-]{36})", served.err())
        assert len(started) == 1 and len(served.kernels()) == 1
        wait_for(lambda: not served.kernels(), "the unconnected kernel to be ended (after about 3 s)")
        assert f"ending kernel {started[0]}: its page did not connect within 3 s" in served.err()
        # Freed as it leaves the map: the next loads are refused until then, and the first
        # admitted one answers 200.
        status = wait_for(lambda: (code := served.get_page()[0]) != 503 and code, "a page to be admitted again")
        assert status == 200 and len(served.kernels()) == 1
    finally:
        assert served.stop() == 0
    assert "Traceback" not in served.err()

"""`smtoolkit panel`: the cancel panel as a web page for colleagues, served safely.

Served by Voilà (the `browser` extra), running in this process: it already renders the panel,
starts one kernel per visitor (so each visitor has their own panel, and with `--ask-key` their
own key), and lets a page's visitors use its widgets but never run code in its kernel (Voilà's
kernel socket passes only widget messages), which is what keeps the server's key, sitting in the
kernel's environment, out of reach. Its login is jupyter_server's token check.

What this module adds, so that sharing is safe by default:
- 127.0.0.1 unless `--host` says otherwise; a random token, printed once with the URL, unless
  `--token`/$SMTK_PANEL_TOKEN gives one; a host other than loopback without a token is refused
  before anything listens. On loopback the Host header must name loopback too (no DNS rebinding).
- The page is generated into a private temporary folder: only it is served, not the folder
  the server was started in.
- The visitor's address (the peer of the HTTP connection, as tornado sees it: a proxy in front
  hides the real one) goes into the page's cell by a Voilà pre-launch hook, and from there into
  every audit line (`audit.py`). Voilà itself gives a kernel only the Host, path and query.
- Request logs name the path, never the query (which holds the token).
- Every page is a kernel of its own (about 100 MiB): at most `--max-visitors` are open at once and
  `--max-pages-per-visitor` from one address; past that a page request is answered 503 "Too many
  open pages" (with Retry-After) before any kernel starts, and the open pages go on working. A
  page that never opens its kernel connection within a minute of being sent (a script, a crawler)
  has its kernel ended. The rule is `limits.PageLimits`; `_limited_voila` wires it in.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..config import (
    API_KEY_ENV,
    PANEL_TOKEN_ENV,
    api_key_from,
    base_url_from_env,
    check_base_url,
    export_panel_settings,
    is_loopback,
    panel_token_from_env,
)
from ..errors import ConfigError, MissingKeyError
from .audit import DEFAULT_AUDIT, audit_path
from .limits import CONNECT_TIMEOUT, MAX_PAGES, MAX_PAGES_PER_VISITOR, RETRY_AFTER, Page, PageLimits, Refusal

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8866  # Voilà's
KERNEL_IDLE = 600  # seconds before a kernel without a page is shut down (and, with --ask-key, its key)
MIN_TOKEN_LENGTH = 16  # shorter tokens can be guessed: jupyter_server does not slow down guessing
NOTEBOOK = "smtoolkit-panel.ipynb"
LOGGER = "smtoolkit.panel"  # request logs and kernels ended, on stderr
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")  # goes in ?token= as it is


class CannotServe(Exception):
    """The page cannot be served as asked; the message says what to change (exit 2)."""


@dataclass(frozen=True)
class ServePlan:
    """How the page will be served, decided and checked before anything listens."""

    host: str
    port: int
    token: str | None
    token_from: str  # "generated", "--token", "$SMTK_PANEL_TOKEN" or "" (no token)
    ask_key: bool
    audit: Path
    base_url: str
    max_pages: int = MAX_PAGES
    max_pages_per_visitor: int = MAX_PAGES_PER_VISITOR
    connect_timeout: float = CONNECT_TIMEOUT  # seconds; an option for tests, not shown in --help
    ask_reason: bool = False  # the page has a reason box; a cancel without a reason is refused


def serve_plan(*, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
         no_token: bool = False, ask_key: bool = False, audit: str | None = None,
         base_url: str | None = None, max_pages: int = MAX_PAGES,
         max_pages_per_visitor: int = MAX_PAGES_PER_VISITOR, connect_timeout: float = CONNECT_TIMEOUT,
         ask_reason: bool = False) -> ServePlan:
    """Check the options; CannotServe (usage) or ConfigError (no key, bad base URL) before serving."""
    host = (host or "").strip()
    if not host:
        raise CannotServe("--host must name an address to listen on, such as 127.0.0.1")
    if not 0 <= port <= 65535:
        raise CannotServe(f"--port must be from 0 (a free one) to 65535, not {port}")
    if no_token and token is not None:
        raise CannotServe("--token and --no-token contradict each other: give one")
    if max_pages < 1:
        raise CannotServe(f"--max-visitors must be at least 1 (each open page is a kernel of about 100 MiB), not {max_pages}")
    if max_pages_per_visitor < 1:
        raise CannotServe(f"--max-pages-per-visitor must be at least 1, not {max_pages_per_visitor}")
    if not 0 < connect_timeout <= 86400:
        raise CannotServe(f"--connect-timeout must be more than 0 seconds and at most 86400, not {connect_timeout}")
    token_from = ""
    if not no_token:
        if token is not None:
            token_from = "--token"
        else:
            token = panel_token_from_env()
            token_from = f"${PANEL_TOKEN_ENV}" if token is not None else "generated"
        if token is None:
            token = secrets.token_urlsafe(24)
        elif len(token) < MIN_TOKEN_LENGTH or not _TOKEN_CHARS.fullmatch(token):
            raise CannotServe(f"the token from {token_from} must be at least {MIN_TOKEN_LENGTH} characters of "
                          "A-Z a-z 0-9 . _ ~ - (leave it out and a random one is made)")
    else:
        token = None
    if token is None and not is_loopback(host):
        raise CannotServe(f"refusing to serve on {host} without a token: anyone who can reach it could cancel "
                      "batches with this server's API key. Leave out --no-token (a random token is printed "
                      f"with the URL), or serve on {DEFAULT_HOST}.")
    url = check_base_url(base_url or base_url_from_env())
    if not ask_key:
        try:
            api_key_from(None)
        except MissingKeyError:
            raise ConfigError(f"no API key for the page: set {API_KEY_ENV} where you start it, or pass "
                              "--ask-key so that every visitor types their own") from None
    return ServePlan(host=host, port=port, token=token, token_from=token_from, ask_key=ask_key,
                audit=audit_path(audit or DEFAULT_AUDIT), base_url=url, max_pages=max_pages,
                max_pages_per_visitor=max_pages_per_visitor, connect_timeout=connect_timeout,
                ask_reason=ask_reason)


def page_source(visitor: str | None) -> str:
    """The page's one code cell. `visitor` is a parsed IP address, so its repr is plain code."""
    return f"from smtoolkit.ui.page import page\n\npage(visitor={visitor!r})"


def visitor_of(remote_ip: object) -> str | None:
    """The visitor's address as text, or None when it is not an IP address (a Unix socket...)."""
    try:
        return str(ipaddress.ip_address(str(remote_ip)))
    except ValueError:
        return None


def notebook_json() -> str:
    """The notebook Voilà serves (its cell is rewritten per visitor by the pre-launch hook)."""
    return json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": "smtoolkit-panel", "metadata": {},
                   "outputs": [], "source": page_source(None)}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "title": "Cancel a Supermetrics batch"},
        "nbformat": 4, "nbformat_minor": 5,
    }, indent=1)


def urls(p: ServePlan, port: int) -> list[str]:
    """The URLs to print: the one to open first (with the token only when it was generated)."""
    hosts = [p.host]
    if p.host in ("0.0.0.0", "::", ""):
        hosts = [socket.gethostname(), "127.0.0.1" if p.host != "::" else "[::1]"]
    query = f"?token={p.token}" if p.token and p.token_from == "generated" else ""
    shown = [f"[{h}]" if ":" in h and not h.startswith("[") else h for h in hosts]
    return [f"http://{h}:{port}/{query}" for h in shown]


def serve(p: ServePlan, out: IO[str] | None = None) -> int:
    """Serve the page until Ctrl-C (or SIGTERM); 0 when stopped that way."""
    try:
        import voila.app  # noqa: F401 - only: is Voilà installed
    except ImportError:
        raise ConfigError("smtoolkit panel needs Voilà: pip install 'smtoolkit[browser]'") from None

    folder = Path(tempfile.mkdtemp(prefix="smtoolkit-panel-"))  # private (0700)
    nb = folder / NOTEBOOK
    nb.write_text(notebook_json(), encoding="utf-8")
    export_panel_settings(base_url=p.base_url, audit=str(p.audit), ask_key=p.ask_key, ask_reason=p.ask_reason)
    limits = PageLimits(max_pages=p.max_pages, max_per_visitor=p.max_pages_per_visitor,
                        connect_timeout=p.connect_timeout)
    kernel_manager_class, swap_handlers = _limited_voila(limits)
    log = logging.getLogger(LOGGER)
    log.addHandler(_stderr_handler())
    log.propagate = False
    app = _panel_app_class(p, limits, swap_handlers, out or sys.stdout)(config_file_paths=[])
    try:
        app.initialize([str(nb)])
        _configure(app, p, folder, kernel_manager_class)
        app.start()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("smtoolkit panel stopped", file=sys.stderr, flush=True)
    return 0


def _panel_app_class(p: ServePlan, limits: PageLimits, swap_handlers: Callable[[list[Any]], list[Any]],
                     out: IO[str]) -> type:
    """Voilà, listening where the plan says (port 0 included), admitting pages within `limits`,
    ending the kernels of pages that never connect, and stopping on a signal."""
    import tornado.httpserver
    import tornado.ioloop
    import tornado.netutil
    from tornado.ioloop import PeriodicCallback
    from voila.app import Voila

    log = logging.getLogger(LOGGER)

    class SmtoolkitPanel(Voila):  # type: ignore[misc]  # (its name prefixes Voila's log lines)
        def init_handlers(self) -> list[Any]:
            return swap_handlers(super().init_handlers())

        async def _end_kernel(self, kernel_id: str) -> None:
            from jupyter_core.utils import ensure_async
            from tornado.web import HTTPError

            log.warning("ending kernel %s: its page did not connect within %g s", kernel_id, p.connect_timeout)
            try:
                await ensure_async(self.kernel_manager.shutdown_kernel(kernel_id))
            except (KeyError, HTTPError):  # already gone
                limits.ended(kernel_id)

        def _end_overdue(self) -> None:
            for kernel_id in limits.overdue():
                self.ioloop.add_callback(self._end_kernel, kernel_id)

        def listen(self) -> None:
            try:
                sockets = tornado.netutil.bind_sockets(p.port, p.host)
            except OSError as exc:
                self.stop()
                raise CannotServe(f"cannot listen on {p.host}:{p.port}: {exc.strerror or exc}") from None
            self.port = sockets[0].getsockname()[1]
            server = tornado.httpserver.HTTPServer(self.app)
            server.add_sockets(sockets)
            self.ioloop = tornado.ioloop.IOLoop.current()
            _stop_on_signals(self.ioloop)
            every = min(5.0, max(0.25, p.connect_timeout / 4))
            PeriodicCallback(self._end_overdue, 1000 * every).start()
            _announce(p, self.port, out)
            try:
                self.ioloop.start()
            finally:
                server.stop()
                self.stop()

    return SmtoolkitPanel


def _configure(app: Any, p: ServePlan, folder: Path, kernel_manager_class: type) -> None:
    """Set what the plan decided on an initialized app, and what nobody may loosen."""
    from traitlets.config import Config

    # The login page takes the token only: no "set a password" form, which would write the
    # server user's Jupyter configuration.
    app.update_config(Config({"PasswordIdentityProvider": {"allow_password_change": False},
                              # A kernel nobody is connected to any more (a browser that
                              # crashed instead of closing the page) ends after KERNEL_IDLE.
                              "MappingKernelManager": {"cull_idle_timeout": KERNEL_IDLE,
                                                       "cull_interval": 60, "cull_connected": False}}))
    app.open_browser = False
    app.root_dir = str(folder)
    app.token = p.token or ""  # "" means no token (Voilà's way); only allowed on loopback
    app.ip = p.host
    app.tornado_settings = {**app.tornado_settings, "log_function": _log_request,
                            "allow_remote_access": not is_loopback(p.host)}
    app.voila_configuration.prelaunch_hook = _prelaunch
    app.voila_configuration.preheat_kernel = False  # a kernel only for a visitor who got in
    app.voila_configuration.multi_kernel_manager_class = kernel_manager_class


def _prelaunch(handler: Any, notebook: Any, cwd: str) -> Any:
    """Voilà's pre-launch hook: the page's cell names the visitor's address."""
    notebook.cells[0].source = page_source(visitor_of(handler.request.remote_ip))
    # Set the XSRF cookie: the page reads it to shut its kernel down when it is closed, a
    # request jupyter_server refuses without it once the visitor got in with the token.
    handler.xsrf_token  # noqa: B018 - reading it sets the cookie
    return notebook


def _log_request(handler: Any) -> None:
    """Log the path, never the query (it holds the token); failures as warnings."""
    status = handler.get_status()
    r = handler.request
    level = logging.WARNING if status >= 400 else logging.DEBUG
    logging.getLogger(LOGGER).log(level, "%d %s %s (%s) %.1fms", status, r.method, r.path,
                                  r.remote_ip, 1000 * r.request_time())


def _limited_voila(limits: PageLimits) -> tuple[type, Callable[[list[Any]], list[Any]]]:
    """The kernel manager class and the handler swap that hold Voilà to `limits`.

    The page handler asks for a place before it starts a kernel (a refusal is a 503 and no
    kernel), binds the kernel it starts to that place, and reports when the page was sent; the
    kernel socket handler reports the page connected; the kernel manager frees the place when the
    kernel leaves its map, however it ended (left, culled, ended for never connecting, died).
    """
    import tornado.web
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from voila.tornado.handler import TornadoVoilaHandler
    from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

    class LimitedKernelManager(AsyncMappingKernelManager):  # type: ignore[misc]
        def remove_kernel(self, kernel_id: str) -> Any:
            limits.ended(kernel_id)
            return super().remove_kernel(kernel_id)

    class PageHandler(TornadoVoilaHandler):  # type: ignore[misc]
        _page: Page | None = None

        @property
        def kernel_manager(self) -> Any:
            manager = self.settings["kernel_manager"]
            return manager if self._page is None else _StartsForPage(manager, self._page, limits)

        @tornado.web.authenticated  # type: ignore[untyped-decorator]
        async def get(self, path: str | None = None) -> None:
            if path:  # not the page: Voilà redirects it to a file, no kernel (a browser's /favicon.ico)
                await super().get(path)
                return
            place = limits.admit(visitor_of(self.request.remote_ip))
            if isinstance(place, Refusal):
                _too_many_pages(self, place)
                return
            self._page = place
            try:
                await super().get(path)
            finally:
                limits.sent(place)

    class ChannelsHandler(VoilaKernelWebsocketHandler):  # type: ignore[misc]
        async def open(self, kernel_id: str) -> None:  # type: ignore[override]
            limits.connected(kernel_id)
            await super().open(kernel_id)

    swaps: dict[type, type] = {TornadoVoilaHandler: PageHandler, VoilaKernelWebsocketHandler: ChannelsHandler}
    return LimitedKernelManager, lambda handlers: _swapped(handlers, swaps)


class _StartsForPage:
    """The kernel manager as one page request sees it: the kernel it starts takes the page's place."""

    def __init__(self, manager: Any, page: Page, limits: PageLimits) -> None:
        self._manager, self._page, self._limits = manager, page, limits

    async def start_kernel(self, **kwargs: Any) -> str:
        from jupyter_core.utils import ensure_async

        kernel_id: str = await ensure_async(self._manager.start_kernel(**kwargs))
        self._limits.started(self._page, kernel_id)
        return kernel_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)


def _too_many_pages(handler: Any, refusal: Refusal) -> None:
    """Answer a page request past the limits: 503 with Retry-After, and no kernel."""
    handler.set_status(503)
    handler.set_header("Retry-After", str(RETRY_AFTER))
    handler.set_header("Content-Type", "text/html; charset=utf-8")
    handler.set_header("Cache-Control", "no-store")
    handler.finish(refusal.html())


def _swapped(handlers: list[Any], swaps: dict[type, type]) -> list[Any]:
    """Voilà's handler rules with ours in place of the ones in `swaps`; all of them must be found."""
    swapped = [(rule[0], swaps[rule[1]], *rule[2:]) if rule[1] in swaps else rule for rule in handlers]
    if sum(1 for rule in swapped if rule[1] in swaps.values()) != len(swaps):
        raise RuntimeError("this Voilà's page or kernel socket handler was not found: the page limits "
                           "cannot be applied (smtoolkit supports Voilà 0.5)")
    return swapped


def _announce(p: ServePlan, port: int, out: IO[str]) -> None:
    """What to open and how it is served, written in one piece (a reader never sees half of it)."""
    first, *more = urls(p, port)
    lines = [f"Serving the cancel panel. Open: {first}", *(f"  or: {url}" for url in more)]
    if p.token and p.token_from != "generated":
        lines.append(f"  the token is the one in {p.token_from} (add ?token=... to the URL, or type it on the "
                     "login page)")
    elif not p.token:
        lines.append("  no token: anyone on this machine can open it")
    key = ("each visitor types their own API key (--ask-key)" if p.ask_key
           else f"the API key in this server's ${API_KEY_ENV}")
    lines += [f"Key: {key}, for {p.base_url}",
              f"Audit trail: {p.audit}" + (" (every cancel needs a reason, recorded with it)" if p.ask_reason else ""),
              f"Open pages: at most {p.max_pages}, {p.max_pages_per_visitor} per visitor address", "Ctrl-C to stop."]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _stop_on_signals(ioloop: Any) -> None:
    """Ctrl-C and SIGTERM stop the loop cleanly; the kernels are then shut down."""
    loop = ioloop.asyncio_loop
    for name in ("SIGINT", "SIGTERM"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            loop.add_signal_handler(sig, ioloop.stop)  # POSIX
        except (NotImplementedError, RuntimeError, ValueError):
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(ioloop.stop))  # Windows
    if os.name == "nt":  # a select() on Windows is not woken by Ctrl-C: wake it now and then
        from tornado.ioloop import PeriodicCallback

        PeriodicCallback(lambda: None, 500).start()


def _stderr_handler() -> logging.Handler:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("[smtoolkit panel %(asctime)s] %(message)s", "%H:%M:%S"))
    return h

"""How many pages `smtoolkit panel` keeps open: every page is a kernel of its own (about 100 MiB).

A page request is admitted only while fewer than `max_pages` pages are open, and fewer than
`max_per_visitor` from the visitor's address; otherwise it is refused before any kernel starts.
A page holds its place from admission until its kernel is shut down (the page was left, the
kernel was culled, or it was ended here). A page whose kernel connection (its websocket) is not
opened within `connect_timeout` seconds after the page was sent is never going to be used (a
script, a crawler, a tab closed mid-load): `overdue()` names its kernel, and the server ends it.

Pure: no sockets and no tornado; the clock is passed in. The server calls it from its one event
loop; a lock keeps it whole anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_PAGES = 8  # open pages (kernels) at once: about 0.8 GiB
MAX_PAGES_PER_VISITOR = 3  # a page, a reload whose old kernel is not yet ended, and one more tab
CONNECT_TIMEOUT = 60.0  # seconds from a page sent to its kernel connection; browsers take 1 or 2
RETRY_AFTER = 60  # seconds, in the refusal's Retry-After


@dataclass
class Page:
    """One admitted page request and, once started, its kernel."""

    visitor: str | None
    kernel_id: str | None = None
    sent_at: float | None = None  # when the page's response ended (sent, failed or abandoned)
    connected: bool = False
    ending: bool = False  # overdue() has named it; its shutdown is under way


@dataclass(frozen=True)
class Refusal:
    """Why a page request was refused: too many pages from this visitor, or on the server."""

    per_visitor: bool
    open_pages: int
    limit: int

    def text(self) -> str:
        """One readable paragraph for the refusal page (no visitor-supplied text in it)."""
        if self.per_visitor:
            pages = "a page" if self.open_pages == 1 else f"{self.open_pages} pages"
            return (f"You already have {pages} of this panel open, as many as one visitor may have. "
                    "Close one of them, then reload this page.")
        return (f"This panel already has {self.open_pages} pages open, as many as its server allows. "
                "Try again in a minute.")

    def html(self) -> str:
        """The small page sent with the 503."""
        return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Too many open pages</title>'
                '<meta name="viewport" content="width=device-width"></head>'
                '<body style="font-family:sans-serif;max-width:40em;margin:3em auto;color:#222">'
                f'<h1>Too many open pages</h1><p class="smtk-refusal">{self.text()}</p></body></html>')


class PageLimits:
    """The open pages of one server, and the one rule that admits a new one."""

    def __init__(self, *, max_pages: int = MAX_PAGES, max_per_visitor: int = MAX_PAGES_PER_VISITOR,
                 connect_timeout: float = CONNECT_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        if max_pages < 1 or max_per_visitor < 1 or not connect_timeout > 0:
            raise ValueError("max_pages and max_per_visitor must be at least 1, connect_timeout more than 0")
        self.max_pages = max_pages
        self.max_per_visitor = max_per_visitor
        self.connect_timeout = connect_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._pages: list[Page] = []

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)

    def admit(self, visitor: str | None) -> Page | Refusal:
        """A place for a new page from `visitor`, or why there is none."""
        with self._lock:
            mine = sum(1 for p in self._pages if p.visitor == visitor)
            if mine >= self.max_per_visitor:
                return Refusal(per_visitor=True, open_pages=mine, limit=self.max_per_visitor)
            if len(self._pages) >= self.max_pages:
                return Refusal(per_visitor=False, open_pages=len(self._pages), limit=self.max_pages)
            page = Page(visitor)
            self._pages.append(page)
            return page

    def started(self, page: Page, kernel_id: str) -> None:
        """The page's kernel is running."""
        with self._lock:
            page.kernel_id = kernel_id

    def sent(self, page: Page) -> None:
        """The page's response has ended; a page that never got a kernel gives its place back."""
        with self._lock:
            if page.sent_at is None:
                page.sent_at = self._clock()
            if page.kernel_id is None and page in self._pages:
                self._pages.remove(page)

    def connected(self, kernel_id: str) -> None:
        """A kernel connection (websocket) to this kernel was opened: its page is in use."""
        with self._lock:
            for p in self._pages:
                if p.kernel_id == kernel_id:
                    p.connected = True

    def ended(self, kernel_id: str) -> Page | None:
        """The kernel is gone (shut down, culled, died): its page's place is free."""
        with self._lock:
            for p in self._pages:
                if p.kernel_id == kernel_id:
                    self._pages.remove(p)
                    return p
        return None

    def overdue(self) -> list[str]:
        """Kernels whose page was sent `connect_timeout` ago or more and never connected; each is
        named once (the caller shuts it down, and `ended` frees its place)."""
        now = self._clock()
        with self._lock:
            due = [p for p in self._pages if p.kernel_id is not None and not p.connected and not p.ending
                   and p.sent_at is not None and now - p.sent_at >= self.connect_timeout]
            for p in due:
                p.ending = True
            return [p.kernel_id for p in due if p.kernel_id is not None]

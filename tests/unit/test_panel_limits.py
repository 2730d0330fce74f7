"""The page limits of `smtoolkit panel` (`ui.limits.PageLimits`), story by story on a fake clock.
The server wired to them is tested in tests/e2e/test_panel_server.py and the browser tests."""

from __future__ import annotations

import pytest

from smtoolkit.ui.limits import Page, PageLimits, Refusal
from tests.helpers import FakeClock


def limits(clock: FakeClock, *, pages: int = 3, per_visitor: int = 2, timeout: float = 60.0) -> PageLimits:
    return PageLimits(max_pages=pages, max_per_visitor=per_visitor, connect_timeout=timeout, clock=clock.now)


def open_page(lim: PageLimits, visitor: str | None, kernel_id: str) -> Page:
    page = lim.admit(visitor)
    assert isinstance(page, Page)
    lim.started(page, kernel_id)
    lim.sent(page)
    return page


def test_a_visitor_past_their_cap_is_refused_while_others_still_get_in() -> None:
    lim = limits(FakeClock())
    open_page(lim, "10.0.0.1", "k1")
    open_page(lim, "10.0.0.1", "k2")
    refused = lim.admit("10.0.0.1")
    assert refused == Refusal(per_visitor=True, open_pages=2, limit=2)
    assert "You already have 2 pages" in refused.text() and "Too many open pages" in refused.html()
    assert isinstance(lim.admit("10.0.0.2"), Page)
    assert len(lim) == 3


def test_past_the_server_cap_everyone_is_refused_until_a_kernel_ends() -> None:
    lim = limits(FakeClock())
    for n, visitor in enumerate(["a", "b", "c"]):
        open_page(lim, visitor, f"k{n}")
    refused = lim.admit("d")
    assert refused == Refusal(per_visitor=False, open_pages=3, limit=3)
    assert "as many as its server allows" in refused.text()
    assert lim.ended("k1") is not None and lim.ended("k1") is None  # freed once
    assert isinstance(lim.admit("d"), Page)


def test_a_page_that_never_got_a_kernel_gives_its_place_back_when_its_response_ends() -> None:
    lim = limits(FakeClock(), pages=1)
    page = lim.admit(None)
    assert isinstance(page, Page) and isinstance(lim.admit(None), Refusal)
    lim.sent(page)  # a redirect, an error before the kernel started, a closed connection
    assert len(lim) == 0 and isinstance(lim.admit(None), Page)


def test_a_kernel_whose_page_never_connects_is_named_once_after_the_timeout_counted_from_the_page_sent() -> None:
    clock = FakeClock()
    lim = limits(clock, timeout=60)
    slow = lim.admit("a")
    assert isinstance(slow, Page)
    lim.started(slow, "rendering")  # still being rendered: not counted yet
    open_page(lim, "a", "never")
    used = open_page(lim, "b", "used")
    lim.connected("used")
    assert used.connected
    clock.sleep(59.9)
    assert lim.overdue() == []
    clock.sleep(0.1)
    assert lim.overdue() == ["never"]
    assert lim.overdue() == []  # its shutdown is under way: not named twice
    assert len(lim) == 3  # the place is freed when the kernel has gone, not before
    lim.ended("never")
    clock.sleep(1000)
    assert lim.overdue() == []  # the connected page stays; the one still rendering is not counted
    lim.sent(slow)
    clock.sleep(60)
    assert lim.overdue() == ["rendering"]


def test_a_page_that_connected_is_never_ended_here_even_after_it_disconnects() -> None:
    clock = FakeClock()
    lim = limits(clock, timeout=1)
    open_page(lim, "a", "k")
    lim.connected("k")
    clock.sleep(10_000)  # a page left without a shutdown beacon is culled by the server when idle
    assert lim.overdue() == [] and len(lim) == 1


@pytest.mark.parametrize("kwargs", [{"max_pages": 0}, {"max_per_visitor": 0}, {"connect_timeout": 0},
                                    {"connect_timeout": float("nan")}])
def test_limits_that_would_refuse_every_page_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PageLimits(**kwargs)  # type: ignore[arg-type]

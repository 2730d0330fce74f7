"""The progress bar: tqdm.auto (a widget in Jupyter, text elsewhere) with live counts per
outcome and the remaining hourly budget. Updated only from the thread running the run.

In Jupyter the bar is a widget; where the server lacks the widget front-end, Jupyter shows the
widget's plain-text form instead, frozen at the moment it was displayed. That text says so, and
what to install where (`_hinted`)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .core.outcomes import Result

_REFRESH = 0.2  # seconds between postfix refreshes


class _CtrlCHeld:
    """Holds a Ctrl-C that arrives while tqdm works in the main thread until it is done, then
    lets the handler that was there take it (Python's raises KeyboardInterrupt).

    tqdm guards every bar with one process-wide lock; an interrupt raised while that lock is
    held leaves it held, and every later bar (or a finished one that another thread's garbage
    collection closes) then waits forever. Only the main thread receives Ctrl-C, so elsewhere
    this does nothing. SIGINT and `signal.signal` exist on Windows too."""

    def __enter__(self) -> None:
        self._previous: Any = None
        self._caught: tuple[int, Any] | None = None
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)
        if callable(previous):
            self._previous = previous
            signal.signal(signal.SIGINT, self._hold)

    def _hold(self, signum: int, frame: Any) -> None:
        self._caught = (signum, frame)

    def __exit__(self, *exc: object) -> None:
        if self._previous is None:
            return
        signal.signal(signal.SIGINT, self._previous)
        if self._caught is not None:
            self._previous(*self._caught)


class Progress:
    """A bar over `total` items; a no-op when disabled. A Ctrl-C never lands inside tqdm (see
    `_CtrlCHeld`): it arrives as soon as the bar's own step is done."""

    def __init__(self, total: int, *, enabled: bool, desc: str,
                 facts: Callable[[], dict[str, Any]] | None = None, tqdm_class: type | None = None,
                 waiting: Callable[[], dict[str, float] | None] | None = None) -> None:
        """`facts` returns the run's live facts (client.pacing() and polls) for the postfix;
        `waiting` says whether the run waits for the hourly budget (`BudgetWait.status`);
        `tqdm_class` defaults to `tqdm.auto.tqdm` (a widget in Jupyter, text elsewhere)."""
        self.counts: Counter[str] = Counter()
        self._facts = facts
        self._waiting = waiting
        self._desc = self._shown = desc
        self._last = 0.0
        self._bar: Any = None
        # No stderr at all (pythonw, a service, `2>&-`): a text bar has nowhere to go.
        if enabled and total and (tqdm_class is not None or sys.stderr is not None):
            if tqdm_class is None:
                from tqdm.auto import tqdm as auto_tqdm

                tqdm_class = auto_tqdm
            with _CtrlCHeld():
                self._bar = _hinted(tqdm_class)(total=total, desc=desc, unit="batch", dynamic_ncols=True,
                                                leave=True)

    def update(self, result: Result, advance: int = 1) -> None:
        self.counts[result.outcome.value] += 1
        if self._bar is None:
            return
        with _CtrlCHeld():
            self._update(advance)

    def _update(self, advance: int) -> None:
        self._bar.update(advance)
        now = time.monotonic()
        if now - self._last >= _REFRESH:
            self._last = now
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self.tick()

    def tick(self) -> None:
        """Say in the bar's text whether the run is waiting for the budget, since when, and
        when it looks next (called while idle, from the thread running the run)."""
        if self._bar is None or self._waiting is None:
            return
        w = self._waiting()
        text = self._desc if w is None else waiting_text(w, time.time())
        if text != self._shown:
            self._shown = text
            with _CtrlCHeld():
                self._bar.set_description_str(text, refresh=True)

    def postfix(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.counts.items())]
        if self._facts is not None:
            info = self._facts()
            if info.get("ratelimit_remaining") is not None:
                parts.append(f"budget={info['ratelimit_remaining']}")
            if info.get("polls"):
                parts.append(f"polls={info['polls']}")
        return " ".join(parts)

    def close(self, halted: str | None = None) -> None:
        """Finish the bar; a run that `halted` (interrupted, auth, reserve, unreachable, error) ends red with
        the reason in its text, never as a green 100%."""
        if self._bar is not None:
            with _CtrlCHeld():
                self._close(halted)
            self._bar = None

    def _close(self, halted: str | None) -> None:
        if halted:
            self._bar.set_description_str(f"halted ({halted})", refresh=False)
            self._bar.colour = "#c0392b"  # red in a terminal (ANSI) and in a notebook widget
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.refresh()
        else:
            if self._shown != self._desc:
                self._bar.set_description_str(self._desc, refresh=False)
            self._bar.set_postfix_str(self.postfix(), refresh=True)
        self._bar.close()
        if halted and _is_widget(type(self._bar)):
            # tqdm's widget ends green whenever n == total; a halted run's rows are all
            # accounted for, yet it did not finish: say so with the "danger" style.
            self._bar.disp(bar_style="danger", check_delay=False)


def waiting_text(status: dict[str, float], now: float) -> str:
    """'waiting for the hourly budget (reserve reached) since 14:03:10 UTC, next look in 42 s'."""
    since = time.strftime("%H:%M:%S", time.gmtime(status["since"]))
    text = f"waiting for the hourly budget (reserve reached) since {since} UTC"
    nxt = status.get("next_look")
    if nxt is not None and nxt == nxt:  # not NaN
        text += f", next look in {max(0, round(nxt - now))} s"
    return text


WIDGET_HINT = ("this is a progress bar widget that this Jupyter cannot draw: it has no widget front-end. "
               "Install it where Jupyter runs (pip install jupyterlab_widgets, or ipywidgets, in the "
               "server's environment), restart Jupyter and reload the page. The run is not affected.")


def _is_widget(cls: type) -> bool:
    try:
        from tqdm.notebook import tqdm_notebook
    except ImportError:  # pragma: no cover - tqdm always ships it
        return False
    return issubclass(cls, tqdm_notebook)


_HINTED: dict[Any, Any] = {}
BAR_MIN_WIDTH = "160px"


def _hinted(cls: Any) -> Any:
    """A subclass of `cls` whose refresh releases tqdm's lock even when drawing fails (tqdm's
    own leaves it held, and every later bar then waits forever); for tqdm's notebook widget,
    also a plain-text form (what Jupyter shows when it cannot draw widgets) that says so and
    what to install, in full."""
    if cls not in _HINTED:
        attrs: dict[str, Any] = {"refresh": _safe_refresh, "__module__": __name__}
        if _is_widget(cls):
            def status_printer(*args: Any, **kwargs: Any) -> Any:
                container = cls.status_printer(*args, **kwargs)
                container.__class__ = _hinted_box(type(container))
                # tqdm gives the bar only what its long counts text leaves (a few pixels in a
                # narrow JupyterLab pane); keep it visible and let the text wrap instead.
                container.children[1].layout.min_width = BAR_MIN_WIDTH
                return container

            attrs["status_printer"] = staticmethod(status_printer)
        _HINTED[cls] = type(cls.__name__, (cls,), attrs)
    return _HINTED[cls]


def _safe_refresh(self: Any, nolock: bool = False, lock_args: Any = None) -> bool | None:
    """tqdm's `refresh`, with the lock released in a `finally`."""
    if self.disable:
        return None
    if not nolock:
        if lock_args:
            if not self._lock.acquire(*lock_args):
                return False
        else:
            self._lock.acquire()
    try:
        self.display()
    finally:
        if not nolock:
            self._lock.release()
    return True


def _hinted_box(box: Any) -> Any:
    def __repr__(self: Any, pretty: bool = False) -> str:
        return f"{box.__repr__(self, pretty)}  [{WIDGET_HINT}]"

    def _repr_mimebundle_(self: Any, **kwargs: Any) -> Any:
        # ipywidgets cuts the plain text at 110 characters; the hint must arrive whole.
        bundle = box._repr_mimebundle_(self, **kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict) and "text/plain" in data:
            data["text/plain"] = repr(self)
        return bundle

    return type(box.__name__, (box,), {"__repr__": __repr__, "_repr_mimebundle_": _repr_mimebundle_,
                                       "__module__": __name__})

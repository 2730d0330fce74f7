"""The progress bar: tqdm.auto (a widget in Jupyter, text elsewhere) with live counts per
outcome and the remaining hourly budget. Updated only from the thread running the run."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .core.outcomes import Result

_REFRESH = 0.2  # seconds between postfix refreshes


class Progress:
    """A bar over `total` items; a no-op when disabled."""

    def __init__(self, total: int, *, enabled: bool, desc: str,
                 facts: Callable[[], dict[str, Any]] | None = None) -> None:
        """`facts` returns the run's live facts (client.pacing() and polls) for the postfix."""
        self.counts: Counter[str] = Counter()
        self._facts = facts
        self._last = 0.0
        self._bar: Any = None
        if enabled and total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True, leave=True)

    def update(self, result: Result, advance: int = 1) -> None:
        self.counts[result.outcome.value] += 1
        if self._bar is None:
            return
        self._bar.update(advance)
        now = time.monotonic()
        if now - self._last >= _REFRESH:
            self._last = now
            self._bar.set_postfix_str(self.postfix(), refresh=False)

    def note(self, text: str) -> None:
        if self._bar is not None:
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
        """Finish the bar; a run that `halted` (interrupted, auth, reserve, error) ends red with
        the reason in its text, never as a green 100%."""
        if self._bar is not None:
            if halted:
                self._bar.set_description_str(f"halted ({halted})", refresh=False)
                self._bar.colour = "#c0392b"  # red in a terminal (ANSI) and in a notebook widget
                self._bar.set_postfix_str(self.postfix(), refresh=False)
                self._bar.refresh()
            else:
                self._bar.set_postfix_str(self.postfix(), refresh=True)
            self._bar.close()
            self._bar = None

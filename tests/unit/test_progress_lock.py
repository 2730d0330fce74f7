"""tqdm guards every bar with one process-wide lock, and its `refresh` releases it only when
drawing succeeds; an interrupt inside the lock leaves it held too. Either way every later bar
(or a finished bar that another thread's garbage collection closes) then waits forever: the
suite once hung that way on a loaded machine. Our bars release it whatever happens."""

from __future__ import annotations

import _thread
import io
import threading
from typing import Any

import pytest
from tqdm import tqdm

from smtoolkit.core.outcomes import Outcome, Result
from smtoolkit.progress import Progress
from tests.helpers import GUARD


def _another_thread_can_draw() -> bool:
    """A bar made, drawn and closed in another thread, as a run's worker would (a guard, not
    an expected time: it takes milliseconds unless the lock was left held)."""
    t = threading.Thread(target=lambda: tqdm(range(3), file=io.StringIO()).close(), daemon=True)
    t.start()
    t.join(GUARD)
    return not t.is_alive()


def _row() -> Result:
    return Result(batch_id="qrb_0000000000aa", outcome=Outcome.CANCELLED)


class _BrokenStream(io.StringIO):
    broken = True

    def write(self, text: str) -> int:
        if self.broken:
            raise OSError("the terminal went away")
        return super().write(text)


def test_a_bar_whose_drawing_fails_leaves_the_lock_free() -> None:
    stream = _BrokenStream()

    class FailingBar(tqdm):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(file=stream, mininterval=0, delay=1e9, **kwargs)  # no drawing at start

        def update(self, n: float | None = 1) -> bool | None:
            self.delay = 0
            return super().update(n)

    p = Progress(5, enabled=True, desc="x", tqdm_class=FailingBar)
    with pytest.raises(OSError):
        p.update(_row())
    assert _another_thread_can_draw()
    stream.broken = False
    p.close()


def test_ctrl_c_while_the_bar_draws_arrives_after_the_drawing() -> None:
    drawn: list[bool] = []
    interrupted: list[bool] = []

    class Interrupted(tqdm):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(file=io.StringIO(), mininterval=0, **kwargs)

        def display(self, *args: Any, **kwargs: Any) -> Any:
            if self.n and not interrupted:  # the first update's drawing: Ctrl-C lands here, inside tqdm's lock
                interrupted.append(True)
                _thread.interrupt_main()
                drawn.clear()
            out = super().display(*args, **kwargs)
            drawn.append(True)
            return out

    p = Progress(5, enabled=True, desc="x", tqdm_class=Interrupted)
    with pytest.raises(KeyboardInterrupt):
        p.update(_row())
    assert drawn and drawn[-1]  # the drawing finished before the interrupt was raised
    assert _another_thread_can_draw()
    p.close()

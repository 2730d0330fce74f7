"""Shared fixtures, one per thing: a clean environment for every test, a fresh sandbox on
127.0.0.1 (configured per module or test with `@pytest.mark.sandbox(**settings)`, e.g. its
key), a fast client and a plain requests session (`api`) pointed at it. Shared helpers live in
`tests/helpers.py` (among them `wait_for` and `nothing_more_sent`: tests wait on events, never
on the clock), browser pieces in `tests/browser/chromium.py`."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from smtoolkit import Client
from smtoolkit.sandbox import Sandbox
from tests.helpers import Api, fast_client

# A shell that starts the suite in the background without job control (`cmd &` in a script,
# nohup) hands it SIGINT ignored, and then neither Ctrl-C nor `_thread.interrupt_main` reaches
# Python, here or in the CLI children (they inherit it): the interrupt tests need Python's own.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# No per-example deadline: it is a wall-clock bound, and the suite runs on loaded machines.
# (The notebooks' job runs on the plain install, without hypothesis.)
try:
    from hypothesis import settings
except ImportError:
    pass
else:
    settings.register_profile("smtoolkit", deadline=None)
    settings.load_profile("smtoolkit")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's SUPERMETRICS_* settings (a real key must never be used)."""
    for name in [n for n in os.environ if n.startswith("SUPERMETRICS_")]:
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def ctrl_c_reaches_python() -> Iterator[None]:
    """Ctrl-C (and `_thread.interrupt_main`) raises KeyboardInterrupt before and after every
    test: a test that leaves another SIGINT handler behind (an event loop's, a held one) would
    silently swallow the interrupts of the tests after it in the same worker. Named here."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"the test left SIGINT handled by {after!r} (was {before!r})")


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A running sandbox: manual progression, default limits (20/s, 5000/h), no faults,
    unless the test or its module says otherwise with `@pytest.mark.sandbox(...)`."""
    settings: dict[str, object] = {"seed": 1}
    marker = request.node.get_closest_marker("sandbox")
    if marker is not None:
        settings.update(marker.kwargs)
    with Sandbox(**settings) as sb:  # type: ignore[arg-type]
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    """A client for `sandbox` with fast backoff so retry tests stay quick."""
    with fast_client(sandbox) as c:
        yield c


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[Api]:
    """A requests session pointed at `sandbox`'s API, with its key."""
    with Api(sandbox) as a:
        yield a

"""Shared fixtures, one per thing: a clean environment for every test, a fresh sandbox on
127.0.0.1 (configured per module or test with `@pytest.mark.sandbox(**settings)`, e.g. its
key), a fast client and a plain requests session (`api`) pointed at it. Shared helpers live in
`tests/helpers.py` (among them `wait_for` and `nothing_more_sent`: tests wait on events, never
on the clock), browser pieces in `tests/browser/chromium.py`."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from smtoolkit import Client
from smtoolkit.sandbox import Sandbox
from tests.helpers import Api, fast_client

# No per-example deadline: it is a wall-clock bound, and the suite runs on loaded machines.
settings.register_profile("smtoolkit", deadline=None)
settings.load_profile("smtoolkit")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's SUPERMETRICS_* settings (a real key must never be used)."""
    for name in [n for n in os.environ if n.startswith("SUPERMETRICS_")]:
        monkeypatch.delenv(name)


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

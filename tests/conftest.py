"""Shared fixtures: a fresh sandbox per test on 127.0.0.1, and a client pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtoolkit import Client
from smtoolkit.sandbox import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A running sandbox: manual progression, default limits (20/s, 5000/h), no faults."""
    with Sandbox(seed=1) as sb:
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    """A client for `sandbox` with fast backoff so retry tests stay quick."""
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url, timeout=5.0,
                backoff_base=0.05, backoff_cap=0.5) as c:
        yield c

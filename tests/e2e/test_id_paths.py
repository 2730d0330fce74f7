"""Property: whatever a user pastes, it is refused locally (`invalid_id`) or it reaches the
server as exactly /enterprise/v2/query/batch/<one percent-encoded segment>. Over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smtoolkit import Client, Outcome
from smtoolkit.sandbox import Sandbox

PREFIX = "/enterprise/v2/query/batch/"

nasty = st.sampled_from(["..", ".", "/", "?", "#", "%2e%2e", "%2F", "a/../b", "qrb_1?x=1", "qrb_1#f",
                         "\x00", "\r\n", "\u202e", "qrb_\u00e9", " qrb_1 ", "~", "-", "_", "a" * 257])
ids = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="abcXYZ019._~-/%?#", max_size=20),
    nasty,
    st.lists(nasty, min_size=1, max_size=4).map("".join),
    st.integers(),
    st.floats(allow_nan=True),
    st.none(),
)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Sandbox, Client]]:
    with Sandbox(per_second=10_000, hourly_limit=1_000_000) as sb:
        with Client(api_key=sb.api_key, base_url=sb.base_url, max_rps=10_000, max_retries=0) as c:
            yield sb, c


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=ids)
@example(value="qrb_3feb5ff5c71e")
@example(value="a.b~c-d_e")
def test_an_id_is_refused_or_sent_as_one_segment(server: tuple[Sandbox, Client], value: object) -> None:
    sb, client = server
    before = len(sb.requests)
    result = client.cancel(value)  # type: ignore[arg-type]
    sent = sb.requests[before:]
    if result.outcome is Outcome.INVALID_ID:
        assert sent == []
        assert result.error_code == "INVALID_BATCH_ID" and result.error_message
        return
    assert len(sent) == 1, sent
    target = sent[0]["target"]
    assert target.startswith(PREFIX)
    segment = target[len(PREFIX):]
    assert segment and "/" not in segment and "?" not in segment and "#" not in segment
    assert unquote(segment) == result.batch_id
    assert segment == quote(str(result.batch_id), safe="")
    assert result.outcome is Outcome.NOT_FOUND  # no such batch: the server looked up exactly that ID



@pytest.mark.parametrize("value", ["qrb_3feb5ff5c71e", "a.b", "~x", "A-Z_09", "...a", " qrb_1\t", 12345])
def test_valid_odd_ids_are_sent_as_themselves(server: tuple[Sandbox, Client], value: object) -> None:
    sb, client = server
    before = len(sb.requests)
    result = client.cancel(value)  # type: ignore[arg-type]
    (entry,) = sb.requests[before:]
    assert entry["target"] == PREFIX + str(value).strip()
    assert result.outcome is Outcome.NOT_FOUND and result.batch_id == str(value).strip()

"""What a notebook user sees: a halted run looks halted, shares read as percentages, and the
panel says what to install when widgets cannot be drawn."""

from __future__ import annotations

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.sandbox import Sandbox


@pytest.mark.sandbox(hourly_limit=12)
def test_a_halted_run_ends_its_bar_red_with_the_reason(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    ids = sandbox.create_batches(20)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url, reserve=5) as c:
        with pytest.warns(UserWarning, match="budget reserve"):
            report = sm.cancel_batches(ids, client=c, progress=True)
    assert report.attrs["stopped"] == "reserve"
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "halted (reserve)" in last and "\x1b[" in last  # the reason, in colour (ANSI in a terminal)


def test_a_run_that_finished_is_not_marked_halted(sandbox: Sandbox, client: Client,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sm.cancel_batches(sandbox.create_batches(3), client=client, progress=True)
    err = capsys.readouterr().err
    assert "halted" not in err and "cancelled=3" in err


def test_summarize_gives_percentages_with_one_decimal() -> None:
    report = pd.DataFrame({"outcome": ["cancelled"] * 35 + ["not_found"] * 5 + ["skipped"] * 3})
    s = sm.summarize(report)
    assert list(s["percent"]) == [81.4, 11.6, 7.0] and s["percent"].dtype == "float64"
    assert list(s["count"]) == [35, 5, 3] and abs(s["share"].sum() - 1) < 1e-3
    assert "81.4" in s.to_string() and "7.0" in s.to_string()


def test_the_panel_says_what_to_install_when_widgets_cannot_render(sandbox: Sandbox, client: Client) -> None:
    text = repr(sm.CancelPanel(client=client))
    assert text.startswith("<CancelPanel actions=0>") and "jupyterlab_widgets" in text
    assert sandbox.api_key not in text

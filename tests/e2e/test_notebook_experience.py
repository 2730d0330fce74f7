"""What a notebook user sees: a halted run looks halted, shares read as percentages, and the
panel says what to install when widgets cannot be drawn."""

from __future__ import annotations

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.progress import WIDGET_HINT, Progress
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


def test_the_panel_hint_reaches_jupyter_whole() -> None:
    # ipywidgets cuts a widget's plain text at 110 characters; that text is all a user sees
    # when the front-end is missing, so the panel sends it whole.
    from smtoolkit.sandbox import Sandbox

    with Sandbox() as api, Client(api_key=api.api_key, base_url=api.base_url) as c:
        bundle = sm.CancelPanel(client=c)._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "pip install jupyterlab_widgets" in data["text/plain"] and "reload the page" in data["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in data


# -- the bar as a notebook widget (tqdm.notebook), and as text, in each halted state -------------

HALTS = ["interrupt", "auth", "reserve", "error"]


def _result(outcome: str = "cancelled") -> sm.Result:
    from smtoolkit.core.outcomes import Outcome

    return sm.Result(batch_id="b", outcome=Outcome(outcome))


def _widget_bar(capsys: pytest.CaptureFixture[str], total: int = 3) -> tuple[Progress, str]:
    from tqdm.notebook import tqdm as notebook_tqdm

    bar = Progress(total, enabled=True, desc="cancelling", tqdm_class=notebook_tqdm)
    # Outside a kernel, IPython's display() prints the widget's plain text: exactly what a
    # Jupyter without the widget front-end shows in its place.
    return bar, capsys.readouterr().out


def test_the_widget_bar_says_what_to_install_when_it_cannot_render(capsys: pytest.CaptureFixture[str]) -> None:
    bar, shown = _widget_bar(capsys)
    assert "0/3" in shown and "pip install jupyterlab_widgets" in shown and "reload the page" in shown
    bundle = bar._bar.container._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert WIDGET_HINT in data["text/plain"]  # whole, not cut at 110 characters
    assert "application/vnd.jupyter.widget-view+json" in data
    bar.close()


def test_the_text_bar_has_no_widget_hint(capsys: pytest.CaptureFixture[str]) -> None:
    from tqdm import tqdm as text_tqdm

    bar = Progress(2, enabled=True, desc="cancelling", tqdm_class=text_tqdm)
    bar.update(_result())
    bar.close()
    assert "jupyterlab_widgets" not in capsys.readouterr().err


@pytest.mark.parametrize("halt", HALTS)
def test_a_halted_widget_bar_is_red_with_the_reason(halt: str, capsys: pytest.CaptureFixture[str]) -> None:
    bar, _ = _widget_bar(capsys)
    for outcome in ("cancelled", "skipped", "skipped"):
        bar.update(_result(outcome))
    container = bar._bar.container
    bar.close(halted=halt)
    label, progress, counts = container.children
    text = (label.value + " " + counts.value).replace("\u2007", " ")  # tqdm spaces its HTML with U+2007
    assert progress.value == progress.max == 3
    assert progress.bar_style == "danger" and progress.style.bar_color == "#c0392b"
    assert f"halted ({halt})" in text and "skipped=2" in text


def test_a_finished_widget_bar_is_green(capsys: pytest.CaptureFixture[str]) -> None:
    bar, _ = _widget_bar(capsys, total=2)
    container = bar._bar.container
    bar.update(_result())
    bar.update(_result())
    bar.close()
    progress = container.children[1]
    assert progress.bar_style == "success" and "halted" not in container.children[0].value


@pytest.mark.parametrize("halt", HALTS)
def test_a_halted_text_bar_is_red_with_the_reason(halt: str, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm import tqdm as text_tqdm

    monkeypatch.setenv("COLUMNS", "250")  # tqdm 4.66 cuts a bar at the width it finds (80 when not a terminal)

    bar = Progress(2, enabled=True, desc="cancelling", tqdm_class=text_tqdm)
    bar.update(_result())
    bar.update(_result("skipped"))
    bar.close(halted=halt)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"halted ({halt})" in last and "\x1b[" in last and "skipped=1" in last


def test_an_auth_stopped_run_ends_its_bar_halted(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    ids = sandbox.create_batches(10)
    with Client(api_key="not-the-key", base_url=sandbox.base_url) as c:
        with pytest.warns(UserWarning):
            report = sm.cancel_batches(ids, client=c, progress=True)
    assert report.attrs["stopped"] == "auth"
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "halted (auth)" in last and "\x1b[" in last


def test_an_interrupted_run_ends_its_bar_halted(sandbox: Sandbox, client: Client,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import _thread
    import threading

    sandbox.set_faults(latency=0.1)
    ids = sandbox.create_batches(200)
    timer = threading.Timer(0.8, _thread.interrupt_main)
    timer.start()
    with pytest.warns(UserWarning, match="interrupted"):
        report = sm.cancel_batches(ids, client=client, progress=True)
    timer.cancel()
    assert report.attrs["stopped"] == "interrupt"
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "halted (interrupt)" in last and "\x1b[" in last

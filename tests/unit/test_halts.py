"""Why a run halts: one table of row codes and messages (`runner.Halt`)."""

from __future__ import annotations

import pytest

from smtoolkit.core import outcomes as oc
from smtoolkit.core.outcomes import Outcome, Result
from smtoolkit.core.reasons import Reason
from smtoolkit.core.settle import not_sent
from smtoolkit.errors import JournalError
from smtoolkit.limiter import RunContext
from smtoolkit.runner import UNREACHABLE_ROWS, Halt, Operation, RunResult, halt_label, run


@pytest.mark.parametrize("halt, code", [(Halt.AUTH, "SKIPPED_AUTH_FAILED"), (Halt.RESERVE, "BUDGET_RESERVE"),
                                        (Halt.UNREACHABLE, "SKIPPED_UNREACHABLE"),
                                        (Halt.INTERRUPT, "INTERRUPTED"), (Halt.ERROR, "RUN_ERROR")])
def test_each_halt_has_one_code_a_row_message_and_a_run_message(halt: Halt, code: str) -> None:
    error = RuntimeError("boom") if halt is Halt.ERROR else None
    got_code, row = halt_label(halt, error)
    assert got_code == code and row.startswith("not sent")
    message = RunResult({}, halt, error).message(7)
    assert message is not None and "7 row(s) not sent" in message
    if error is not None:
        assert "RuntimeError: boom" in message and "boom" in row


def test_a_journal_failure_names_the_file() -> None:
    err = JournalError("the journal 'x.jsonl' could not be written (No space left on device)")
    code, row = halt_label(Halt.ERROR, err)
    assert code == "JOURNAL_ERROR" and "x.jsonl" in row and "No space left" in row
    message = RunResult({}, Halt.ERROR, err).message(3)
    assert message is not None and "skipped/JOURNAL_ERROR" in message


def test_a_run_that_did_not_halt_says_nothing() -> None:
    assert RunResult({}).message(0) is None and str(Halt.AUTH) == "auth"


# -- a run that cannot reach the API -------------------------------------------------------------
def _cannot_connect(batch_id: str) -> Result:
    return Result(batch_id, Outcome.NETWORK_ERROR, error_code=oc.CONNECT_FAILED, attempts=3,
                  error_message="not sent: 127.0.0.1:9 refused the connection",
                  error_description="Check the base URL (host and port), and that the server or proxy there is running.")


def _scripted(script: list[str]) -> tuple[list[str], Operation]:
    """IDs and an operation answering row i per script[i] ("F": could not connect, "ok":
    cancelled); rows beyond the script wait for the run to halt, then are refused as not sent
    (as the client's gate refuses them), so a run that never halts fails the test."""
    ids = [f"qrb_{i}" for i in range(len(script) + 20)]

    def operation(batch_id: str, context: RunContext) -> Result:
        i = int(batch_id.split("_")[1])
        if i < len(script):
            return _cannot_connect(batch_id) if script[i] == "F" else Result(batch_id, Outcome.CANCELLED, attempts=1)
        assert context.halt.wait(30), "the run never halted"
        return not_sent(batch_id, Reason.HALTED)

    return ids, operation


def test_rows_that_keep_failing_to_connect_halt_the_run_and_say_why() -> None:
    ids, operation = _scripted(["F"] * UNREACHABLE_ROWS)
    out = run(ids, operation, workers=1)
    assert out.halt is Halt.UNREACHABLE and out.error is None
    rows = [out.results[i] for i in ids]
    assert all(r.error_code == oc.CONNECT_FAILED for r in rows[:UNREACHABLE_ROWS])
    rest = rows[UNREACHABLE_ROWS:]
    assert all(r.outcome is Outcome.SKIPPED and r.error_code == oc.SKIPPED_UNREACHABLE for r in rest)
    assert all(r.error_message == "not sent: the API could not be reached (127.0.0.1:9 refused the connection)"
               for r in rest)
    message = out.message(len(rest))
    assert message is not None
    assert "could not be reached (127.0.0.1:9 refused the connection)" in message
    assert f"{len(rest)} row(s) not sent (skipped/SKIPPED_UNREACHABLE)" in message
    assert "Check the base URL (host and port)" in message and "CONNECT_FAILED" in message


def test_one_row_that_reached_the_api_resets_the_count() -> None:
    below = ["F"] * (UNREACHABLE_ROWS - 1)
    script = below + ["ok"] + below + ["ok"] + below + ["F"]
    ids, operation = _scripted(script)
    out = run(ids, operation, workers=1)
    assert out.halt is Halt.UNREACHABLE
    n = len(script)  # rows up to the halt: each given its own result
    assert [out.results[i].outcome for i in ids[:n]].count(Outcome.CANCELLED) == 2
    assert all(out.results[i].outcome is not Outcome.SKIPPED for i in ids[:n])
    assert all(out.results[i].error_code == oc.SKIPPED_UNREACHABLE for i in ids[n:])


def test_a_run_that_never_halted_has_no_unreachable_row() -> None:
    ids = ["qrb_a", "qrb_b"]
    out = run(ids, lambda i, context: _cannot_connect(i), workers=2)
    assert out.halt is None and out.message(0) is None
    assert {r.error_code for r in out.results.values()} == {oc.CONNECT_FAILED}


def test_a_report_says_halted_and_keeps_stopped_as_an_alias_for_one_release() -> None:
    from smtoolkit.api import _halt_facts

    assert _halt_facts(RunResult({}, Halt.AUTH)) == {"halted": "auth", "stopped": "auth", "error": None}
    assert _halt_facts(RunResult({})) == {"halted": None, "stopped": None, "error": None}

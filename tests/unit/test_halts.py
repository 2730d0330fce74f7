"""Why a run halts: one table of row codes and messages (`runner.Halt`)."""

from __future__ import annotations

import pytest

from smtoolkit.errors import JournalError
from smtoolkit.runner import Halt, RunResult, halt_label


@pytest.mark.parametrize("halt, code", [(Halt.AUTH, "SKIPPED_AUTH_FAILED"), (Halt.RESERVE, "BUDGET_RESERVE"),
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

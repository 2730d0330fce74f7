"""The one-off cancel panel: paste an ID, look it up, cancel it behind a confirmation.

An ipywidgets VBox. Requests run on a worker thread so the kernel never freezes; results are
written back by setting widget values (never the Output widget's `with out:`, which is not
thread-safe). Every action is kept in `history`, a DataFrame with the report's columns.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..client import Client
from ..core.ids import check_id
from ..core.outcomes import Result
from ..core.record import check_reason
from ..errors import ConfigError, MissingKeyError
from ..frames import export_csv, history_frame
from .html import armed_html, card_html, history_html, message_html

HISTORY_SHOWN = 10  # rows of history shown in the panel (all are kept in `history`)
# Typing an ID and then clicking Look up is one action: leaving the text box already started the
# look-up, so a click for the same ID within this many seconds does not start a second one.
SAME_LOOKUP_WINDOW = 2.0


@dataclass
class _RequestState:
    """What the panel's requests have done and may do next (its widgets live on the panel).

    Jupyter may deliver a text box's change and a button's click on different threads
    (ipykernel 7 in JupyterLab): each action decides and starts under `acting`. `rows` is also
    read by `history` from any thread, under `rows_lock`.
    """

    armed: str | None = None  # the batch ID a confirm would cancel
    looked_up: dict[str, Result] = field(default_factory=dict)  # the latest look-up of each ID
    last_lookup: tuple[str, float] | None = None  # (batch ID, when it was started)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per action: the history
    refusing: str | None = None  # why nothing more may be sent (on_action failed)
    thread: threading.Thread | None = None  # the request in flight, or the last one
    rows_lock: threading.Lock = field(default_factory=threading.Lock)
    acting: threading.RLock = field(default_factory=threading.RLock)

    def in_flight(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class CancelPanel(widgets.VBox):
    """A panel for one-off cancels. Show it by putting it last in a notebook cell.

    Parts, for driving it in code: `id_input` (Enter looks the batch up), `lookup_button`,
    `cancel_button` (arms), `confirm_button` (sends the DELETE), `export_path` and
    `export_button`, `card` (the result), `message`, and `history`. `wait()` blocks until the
    current request ends.

    Keyword-only, for pages that serve the panel to others (`smtoolkit panel`): `ask_key=True`
    always asks for a key in a password box and never uses one from the environment;
    `on_action(action, result)` is called after every look-up and cancel (from the worker
    thread; if it raises, the panel says so and sends nothing more); `export=False` makes a
    panel that writes no file: `export_path` and `export_button` are None and `export()`
    refuses. In a page served to others every widget the kernel creates can be set and clicked
    by the visitor, shown or not, so such a panel creates only the widgets it shows.
    `ask_reason=True` adds `reason_input`: a cancel is refused until it holds a reason, and
    `on_action(action, result, reason)` gets the reason as a third argument (the box's text when
    the action started, None when empty).
    """

    def __init__(self, client: Client | None = None, *, ask_key: bool = False,
                 on_action: Callable[..., object] | None = None, export: bool = True,
                 ask_reason: bool = False, **client_kwargs: Any) -> None:
        if ask_key and client is not None:
            raise ConfigError("ask_key=True asks for the key in the panel: do not pass a client as well")
        self._client = client
        self._client_kwargs = client_kwargs
        self._on_action = on_action
        self._state = _RequestState()
        self.repeat_after = SAME_LOOKUP_WINDOW  # seconds before the same ID is looked up again
        self.key_input = self._key_box(ask_key)
        self.reason_input: widgets.Text | None = None
        if ask_reason:
            self.reason_input = widgets.Text(description="Reason", placeholder="why (needed to cancel; recorded)",
                                             layout=widgets.Layout(width="420px"))

        self.id_input = widgets.Text(description="Batch ID", placeholder="qrb_…", continuous_update=False,
                                     layout=widgets.Layout(width="420px"))
        self.lookup_button = widgets.Button(description="Look up", icon="search")
        self.cancel_button = widgets.Button(description="Cancel batch…", button_style="warning", icon="stop")
        self.confirm_button = widgets.Button(description="Confirm cancel", button_style="danger",
                                             disabled=True, icon="check")
        self.message = widgets.HTML(value="")
        self.card = widgets.HTML(value="")
        self.busy = widgets.Label(value="")
        self.history_view = widgets.HTML(value="")

        self.id_input.observe(self._on_id_change, names="value")
        self.lookup_button.on_click(lambda _: self.lookup())
        self.cancel_button.on_click(lambda _: self.arm())
        self.confirm_button.on_click(lambda _: self.confirm())
        self.export_button: widgets.Button | None = None
        self.export_path: widgets.Text | None = None
        if export:
            self.export_button = widgets.Button(description="Export history", icon="download")
            self.export_path = widgets.Text(value="smtoolkit-panel-history.csv", description="CSV file",
                                            layout=widgets.Layout(width="420px"))
            self.export_button.on_click(lambda _: self.export())
        super().__init__(children=self._shown(), layout=widgets.Layout(padding="6px", border="1px solid #ddd"))

    def _key_box(self, ask_key: bool) -> widgets.Password | None:
        """The API key box, when the panel asks for the key or has none (no client was given and
        the environment has no key); else None, with the client made from the environment."""
        if ask_key:
            placeholder = "your Supermetrics API key"
        elif self._client is not None:
            return None
        else:
            try:
                self._client = Client(**self._client_kwargs)
                return None
            except MissingKeyError:
                if "api_key" in self._client_kwargs:
                    raise
            placeholder = "not echoed anywhere"
        box = widgets.Password(description="API key", placeholder=placeholder)
        box.observe(self._on_key_change, names="value")
        return box

    def _shown(self) -> list[widgets.Widget]:
        """The panel's rows, top to bottom: every widget it made, and no other."""
        rows: list[widgets.Widget] = []
        if self.key_input is not None:
            rows.append(self.key_input)
        rows += [
            widgets.HTML("<b>Cancel one Supermetrics batch</b>"),
            widgets.HBox([self.id_input, self.lookup_button]),
            *([self.reason_input] if self.reason_input is not None else []),
            widgets.HBox([self.cancel_button, self.confirm_button, self.busy]),
            self.message,
            self.card,
            self.history_view,
        ]
        if self.export_path is not None and self.export_button is not None:
            rows.append(widgets.HBox([self.export_path, self.export_button]))
        return rows

    def __repr__(self) -> str:
        # What Jupyter shows when it cannot draw widgets: say why, and what to do.
        return (f"<CancelPanel actions={len(self._state.rows)}>: if you see this text instead of the panel, this "
                "Jupyter has no widget front-end. Install it where Jupyter runs (pip install jupyterlab_widgets, "
                "or ipywidgets, in the server's environment), restart Jupyter and reload the page.")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # ipywidgets cuts the plain text at 110 characters; the hint must arrive whole.
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict) and "text/plain" in data:
            data["text/plain"] = repr(self)
        return bundle

    # -- state --------------------------------------------------------------------------------
    @property
    def history(self) -> pd.DataFrame:
        """One row per action taken in this panel, with the report's columns (plus action, at)."""
        with self._state.rows_lock:
            rows = list(self._state.rows)
        return history_frame(rows)

    def wait(self, timeout: float | None = 30.0) -> None:
        """Block until the request in flight (if any) has finished and been shown."""
        t = self._state.thread
        if t is not None:
            t.join(timeout)

    @property
    def armed(self) -> str | None:
        """The batch ID a confirm would cancel, or None."""
        return self._state.armed

    # -- actions ------------------------------------------------------------------------------
    def _on_id_change(self, change: dict[str, Any]) -> None:
        self._disarm()
        if str(change.get("new") or "").strip():
            self.lookup()

    def _on_key_change(self, change: dict[str, Any]) -> None:
        # A retyped key is used from the next request on (one in flight keeps its client).
        if change.get("new"):
            self._client = None
            self._state.last_lookup = None  # another key: the same ID is worth looking up again

    def _checked_id(self) -> str | None:
        c = check_id(self.id_input.value)
        if c.batch_id is None:
            self._say("bad", f"Not sent: {c.problem}.")
            self.card.value = ""
            return None
        return c.batch_id

    def lookup(self) -> None:
        """Show the batch's current information without changing it (once per action: the same
        ID asked for again while its look-up runs, or just after, is not looked up twice)."""
        with self._state.acting:
            batch_id = self._checked_id()
            if batch_id is None:
                return
            last = self._state.last_lookup
            if last is not None and last[0] == batch_id and (
                    self._state.in_flight() or time.monotonic() - last[1] < self.repeat_after):
                return
            if self._run(f"Looking up {batch_id}…", lambda c: self._do_lookup(c, batch_id)):
                self._state.last_lookup = (batch_id, time.monotonic())

    def arm(self) -> None:
        """First step of a cancel: show what will be cancelled; only confirm sends it."""
        with self._state.acting:
            batch_id = self._checked_id()
            if batch_id is None:
                return
            self._state.armed = batch_id
            self.confirm_button.disabled = False
            self._say("warn", armed_html(batch_id, self._state.looked_up.get(batch_id)))

    def confirm(self) -> None:
        """Send the DELETE for the armed batch, if the ID has not changed since arming."""
        with self._state.acting:
            batch_id = self._state.armed
            current = check_id(self.id_input.value).batch_id
            if batch_id is None or batch_id != current:
                self._disarm()
                self._say("warn", "Nothing sent: click <b>Cancel batch…</b> first.")
                return
            reason, problem = self._reason()
            if self.reason_input is not None and reason is None:
                self._say("warn", "Nothing sent: " + html.escape(problem or "type the reason for this cancel in the "
                                                                 "Reason box first") + ".")
                return  # still armed: give a reason, then confirm
            self._disarm()
            self._run(f"Cancelling {batch_id}…", lambda c: self._do_cancel(c, batch_id, reason))

    def export(self) -> None:
        """Write the history as CSV to the path in `export_path`; ConfigError for a panel made
        with export=False, which writes no file."""
        if self.export_path is None:
            raise ConfigError("this panel was made with export=False: it writes no files (read `history`)")
        try:
            path = export_csv(self.history, self.export_path.value)
        except ValueError as exc:
            self._say("bad", html.escape(str(exc)))
            return
        rows = len(self._state.rows)
        self._say("good", f"History ({rows} rows) written to <code>{html.escape(str(path))}</code>.")

    # -- plumbing -----------------------------------------------------------------------------
    def _disarm(self) -> None:
        self._state.armed = None
        self.confirm_button.disabled = True

    def _client_now(self) -> Client:
        if self._client is None:
            assert self.key_input is not None
            if not self.key_input.value:
                raise MissingKeyError("no API key: type it in the API key box above; nothing was sent")
            self._client = Client(api_key=self.key_input.value, **self._client_kwargs)
            # Do not keep the key in the widget's state: it would be synced to every front end
            # and saved into the notebook file.
            self.key_input.value = ""
            self.key_input.placeholder = "key set (type another to replace it)"
        return self._client

    def _run(self, doing: str, work: Callable[[Client], None]) -> bool:
        """Start `work` on a worker thread; False when it could not start (busy, no key)."""
        if self._state.refusing is not None:
            self._say("bad", html.escape(self._state.refusing))
            return False
        if self._state.in_flight():
            self._say("warn", "A request is still in flight; wait for it.")
            return False
        try:
            client = self._client_now()
        except ConfigError as exc:
            self._say("bad", html.escape(str(exc)))
            return False
        self._set_busy(True, doing)

        def target() -> None:
            try:
                work(client)
            except Exception as exc:  # noqa: BLE001 - shown in the panel, never lost
                self._say("bad", f"Unexpected error: {html.escape(type(exc).__name__)}: {html.escape(str(exc))}")
            finally:
                self._set_busy(False, "")

        self._state.thread = threading.Thread(target=target, name="smtoolkit-panel", daemon=True)
        self._state.thread.start()
        return True

    def _set_busy(self, busy: bool, text: str) -> None:
        for b in (self.lookup_button, self.cancel_button):
            b.disabled = busy or self._state.refusing is not None
        if self.export_button is not None:
            self.export_button.disabled = busy
        if busy:
            self._disarm()
        self.busy.value = text

    def _reason(self) -> tuple[str | None, str | None]:
        """(the reason in the box as kept on record, or None; what is wrong with it, if anything)."""
        return check_reason(self.reason_input.value) if self.reason_input is not None else (None, None)

    def _record(self, action: str, r: Result, reason: str | None = None) -> None:
        row = r.row()
        row.update(action=action, at=datetime.now(UTC))
        with self._state.rows_lock:
            self._state.rows.append(row)
            recent = self._state.rows[-HISTORY_SHOWN:][::-1]
        self.history_view.value = history_html(recent)
        if self._on_action is not None:
            try:
                if self.reason_input is not None:
                    self._on_action(action, r, reason)
                else:
                    self._on_action(action, r)
            except Exception as exc:  # noqa: BLE001 - the action is done; say it was not recorded
                why = getattr(exc, "strerror", None) or type(exc).__name__  # no server paths shown
                self._state.refusing = (f"This {action} was done but could not be recorded ({why}); "
                                        "this panel sends nothing more. Tell whoever runs it.")
                self._say("bad", html.escape(self._state.refusing))

    def _do_lookup(self, client: Client, batch_id: str) -> None:
        r = client.lookup(batch_id)
        counts = client.query_counts(batch_id) if r.http_status == 200 else None
        self._state.looked_up[batch_id] = r
        self._record("lookup", r, self._reason()[0])
        self._after_request(batch_id, "looked up")
        self.card.value = card_html("Look-up", r, counts, client.budget.remaining)

    def _do_cancel(self, client: Client, batch_id: str, reason: str | None = None) -> None:
        r = client.cancel(batch_id)
        self._record("cancel", r, reason)
        self._after_request(batch_id, "cancelled")
        self.card.value = card_html("Cancel", r, None, client.budget.remaining)

    def _after_request(self, batch_id: str, done: str) -> None:
        """Clear the message, unless the ID changed while the request was in flight (or the
        panel now refuses to send: that message stays)."""
        if self._state.refusing is not None:
            return
        if check_id(self.id_input.value).batch_id not in (None, batch_id):
            self._say("warn", f"The ID changed while <code>{html.escape(batch_id)}</code> was being {done}; "
                              "the card shows that batch. Click <b>Look up</b> for the new ID.")
        else:
            self.message.value = ""

    def _say(self, kind: str, text_html: str) -> None:
        self.message.value = message_html(kind, text_html)

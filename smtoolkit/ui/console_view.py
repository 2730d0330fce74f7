"""What the cleanup console shows: the grid (itables' `ITable`, an anywidget) and its controls.

The view holds widgets and writes them by setting values; the model (`console.CancelConsole`)
decides everything. Every widget made here is shown. The export box's path is written only by
the Export button's click.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..core.select import STATUSES
from .html import message_html

if TYPE_CHECKING:
    from .console import CancelConsole

try:
    from itables.widget import ITable
except ImportError as exc:  # pragma: no cover - itables[widget] is a dependency
    raise ImportError("the cleanup console needs itables with its widget: pip install 'itables[widget]'") from exc

#: The grid's columns, from the frame's (the rest stay in `frame` and the report).
GRID_COLUMNS = ("batch_id", "status_code", "outcome", "schedule_time", "description", "error_code", "cancel_time")
REJECTED_SHOWN = 20  # invalid/duplicate input rows listed by name (all are in `rejected`)
_GRID_OPTIONS: dict[str, Any] = {
    "maxBytes": 0,  # never downsample: a downsampled table lets only visible rows be selected
    "select": {"style": "multi+shift"},
    "pageLength": 10,
    "classes": "display compact nowrap",
}


def grid_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the grid shows it: plain text, times to the second in UTC, blanks for unknown."""
    out = {}
    for name in GRID_COLUMNS:
        col = frame[name]
        if name.endswith("_time"):
            text = col.dt.strftime("%Y-%m-%d %H:%M:%S")
        else:
            text = col.astype("string")
        out[name] = text.fillna("").astype(object)
    return pd.DataFrame(out)


class ConsoleView:
    """The console's widgets, wired to its model."""

    def __init__(self, model: CancelConsole) -> None:
        self.model = model
        self.status_boxes = {s: widgets.Checkbox(value=False, description=s, indent=False,
                                                 layout=widgets.Layout(width="100px")) for s in STATUSES}
        self.older_than = widgets.Text(description="Older than", placeholder="e.g. 1h30m, 2h, 90m",
                                       layout=widgets.Layout(width="240px"))
        self.description = widgets.Text(description="Description", placeholder="contains (any case)",
                                        layout=widgets.Layout(width="300px"))
        auto = widgets.Layout(width="auto")
        self.select_button = widgets.Button(description="Select all matching", icon="check-square", layout=auto)
        self.clear_button = widgets.Button(description="Clear selection", icon="square", layout=auto)
        self.count = widgets.Label(value="")
        self.grid = ITable(pd.DataFrame({c: [] for c in GRID_COLUMNS}), **_GRID_OPTIONS)
        self.refresh_all = widgets.Button(description="Refresh all", icon="refresh")
        self.refresh_selected = widgets.Button(description="Refresh selected", icon="refresh")
        self.cancel_button = widgets.Button(description="Cancel selected…", button_style="warning", icon="stop",
                                           layout=auto)
        self.confirm_button = widgets.Button(description="Confirm", button_style="danger", icon="check",
                                             disabled=True)
        self.stop_button = widgets.Button(description="Stop", icon="hand-paper-o", disabled=True)
        self.bar = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="300px"))
        self.busy = widgets.Label(value="")
        self.message = widgets.HTML(value="")
        self.rejected = widgets.HTML(value="")
        self.export_path = widgets.Text(value="smtoolkit-console-report.csv", description="CSV file",
                                        layout=widgets.Layout(width="420px"))
        self.excel = widgets.Checkbox(value=False, description="for Excel", indent=False)
        self.export_button = widgets.Button(description="Export report", icon="download")
        self._wire()
        self.box = widgets.VBox(children=self._shown(), layout=widgets.Layout(padding="6px", border="1px solid #ddd"))

    def _wire(self) -> None:
        m = self.model
        self.select_button.on_click(lambda _: m.select_clicked())
        self.clear_button.on_click(lambda _: m.select_none())
        self.grid.observe(lambda change: m.grid_selected(change["new"]), names="selected_rows")
        self.refresh_all.on_click(lambda _: m.refresh_clicked(only_selected=False))
        self.refresh_selected.on_click(lambda _: m.refresh_clicked(only_selected=True))
        self.cancel_button.on_click(lambda _: m.arm())
        self.confirm_button.on_click(lambda _: m.confirm())
        self.stop_button.on_click(lambda _: m.stop())
        self.export_button.on_click(lambda _: m.export_clicked())

    def _shown(self) -> list[widgets.Widget]:
        return [
            widgets.HTML("<b>Cancel Supermetrics batches in bulk</b>"),
            widgets.HBox([*self.status_boxes.values(), self.older_than, self.description]),
            widgets.HBox([self.select_button, self.clear_button, self.count]),
            self.grid,
            widgets.HBox([self.refresh_all, self.refresh_selected, self.cancel_button, self.confirm_button,
                          self.stop_button]),
            widgets.HBox([self.bar, self.busy]),
            self.message,
            self.rejected,
            widgets.HBox([self.export_path, self.excel, self.export_button]),
        ]

    # -- reading the controls -------------------------------------------------------------------
    def filters(self) -> dict[str, Any]:
        """The filter boxes as `select` arguments; empty boxes are no criterion."""
        f: dict[str, Any] = {}
        statuses = [s for s, box in self.status_boxes.items() if box.value]
        if statuses:
            f["status"] = statuses
        if self.older_than.value.strip():
            f["older_than"] = self.older_than.value.strip()
        if self.description.value.strip():
            f["description"] = self.description.value.strip()
        return f

    # -- writing ----------------------------------------------------------------------------------
    def draw_grid(self, shown: pd.DataFrame, selected: Sequence[int]) -> None:
        self.grid.update(shown, selected_rows=list(selected), **_GRID_OPTIONS)
        self.count.value = f"{len(selected):,} of {len(shown):,} selected"

    def push_selection(self, selected: Sequence[int]) -> None:
        self.grid.selected_rows = list(selected)

    def selection_changed(self, n: int) -> None:
        self.count.value = f"{n:,} of {len(self.grid.df) if self.grid.df is not None else 0:,} selected"
        self.armed(False)

    def armed(self, on: bool, text_html: str = "") -> None:
        self.confirm_button.disabled = not on
        if on:
            self.say("warn", text_html)

    def running(self, on: bool, text: str = "", total: int = 0) -> None:
        for b in (self.refresh_all, self.refresh_selected, self.cancel_button, self.export_button):
            b.disabled = on
        self.stop_button.disabled = not on
        if on:
            self.armed(False)
            self.bar.max, self.bar.value = max(1, total), 0
        self.busy.value = text

    def progress(self, done: int) -> None:
        self.bar.value = min(done, self.bar.max)

    def say(self, kind: str, text_html: str) -> None:
        self.message.value = message_html(kind, text_html)

    def show_rejected(self, rejected: pd.DataFrame) -> None:
        if rejected.empty:
            self.rejected.value = ""
            return
        items = "".join(f"<li>row {r.position}: <code>{html.escape(repr(r.value)[:80])}</code> "
                        f"({html.escape(str(r.reason))})</li>" for r in rejected.head(REJECTED_SHOWN).itertuples())
        more = f"<li>… {len(rejected) - REJECTED_SHOWN:,} more (see <code>rejected</code>)</li>" \
            if len(rejected) > REJECTED_SHOWN else ""
        self.rejected.value = (f"<details><summary>{len(rejected):,} input row(s) cannot be selected (invalid or "
                               f"duplicate ID)</summary><ul>{items}{more}</ul></details>")

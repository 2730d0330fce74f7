"""The page `smtoolkit panel` serves, as each visitor's kernel builds it.

The server (`ui.server`) leaves its settings in the environment the kernel inherits (see
`config.export_panel_settings`) and writes the visitor's address into the page's one cell.
Here they become a `CancelPanel` that uses the server's key or asks for the visitor's own, and
that appends every look-up and cancel to the audit trail before showing its result.

Every widget this kernel creates can be set and clicked by the visitor over the page's widget
connection, shown or not, and every text value in it is the visitor's. So the page creates only
the widgets it shows (the panel with `export=False` has no export widgets at all), and nothing on
it writes a file a visitor names: the audit trail's path comes from the server. Once the page is
built, the kernel also stops creating widgets a visitor asks for (`refuse_widgets_from_visitors`).
"""

from __future__ import annotations

import ipywidgets as widgets

from ..client import Client
from ..config import panel_settings
from .audit import AuditTrail
from .html import page_notice_html
from .panel import CancelPanel


class PanelPage(widgets.VBox):
    """A notice (whose key is used, that actions are recorded) above `panel`, the CancelPanel."""

    def __init__(self, notice_html: str, panel: CancelPanel) -> None:
        self.panel = panel
        super().__init__(children=[widgets.HTML(notice_html), panel])


def page(visitor: str | None = None) -> PanelPage:
    """The page for one visitor, whose address (as the server saw it) goes in the audit trail."""
    base_url, audit, ask_key, ask_reason = panel_settings()
    trail = AuditTrail(audit, visitor=visitor, base_url=base_url) if audit else None
    on_action = trail.append if trail is not None else None
    if ask_key:
        panel = CancelPanel(ask_key=True, on_action=on_action, export=False, ask_reason=ask_reason,
                            base_url=base_url)
    else:
        panel = CancelPanel(client=Client(base_url=base_url), on_action=on_action, export=False,
                            ask_reason=ask_reason)
    shown = PanelPage(page_notice_html(ask_key=ask_key, base_url=base_url, visitor=visitor,
                                       audited=trail is not None), panel)
    refuse_widgets_from_visitors()
    return shown


WIDGET_TARGET = "jupyter.widget"  # the comm target a front end opens to create a widget in the kernel


def refuse_widgets_from_visitors() -> int:
    """From now on this kernel creates no widget a visitor asks for: a front end may drive the
    page's widgets (their own comms, and `jupyter.widget.control` to read their state) but not
    open new ones. Returns how many comm managers stopped taking them (0 outside a kernel)."""
    managers: list[object] = []
    try:
        import comm

        managers.append(comm.get_comm_manager())
    except Exception:  # noqa: BLE001 - no comm package (ipywidgets 8.0 keeps it on the kernel)
        pass
    try:
        from IPython import get_ipython

        managers.append(getattr(getattr(get_ipython(), "kernel", None), "comm_manager", None))
    except ImportError:
        pass
    stopped = 0
    for manager in {id(m): m for m in managers if m is not None}.values():
        targets = getattr(manager, "targets", None)
        if isinstance(targets, dict) and targets.pop(WIDGET_TARGET, None) is not None:
            stopped += 1
    return stopped

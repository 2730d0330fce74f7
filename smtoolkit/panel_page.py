"""The page `smtoolkit panel` serves, as each visitor's kernel builds it.

The server (`panel_server`) leaves its settings in the environment the kernel inherits (see
`config.export_panel_settings`) and writes the visitor's address into the page's one cell.
Here they become a `CancelPanel` that uses the server's key or asks for the visitor's own, and
that appends every look-up and cancel to the audit trail before showing its result.

Every widget this kernel creates can be set and clicked by the visitor over the page's widget
connection, shown or not, and every text value in it is the visitor's. So the page creates only
the widgets it shows (the panel with `export=False` has no export widgets at all), and nothing on
it writes a file a visitor names: the audit trail's path comes from the server.
"""

from __future__ import annotations

import ipywidgets as widgets

from .audit import AuditTrail
from .client import Client
from .config import panel_settings
from .panel import CancelPanel
from .panel_html import page_notice_html


class PanelPage(widgets.VBox):
    """A notice (whose key is used, that actions are recorded) above `panel`, the CancelPanel."""

    def __init__(self, notice_html: str, panel: CancelPanel) -> None:
        self.panel = panel
        super().__init__(children=[widgets.HTML(notice_html), panel])


def page(visitor: str | None = None) -> PanelPage:
    """The page for one visitor, whose address (as the server saw it) goes in the audit trail."""
    base_url, audit, ask_key = panel_settings()
    trail = AuditTrail(audit, visitor=visitor, base_url=base_url) if audit else None
    on_action = trail.append if trail is not None else None
    if ask_key:
        panel = CancelPanel(ask_key=True, on_action=on_action, export=False, base_url=base_url)
    else:
        panel = CancelPanel(client=Client(base_url=base_url), on_action=on_action, export=False)
    return PanelPage(page_notice_html(ask_key=ask_key, base_url=base_url, visitor=visitor,
                                      audited=trail is not None), panel)

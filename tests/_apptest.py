"""What the browser does for an app under ``streamlit.testing.v1.AppTest``."""

from __future__ import annotations

from vheight.ui.session import widget_key


def after_first_paint(at):
    """The viewer has drawn the session's first film and says so (a rerun): the
    sample films left for after the first paint open."""
    slots = at.session_state["vh.slots"] if "vh.slots" in at.session_state else {}
    for slot in slots.values():
        at.session_state[widget_key(slot, "editor")] = {"drawn": slot.opened.identity}
    at.run()
    assert not at.exception, at.exception
    return at

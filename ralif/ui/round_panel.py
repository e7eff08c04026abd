"""Submitting a batch and following the background round that trains the model and picks the next one.

The round runs in the project's background round server (``Project.start_round``); this module
only asks the project for its status. The panel is an ``st.fragment`` that reruns itself twice a
second while a round is queued or running, so the rest of the page (and the labeling grid) is not
redrawn meanwhile; when the round ends it reruns the whole page once so the new batch appears.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import streamlit as st

from ralif.project import Project, RoundState, RoundStatus
from ralif.ui.text import lit

ACTIVE = (RoundState.QUEUED, RoundState.RUNNING)
# Half a second between looks. Each look redraws the panel in the browser, and on two cores that
# work is taken from the round: at 50k, looking twice a second instead of four times showed the first
# trained round's batch 0.14 s sooner on average, later ones 0.06 s (docs/speed.md, "How often the page looks").
_POLL_S = float(os.environ.get("RALIF_ROUND_POLL_S") or 0.5)
_SEEN_KEY = "ralif_round_seen"
# Rough share of a round's time per phase, so one bar can cover the whole round.
_PHASE_SPAN = {"queued": (0.0, 0.02), "starting": (0.0, 0.05), "extracting": (0.05, 0.35),
               "training": (0.35, 0.8), "selecting": (0.8, 0.95), "saving": (0.95, 1.0), "done": (1.0, 1.0)}


def start(project: Project) -> str | None:
    """Start the queued (or failed) round in the background; an error message (plain text), or None."""
    return project.start_round_notice()


def submit_and_start(project: Project, batch_round: int | None) -> tuple[str, str]:
    """Submit the pending batch and start the next round: (kind, message) for the page, the
    message plain text (it may quote a folder: escape it before it goes into Markdown)."""
    notice = project.submit_and_start(batch_round)
    return notice.kind, notice.message


def ensure_running(project: Project) -> str | None:
    """A round that is queued but was never started is started here, so the user never waits on
    nothing; otherwise the project's round server is started ahead of the next submit. Nothing
    is started for a read-only project (it can be looked at, not labeled)."""
    if project.readonly:
        return None
    return project.resume_round()


def _fraction(status: Mapping[str, Any]) -> float:
    phase = status.get("phase") or "queued"
    lo, hi = _PHASE_SPAN.get(phase, (0.0, 1.0))
    prog = status.get("progress") or {}
    inner = 0.0
    if phase == "extracting" and prog.get("total"):
        inner = float(prog.get("done", 0)) / max(1.0, float(prog["total"]))
    elif phase == "training" and prog.get("fraction") is not None:
        inner = float(prog["fraction"])
    return max(0.0, min(1.0, lo + (hi - lo) * inner))


def describe(status: Mapping[str, Any], strategy: str) -> str:
    """One line saying what the round is doing right now."""
    phase = status.get("phase") or "queued"
    prog = status.get("progress") or {}
    n = status.get("round")
    if phase in ("queued", "taken", "starting"):
        text = f"Round {n}: starting"
    elif phase == "extracting":
        done, total = prog.get("done"), prog.get("total")
        what = prog.get("what") or "computing image features"
        text = f"Round {n}: {what}" + (f" ({done:,} / {total:,} images)" if total else "")
    elif phase == "training":
        if prog.get("epochs"):
            text = f"Round {n}: training the model, epoch {prog.get('epoch', 0)} of {prog['epochs']}"
            if prog.get("loss") is not None:
                text += f", loss {float(prog['loss']):.3f}"
        else:
            labeled = prog.get("labeled")
            text = f"Round {n}: training the model" + (f" on {labeled:,} labels" if labeled else "")
    elif phase == "selecting":
        text = f"Round {n}: selecting the next batch with {strategy}"
    elif phase == "saving":
        text = f"Round {n}: saving the model"
    else:
        text = f"Round {n}: {phase}"
    started = status.get("started_at")
    if started:
        text += f" · {max(0.0, time.time() - float(started)):.0f} s"
    return text


def summary(status: Mapping[str, Any]) -> str:
    """What the last finished round did, in one line."""
    n = status.get("round")
    secs = status.get("seconds")
    took = f" in {secs:.1f} s" if secs is not None else ""
    if status.get("cold_start"):
        return (f"Round {n}: no model yet, so this batch is a diverse pick over the image features"
                f"{took}. Label it to train the first model.")
    text = f"Round {n}: model trained on {status.get('labeled_count') or 0:,} labels{took}"
    if status.get("accuracy") is not None:
        text += f" · held-out accuracy {status['accuracy']:.1%} ({status.get('test_count') or 0:,} images)"
    return text + f" · batch chosen by {status.get('strategy')}"


def status_panel(project: Project) -> RoundStatus:
    """Draw the round status (self-refreshing while a round is active); returns the status."""
    status = project.round_status()
    active = status.get("status") in ACTIVE
    st.session_state[_SEEN_KEY] = (str(project.folder), status.get("round"), status.get("status"))

    @st.fragment(run_every=_POLL_S if active else None)
    def panel() -> None:
        now = project.round_status()
        seen = st.session_state.get(_SEEN_KEY)
        if seen and seen[0] == str(project.folder) and seen[2] in ACTIVE and now.get("status") not in ACTIVE:
            # The round ended since the page was drawn: redraw all of it, with the new batch.
            st.session_state[_SEEN_KEY] = (str(project.folder), now.get("round"), now.get("status"))
            st.rerun()
        _draw(project, now)

    panel()
    return status


def _draw(project: Project, status: Mapping[str, Any]) -> None:
    # A status reads as a mapping (RoundStatus is one); RoundState's values equal the stored text.
    state = status.get("status")
    if state in ACTIVE:
        with st.container(border=True):
            cols = st.columns([5, 1])
            cols[0].markdown(f"**Training and selecting** · {describe(status, project.strategy)}")
            cols[0].progress(_fraction(status))
            # Only a round run by a background worker can be stopped from here (a round run in
            # another program, from the command line, has none).
            if state == RoundState.RUNNING and status.get("job_path") and not project.readonly and cols[1].button(
                    "Cancel round", key="round_cancel",
                    help="Stop the round; labels are kept and it can be run again"):
                project.cancel_round()
                st.rerun()
            st.caption("You can keep working meanwhile: relabel earlier images below. "
                       "The next batch appears here when it is ready.")
    elif state == RoundState.FAILED:
        with st.container(border=True):
            reason = str(status.get("error") or "no reason was recorded").rstrip(".")
            st.error(f"Round {status.get('round')} failed: {lit(reason)}. Your labels are safe; the previous "
                     "model is kept.")
            if not project.readonly and st.button("Retry the round", key="round_retry", type="primary"):
                error = start(project)
                if error:
                    st.error(lit(error))
                else:
                    st.rerun()
    elif state == RoundState.READY:
        st.caption(summary(status))

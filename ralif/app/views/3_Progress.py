"""Progress page: the model's accuracy measured on random audit images, accuracy per round against
labels used, labels per class, time per round, and in simulation mode the project's curve against
Random.

The Random reference (demo, or any linear-head project whose pool has hidden true labels) is
computed by :func:`ralif.map.baseline.random_baseline` in a background worker, like for like with
this project: the same starting labels as its first trained round, then random pool images answered
by the true labels, at exactly the label counts this project's rounds reached, the same head and
held-out set, five seeds. Values are stored, so each new round only adds its own count.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from ralif import projection as proj
from ralif.map.baseline import compare_with_random, reference_unavailable
from ralif.project import Project
from ralif.ui import common, earlier
from ralif.ui.quality_panel import comparison_caption, no_accuracy_reason, render_audit
from ralif.ui.state import require_project
from ralif.ui.text import lit
from ralif.worker import FINAL_STATES

common.setup_page("Progress")
project = require_project()
common.sidebar(project)
st.title("Progress")

progress = project.progress()
rounds = project.rounds()
measured = [r for r in rounds if r["accuracy"] is not None and r["labeled_count"] is not None]
last_acc = measured[-1]["accuracy"] if measured else None

m1, m2, m3, m4 = st.columns(4)
m1.metric("Labeled", f"{progress.labeled:,} of {progress.pool:,}")
m2.metric("Skipped (unsure)", f"{progress.unsure:,}")
m3.metric("Round", progress.round, help=f"status: {progress.round_status or 'none'}")
m4.metric("Held-out accuracy", "—" if last_acc is None else f"{last_acc:.1%}",
          delta=None if len(measured) < 2 else f"{(last_acc - measured[-2]['accuracy']) * 100:+.1f} pts",
          help=f"on {measured[-1]['test_count']:,} held-out images" if measured else no_accuracy_reason(progress))

render_audit(project)


def _layout(fig: go.Figure, x: str, y: str, height: int = 340) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis_title=x, yaxis_title=y,
                      legend={"orientation": "h", "y": 1.12, "x": 0})
    return fig


# -- the Random reference (simulation mode) -------------------------------------------------------
@st.fragment(run_every=1.0)
def _watch_baseline(p: Project) -> None:
    common.job_progress(proj.random_baseline_status(p), lambda s: f"Random reference: {s.get('message') or 'starting'}")


def _random_reference(p: Project, counts: list[int]) -> dict | None:
    """The stored Random curve at ``counts``; starts computing it when some values are missing."""
    if not counts:
        return None
    why = reference_unavailable(p)
    if why is not None:
        st.info(f"No comparison with Random: {lit(why)}.")
        return None
    found = proj.read_random_baseline(p, counts)
    if found is not None:
        return found
    status = proj.random_baseline_status(p)
    state = None if status is None else status.get("state")
    if state == "failed":
        st.warning(f"The Random reference could not be computed: {lit((status or {}).get('error'))}")
        if st.button("Try again"):
            proj.start_random_baseline(p, counts)
            st.rerun()
        return None
    if state is None or state in FINAL_STATES:
        proj.start_random_baseline(p, counts)
    _watch_baseline(p)
    return None


# -- accuracy against labels ----------------------------------------------------------------------
st.subheader("Accuracy on the held-out set")
if not measured:
    st.info(no_accuracy_reason(progress))
    if progress.test > progress.test_labeled and st.button("Label the held-out images", key="label-held-out"):
        earlier.open_on_held_out()
        st.switch_page(common.LABEL_PAGE)
else:
    counts = [int(r["labeled_count"]) for r in measured]
    acc = np.array([r["accuracy"] for r in measured])
    fig = go.Figure()
    reference = _random_reference(project, counts)
    if reference is not None:
        rand = np.asarray(reference["accuracy"], dtype=float)
        fig.add_trace(go.Scatter(x=counts + counts[::-1], y=np.r_[rand.max(0), rand.min(0)[::-1]], fill="toself",
                                 mode="lines", fillcolor="rgba(127,127,127,0.18)", line={"width": 0},
                                 hoverinfo="skip",
                                 name=f"Random, range over {len(rand)} seeds"))
        fig.add_trace(go.Scatter(x=counts, y=rand.mean(0), mode="lines+markers", name="Random (mean)",
                                 line={"color": "#7f7f7f", "dash": "dash"}))
    fig.add_trace(go.Scatter(x=counts, y=acc, mode="lines+markers",
                             name=common.plot_text(f"this project ({project.strategy})"),
                             line={"color": "#1f77b4", "width": 3},
                             customdata=[r["number"] for r in measured],
                             hovertemplate="round %{customdata}<br>%{x} labels<br>%{y:.1%}<extra></extra>"))
    fig.update_yaxes(tickformat=".0%")
    st.plotly_chart(_layout(fig, "labeled images", "accuracy"), key="progress-accuracy")
    if reference is not None:
        comparison = compare_with_random([float(a) for a in acc], reference)
        if comparison is not None:
            st.metric("AUCA ratio against Random", f"{comparison.ratio:.3f}",
                      help="Area under this project's accuracy curve over its measured rounds (the first one "
                           "excluded, as in the paper) divided by Random's at the same label counts. Above 1: "
                           "better than random picking.")
            st.caption(comparison_caption(comparison))
        else:
            st.caption("The AUCA ratio against Random needs at least three measured rounds. Random starts from "
                       "the same labels as this project's first trained round and is scored the same way.")

# -- labels per class and time per round ----------------------------------------------------------
left, right = st.columns(2)
with left:
    st.subheader("Labels per class")
    if progress.per_class:
        names = list(progress.per_class)
        colors = {c.name: c.color for c in project.classes()}     # each class's stored colour
        fig = go.Figure(go.Bar(x=[common.plot_text(n) for n in names], y=[progress.per_class[n] for n in names],
                               marker_color=[colors.get(n, "#888888") for n in names]))
        st.plotly_chart(_layout(fig, "", "labeled pool images", 320), key="progress-classes")
    else:
        st.info("No classes yet.")
with right:
    st.subheader("Time per round")
    timed = [r for r in rounds if r["seconds"] is not None]
    if timed:
        numbers = [r["number"] for r in timed]
        compute = [r["seconds"] for r in timed]
        # Labeling time: from the batch being ready to its submission.
        labeling = [max(0.0, r["submitted_at"] - r["finished_at"]) if r["submitted_at"] and r["finished_at"]
                    else 0.0 for r in timed]
        fig = go.Figure([go.Bar(x=numbers, y=compute, name="training and selection"),
                         go.Bar(x=numbers, y=labeling, name="labeling (batch ready to submitted)")])
        # Minutes of labeling next to seconds of computing: a log axis keeps both readable.
        spread = max(labeling + compute) / max(min((v for v in labeling + compute if v > 0), default=1.0), 1e-3)
        fig.update_layout(barmode="group")
        if spread > 50:
            fig.update_yaxes(type="log", dtick=1)
        st.plotly_chart(_layout(fig, "round", "seconds", 320), key="progress-time")
    else:
        st.info("No finished round yet.")

# -- the rounds table -----------------------------------------------------------------------------
st.subheader("Rounds")


def _when(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _shown(value: float | None, fmt: str) -> str:
    """A cell as text: a round that has no value yet shows an empty cell, not the word None."""
    return "" if value is None else format(value, fmt)


st.dataframe(
    [{"round": r["number"], "status": r["status"], "strategy": r["strategy"], "batch": r["batch_size"],
      "labels used": _shown(r["labeled_count"], ","), "accuracy": _shown(r["accuracy"], ".1%"),
      "seconds": _shown(r["seconds"], ".2f"), "cold start": bool(r["cold_start"]),
      "finished": _when(r["finished_at"]), "error": r["error"] or ""} for r in reversed(rounds)],
    hide_index=True)

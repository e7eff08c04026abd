"""The map as a plotly WebGL scatter, kept out of the page so it can be tested and benchmarked."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ralif.map.data import DEFAULT_MAX_POINTS, LABELED, UNLABELED, UNSURE, MapData, align_ids, display_rows
from ralif.map.predictions import PoolPredictions

if TYPE_CHECKING:
    import plotly.graph_objects as go

GREY = "#b9bec7"
PENDING = "#ff7f0e"
# Hover text of a pending batch image in place of the model's guess.
HIDDEN_GUESS = "<br>to label now: no model guess shown"
COLOR_MODES = ("labels", "truth", "predicted", "entropy")


def plot_text(text: object) -> str:
    """User text as Plotly shows it literally: Plotly reads a few HTML tags in names and hover text
    (links among them), and turns ``&lt;`` back into ``<``. Quotes stay as they are, as Plotly
    knows no ``&quot;`` and would show it as typed."""
    return html.escape(str(text), quote=False)


def class_palette(n: int) -> list[str]:
    """n distinct colours: Plotly's 10, then its light 24, then repeated."""
    from plotly.colors import qualitative

    base = list(qualitative.Plotly) + [c for c in qualitative.Light24 if c not in qualitative.Plotly]
    return [base[i % len(base)] for i in range(max(n, 1))]


def map_figure(data: MapData, class_ids: Sequence[int], class_names: Sequence[str], *, color_by: str = "labels",
               predictions: PoolPredictions | None = None, pending_round: int | None = None,
               highlight_round: int | None = None, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0,
               height: int = 620, class_colors: Sequence[str] | None = None) -> go.Figure:
    """The map as a WebGL scatter. Each point's customdata is its image id (what a selection
    returns); every trace holds only ids, so selected points map back to images unambiguously.

    ``color_by``: ``labels`` (unlabeled grey, labeled by class), ``truth`` (hidden true class),
    ``predicted`` (current model's class) or ``entropy`` (current model's uncertainty).
    ``class_colors``: each class's own colour (as stored with the class, so the map agrees with the
    Label page's class bar); the default palette otherwise. ``pending_round``: the round whose batch
    waits on the Label page; ``data.pending_round`` when not given.

    The model's guess, confidence and uncertainty are never shown for the pending batch, in hover
    text or colour: its audit images must be answered without them, and hiding them for the audit
    images alone would tell which ones those are. Its points are drawn as "to label now" instead.
    """
    import plotly.graph_objects as go

    if color_by not in COLOR_MODES:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_MODES)}, not {color_by!r}")
    if color_by in ("predicted", "entropy") and predictions is None:
        raise ValueError(f"coloring by {color_by} needs the current model's predictions")
    n = len(data.image_ids)
    stored = class_colors is not None and len(class_colors) == len(class_ids)
    palette = list(class_colors) if class_colors is not None and stored else class_palette(len(class_ids))
    position = {int(c): k for k, c in enumerate(class_ids)}
    # Class id -> position in the palette; ids of deleted classes map to -1 (drawn grey).
    lut_size = int(max([0, *class_ids])) + 1
    lut = np.full(lut_size, -1, dtype=np.int64)
    for c, k in position.items():
        lut[c] = k

    def class_pos(ids: np.ndarray) -> np.ndarray:
        ok = (ids >= 0) & (ids < lut_size)
        return np.where(ok, lut[np.clip(ids, 0, lut_size - 1)], -1)

    pending_round = data.pending_round if pending_round is None else pending_round
    pending = data.pending_rows(pending_round)
    hidden = np.zeros(n, dtype=bool)
    hidden[pending] = True
    earlier = data.selections.get(highlight_round, np.zeros(0, np.int64)) if highlight_round else np.zeros(0, np.int64)
    keep = data.state != UNLABELED
    keep[pending] = True
    keep[earlier] = True
    rows = display_rows(n, keep, max_points, seed)

    shown = [plot_text(name) for name in class_names]
    names = np.asarray([*shown, "—"], dtype=object)
    label_pos = class_pos(data.class_id)
    state_text = np.where(data.state[rows] == LABELED, names[label_pos[rows]],
                          np.where(data.state[rows] == UNSURE, "unsure (skipped)", "unlabeled"))
    hover = "image %{customdata}<br>%{text}<extra></extra>"
    if predictions is not None:
        pred_at = align_ids(predictions.image_ids, data.image_ids)
        ok = pred_at >= 0
        pred_pos = np.full(n, -1, dtype=np.int64)
        pred_pos[ok] = class_pos(predictions.class_ids[pred_at[ok]])
        entropy = np.full(n, np.nan, dtype=np.float32)
        entropy[ok] = predictions.entropy[pred_at[ok]]
        conf = np.full(n, np.nan, dtype=np.float32)
        conf[ok] = predictions.confidence[pred_at[ok]]
        guess = np.char.add(np.char.add(np.char.add(np.asarray(names[pred_pos[rows]], dtype=str), " ("),
                                        np.char.mod("%.0f", 100 * np.nan_to_num(conf[rows]))), "%)")
        text = np.char.add(np.char.add(np.asarray(state_text, dtype=str), "<br>model: "), guess)
        text = np.char.add(np.char.add(text, "<br>entropy "), np.char.mod("%.2f", np.nan_to_num(entropy[rows])))
        text = np.where(hidden[rows], np.char.add(np.asarray(state_text, dtype=str), HIDDEN_GUESS), text)
    else:
        text = np.asarray(state_text, dtype=str)
    fig = go.Figure()

    def add(name: str, sel: np.ndarray, **marker: Any) -> None:
        if not len(sel):
            return
        # Every drawn row is in ``rows`` (sorted), so its hover text is found by bisection.
        t = text[np.searchsorted(rows, sel)]
        fig.add_trace(go.Scattergl(x=data.x[sel], y=data.y[sel], mode="markers", name=name,
                                   customdata=data.image_ids[sel], text=t, hovertemplate=hover, marker=marker))

    if color_by == "labels":
        base = rows[data.state[rows] != LABELED]
        unsure = base[data.state[base] == UNSURE]
        add("unlabeled", base[data.state[base] == UNLABELED], color=GREY, size=4, opacity=0.55)
        add("unsure (skipped)", unsure, color="#7f7f7f", size=5, symbol="x", opacity=0.8)
        labeled = rows[data.state[rows] == LABELED]
        lp = label_pos[labeled]
        for k, name in enumerate(shown):
            add(name, labeled[lp == k], color=palette[k], size=7, line={"width": 0.5, "color": "white"})
        add("deleted class", labeled[lp < 0], color="#444", size=6)
    elif color_by in ("truth", "predicted"):
        # The true class is not the model's guess: the batch keeps it (and its star on top).
        coloured = rows if color_by == "truth" else rows[~hidden[rows]]
        pos = class_pos(data.true_class_id) if color_by == "truth" else pred_pos
        rp = pos[coloured]
        add("unknown", coloured[rp < 0], color=GREY, size=4, opacity=0.55)
        for k, name in enumerate(shown):
            add(name, coloured[rp == k], color=palette[k], size=5, opacity=0.85)
    else:
        coloured = rows[~hidden[rows]]
        ent = entropy[coloured]
        add("entropy", coloured, color=np.nan_to_num(ent), colorscale="Viridis", size=5, opacity=0.9,
            cmin=0.0, cmax=float(np.log(max(2, len(class_ids)))),
            colorbar={"title": {"text": "entropy"}, "thickness": 12})
    if len(earlier):
        # Open symbols are drawn in the marker colour: a dark ring around the point underneath.
        add(f"picked in round {highlight_round}", np.intersect1d(earlier, rows), color="#222", size=13,
            symbol="circle-open", line={"width": 2})
    if len(pending):
        pr = np.intersect1d(pending, rows)
        fill = np.where(data.state[pr] == LABELED, np.asarray([*palette, GREY], dtype=object)[label_pos[pr]], PENDING)
        add(f"to label now (round {pending_round})", pr, color=fill.tolist(), size=12, symbol="star",
            line={"width": 1.5, "color": "#222"})
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, dragmode="lasso", hovermode="closest",
        legend={"itemsizing": "constant", "orientation": "h", "y": -0.02, "yanchor": "top", "x": 0},
        plot_bgcolor="white", uirevision="map",
        xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x", "scaleratio": 1})
    return fig

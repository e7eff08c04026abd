"""Map page: the pool laid out by UMAP, what is labeled and what the rounds picked, lasso labeling.

The layout comes from :mod:`ralif.projection` (computed once, in the background); this page only
reads it, draws it and turns a selection into a bulk label. Hovering a point shows its id, label
and the model's guess; the image itself is shown beside the chart for the clicked or lassoed
points (plotly hover labels cannot hold images, and sending thumbnails inside every point would
also send them back with every selection event). The batch waiting on the Label page is shown
without the model's guess (see :func:`ralif.map.figure.map_figure`): its audit images are answered
without it.

A bulk label writes only images shown on a review page of the panel (see :mod:`ralif.map.review`),
never the batch waiting on the Label page, not even one that arrives while the user reviews.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from ralif import projection as proj
from ralif.map import review
from ralif.project import Project, ProjectError, majority_guess
from ralif.ui import common
from ralif.ui.state import require_project
from ralif.ui.text import lit
from ralif.worker import FINAL_STATES

common.setup_page("Map")
project = require_project()
common.sidebar(project)

COLOR_LABELS = {"labels": "Labels", "truth": "True class", "predicted": "Model's class",
                "entropy": "Uncertainty"}
REVIEW_PAGE = 24
REVIEW_COLS = 3
UNDO_KEY = "ralif_map_last_bulk"
SKIP = -1          # "unsure" in the class list (None there means nothing chosen yet)


# -- cached reads: keyed by what makes them change, so a page run does no repeated work ------------
@st.cache_resource(show_spinner=False, max_entries=4)
def _projection(path: str, mtime: float) -> proj.Projection:
    # A resource (not data): the arrays are read-only and can be large; no copy per page run.
    return proj.read_projection(path)


@st.cache_resource(show_spinner=False, max_entries=4)
def _truth(_project: Project, path: str, mtime: float, classes: tuple[int, int]) -> np.ndarray:
    return proj.pool_truth(_project, _projection(path, mtime))


@st.cache_resource(show_spinner=False, max_entries=8)
def _map_data(_project: Project, path: str, mtime: float, history: int, picks: tuple[int, int],
              classes: tuple[int, int], pending: int | None) -> proj.MapData:
    # ``pending`` is a key only: a submitted batch changes no other mark, and the data must drop it.
    truth = _truth(_project, path, mtime, classes)
    return proj.map_data(_project, _projection(path, mtime), truth)


@st.cache_resource(show_spinner="Predicting every pool image with the current model…", max_entries=2)
def _predictions(_project: Project, model_path: str, mtime: float) -> proj.PoolPredictions | None:
    return proj.pool_predictions(_project)


# -- while the layout is being computed -----------------------------------------------------------
def _computing(p: Project) -> None:
    st.caption("The map is computed once for this project's features, in the background. The other pages "
               "stay usable meanwhile; this one updates when the map is ready.")
    status = proj.projection_status(p)
    state = None if status is None else status.get("state")
    started_key = f"map-started::{p.folder}"
    if status is None or (state in FINAL_STATES and not st.session_state.get(started_key)):
        # Once per tab on its own: an earlier failure (features not extracted then) may be gone now.
        proj.start_projection(p)
        st.session_state[started_key] = True
    elif state in ("failed", "cancelled"):
        st.error(f"Computing the map {state}: {lit(status.get('error') or status.get('message') or '')}")
        missing = "not extracted yet" in str(status.get("error"))
        if st.button("Extract the features and compute the map" if missing else "Try again", type="primary"):
            proj.start_projection(p, extract=missing)
            st.rerun()
        return
    elif state == "done":
        st.error("The map computation finished but no map for this project's encoder was written.")
        if st.button("Compute it again"):
            proj.start_projection(p, force=True)
            st.rerun()
        return
    _watch(p)


@st.fragment(run_every=1.0)
def _watch(p: Project) -> None:
    common.job_progress(proj.projection_status(p), lambda s: f"Computing the map ({s.get('phase') or 'starting'}): "
                                                             f"{s.get('message') or '…'}")


# -- the selection panel --------------------------------------------------------------------------
def _selection_panel(p: Project, data: proj.MapData, projection: proj.Projection, ids: np.ndarray,
                     predictions: proj.PoolPredictions | None, color_by: str) -> None:
    classes = p.classes()
    if not len(ids):
        st.markdown("**Pick points on the map**")
        st.caption("Drag on the map to draw a lasso around many images and label them at once (box "
                   "selection, zoom and pan are in the tool bar that appears over the map). To see one "
                   "image, choose pan or zoom in that tool bar, then click its point: while the lasso or "
                   "the box is on, a click does not select. Double-click empties the selection.")
        legend = {"labels": "Grey: unlabeled · colours: labeled, by class",
                  "truth": "Colours: the true class (the simulated oracle's answers, hidden from the model)",
                  "predicted": "Colours: the class the current model predicts (not shown for the batch to "
                               "label now)",
                  "entropy": "Colour: the current model's uncertainty (bright: unsure; not shown for the batch "
                             "to label now)"}[color_by]
        st.caption(f"{legend} · ★ the batch to label now · ○ the picks of the round chosen with the slider.")
        return
    rows = projection.rows_of(ids)
    state = np.where(rows >= 0, data.state[np.maximum(rows, 0)], proj.UNLABELED)
    unlabeled = ids[state == proj.UNLABELED]
    st.markdown(f"**{len(ids):,} selected** · {len(unlabeled):,} unlabeled · "
                f"{int((state == proj.LABELED).sum()):,} labeled · {int((state == proj.UNSURE).sum()):,} skipped")
    gen = st.session_state.get("map_gen", 0)
    # Above the thumbnails: it decides which images are shown for review, not only which are written.
    only_new = st.checkbox("Only images without a label", value=True, key=f"map-only-new-{gen}",
                           help="Labeled and skipped images in the selection are not shown and keep their label.")
    batch = data.image_ids[data.pending_rows()]
    cand = review.candidates(ids, state, set(batch.tolist()), only_new)
    if cand.in_batch:
        st.caption(f"{cand.in_batch:,} selected image(s) of the batch to label now (★) are not labeled here: "
                   "the whole batch is answered on the Label page, one image at a time.")
    if cand.settled:
        st.caption(f"{cand.settled:,} labeled or skipped image(s) are not shown and keep their label.")
    if not len(cand.ids):
        st.info("No image of this selection can be labeled from the map.")
        return
    # Only images shown on a review page and left ticked are labeled: nobody labels what nobody saw.
    pages = cand.pages(REVIEW_PAGE)
    at = st.number_input(f"Review page (of {pages})", 1, pages, 1, key=f"map-page-{gen}") if pages > 1 else 1
    shown_ids = cand.page(int(at), REVIEW_PAGE)
    # Kept apart from the tick boxes: Streamlit forgets a widget's state once its page is not drawn.
    seen = st.session_state.setdefault(f"map-seen-{gen}", set())
    seen.update(shown_ids.tolist())
    left_out = st.session_state.setdefault(f"map-out-{gen}", set())
    cols = st.columns(REVIEW_COLS)
    for k, image_id in enumerate(shown_ids.tolist()):
        row = p.image(int(image_id))
        where = row.label.class_name if row.label.class_name else row.label.state
        with cols[k % REVIEW_COLS]:
            st.image(row.path, width="stretch", caption=f"{image_id} · {lit(where)}")
            st.checkbox("keep", value=image_id not in left_out, key=f"map-keep-{gen}-{image_id}",
                        on_change=_toggle, args=(gen, image_id))
    targets = review.bulk_targets(cand.ids, seen, left_out)
    out = sum(1 for i in cand.ids.tolist() if i in left_out)
    unseen = sum(1 for i in cand.ids.tolist() if i not in seen)
    if out:
        st.caption(f"{out:,} image(s) left out by you.")
    if unseen:
        st.caption(f"{unseen:,} image(s) on review pages you have not opened are not labeled; open a page to "
                   "add its images.")
    if not classes:
        st.info("This project has no classes yet: add them on the Classes page first.")
        return
    options = [c.id for c in classes] + [SKIP]
    names = {c.id: c.name for c in classes}
    if predictions is not None:
        # The model's most common guess is offered as a hint only; the class is the user's choice.
        best = majority_guess(predictions.image_ids, predictions.class_ids, targets)
        if best is not None and best in names:
            rows_at = proj.align_ids(predictions.image_ids, targets)
            guesses = predictions.class_ids[rows_at[rows_at >= 0]]
            agree = int(np.count_nonzero(guesses == best))
            st.caption(f"Suggestion: the model guesses {lit(names[best])} for {agree:,} of {len(guesses):,}; "
                       f"check the pictures before you choose.")
    choice = st.selectbox("Label as", options, index=None, key=f"map-class-{gen}", placeholder="Choose a class",
                          format_func=lambda c: "Unsure (skip)" if c == SKIP else names[c])
    chosen = choice is not None
    class_id = None if choice in (None, SKIP) else int(choice)
    what = "…" if not chosen else ("Unsure" if class_id is None else names[class_id])
    # The click is acted on in the next run: what the button said then bounds what is written,
    # even if another tab changed labels (and so the review pages) in between.
    offered = st.session_state.get(f"map-offer-{gen}", [])
    st.session_state[f"map-offer-{gen}"] = targets.tolist()
    if st.button(review.button_text(targets, cand.ids, int(at), REVIEW_PAGE, only_new, lit(what)), type="primary",
                 disabled=not len(targets), key=f"map-apply-{gen}", wrap=True,
                 help="Writes exactly the images counted here; Undo on this page takes it back."):
        if not chosen:
            st.error("Choose the class first: nothing was labeled.")
            return
        write = targets[np.isin(targets, np.asarray(offered, dtype=np.int64))]
        if not len(write):
            st.warning("The images to label changed just now: nothing was labeled. Check them and press again.")
            return
        try:
            # Checked in the write's own transaction: a round finishing after this page run was drawn
            # brings a batch the review pages could not leave out.
            result = p.bulk_label(write.tolist(), class_id, source="map", skip_pending=True)
        except ProjectError as exc:
            st.error(lit(exc))
            return
        skipped = set(result.skipped)
        if len(skipped) < len(write):
            common.flash("success", f"Labeled {result.changed:,} images as {lit(what)}"
                         + (f" ({result.unchanged:,} already were)" if result.unchanged else ""))
        if skipped:
            common.flash("warning", f"{len(skipped):,} image(s) were not labeled: a new batch to label "
                         "arrived just now and holds them. Answer them on the Label page.")
        written = [i for i in write.tolist() if i not in skipped]
        st.session_state[UNDO_KEY] = {"action": result.action_id, "ids": written, "what": what,
                                      "folder": str(p.folder)}
        for name in ("seen", "out", "offer"):
            st.session_state.pop(f"map-{name}-{gen}", None)
        # A new chart key empties the selection, so the next lasso starts fresh.
        st.session_state["map_gen"] = gen + 1
        st.rerun()


def _toggle(gen: int, image_id: int) -> None:
    out = st.session_state.setdefault(f"map-out-{gen}", set())
    if st.session_state.get(f"map-keep-{gen}-{image_id}", True):
        out.discard(image_id)
    else:
        out.add(image_id)


def _undo_bulk(p: Project, last: dict) -> tuple[int, int]:
    """Undo the bulk label as the one history action it is: an image whose label changed since is
    the newer answer and is left as it is. Returns (restored, left alone)."""
    res = p.undo_action(int(last["action"]))
    return len(res.restored), len(res.conflicts)


def _undo_panel(p: Project) -> None:
    last = st.session_state.get(UNDO_KEY)
    if not last or last.get("folder") != str(p.folder) or not last.get("action"):
        return
    n = len(last["ids"])
    if st.button(f"Undo: labeling {n:,} images as {lit(last['what'])}", key="map-undo",
                 help="Puts back what these images had before the bulk label."):
        st.session_state.pop(UNDO_KEY, None)
        try:
            restored, kept = _undo_bulk(p, last)
        except ProjectError as exc:     # undone already (the Label page's undo), or gone
            common.flash("warning", f"Nothing undone: {lit(exc)}.")
            st.rerun()
        common.flash("success", f"Undone: {restored:,} images have their earlier label again"
                     + (f"; {kept:,} changed since were left as they are" if kept else "") + ".")
        st.rerun()


# -- the page -------------------------------------------------------------------------------------
st.title("Map")
path = proj.find_projection_file(project)
if path is None:
    _computing(project)
    st.stop()

status = proj.projection_status(project)
if status is not None and status.get("state") not in FINAL_STATES:
    _watch(project)
projection = _projection(str(path), path.stat().st_mtime)
# The model first, the batch after: a round that finishes in between brings its model and its batch
# together, so the predictions are never newer than the batch the data marks as pending.
model_path = project.current_model_path()
pending_key = project.pending_round()
history, picks, class_marks = project.change_marks().as_tuple()
data = _map_data(project, str(path), path.stat().st_mtime, history, picks, class_marks, pending_key)
predictions = None
if model_path is not None and model_path.is_file():
    try:
        predictions = _predictions(project, str(model_path), model_path.stat().st_mtime)
    except (ProjectError, ValueError, OSError) as exc:
        st.warning(f"The current model's predictions are not available: {lit(exc)}")

common.show_flash()
_undo_panel(project)
stale = proj.projection_staleness(project, projection, data.missing)
if stale:
    st.warning(f"The map is out of date: {lit(stale)}.")

modes = ["labels"] + (["truth"] if data.has_truth else []) + (["predicted", "entropy"] if predictions else [])
pending_round = data.pending_round
earlier = sorted(r for r in data.selections if r != pending_round)
c1, c2 = st.columns([2, 3])
with c1:
    color_by = st.radio("Colour by", modes, format_func=COLOR_LABELS.get, horizontal=True, key="map_color",
                        help="Uncertainty: the entropy of the current model's prediction (the paper's Figure 2).")
with c2:
    if earlier:
        highlight = st.select_slider("Show the images picked in round", options=["none", *earlier],
                                     value=earlier[-1], key="map_round")
    else:
        highlight = "none"
        st.caption("Earlier rounds' picks can be shown here once a batch has been submitted.")

classes = project.classes()
color_by = color_by or "labels"
fig = proj.map_figure(data, [c.id for c in classes], [c.name for c in classes], color_by=color_by,
                      class_colors=[c.color for c in classes],
                      predictions=predictions, pending_round=pending_round,
                      highlight_round=None if highlight in (None, "none") else int(str(highlight)),
                      seed=int(str(projection.params.get("seed", 0))))
left, right = st.columns([3, 1.15], gap="medium")
with left:
    event = st.plotly_chart(fig, key=f"map-chart-{st.session_state.get('map_gen', 0)}", on_select="rerun",
                            selection_mode=("points", "box", "lasso"),
                            config={"displaylogo": False, "scrollZoom": True})
with right:
    _selection_panel(project, data, projection, proj.selected_image_ids(event.selection if event else None),
                     predictions, color_by)

drawn = sum(len(t.x) for t in fig.data)
with st.expander("About this map"):
    st.caption(f"{len(projection.image_ids):,} images mapped, {drawn:,} points drawn (every labeled and picked "
               f"image plus a fixed sample of the rest). UMAP with {projection.params.get('n_neighbors')} "
               f"neighbours, min_dist {projection.params.get('min_dist')}, {projection.params.get('metric')} "
               f"metric, fitted on {projection.params.get('fit_points', 0):,} points, seed "
               f"{projection.params.get('seed')}; features {projection.encoder_id}.")
    if predictions is not None:
        st.caption(f"Model colours and hover guesses: the model of round {predictions.round}; none for the "
                   "batch to label now, whose answers must be yours alone.")
    if st.button("Recompute the map", help="Fits the layout again; points will move."):
        # The current map stays on screen until the new one replaces it.
        proj.start_projection(project, force=True)
        st.rerun()

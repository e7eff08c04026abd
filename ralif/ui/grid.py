"""The keyboard labeling grid: a custom component plus the code that turns its events into labels.

The component (``components/label_grid/index.html``) draws the images, keeps the focus and the
selection, and sends every action as an event with a unique id. Events are applied here, at the
top of a page run and before anything is drawn, through the :class:`~ralif.project.Project` API;
each label is committed (durable) before the next event is looked at. Applied event ids are
remembered per tab, so an event that arrives again (the component resends until it is
acknowledged) is applied once.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

from ralif.audit import AcceptDecision
from ralif.project import BatchItem, ClassInfo, ImageRow, LabelState, Project, ProjectError, UndoResult
from ralif.project.records import ActionInfo
from ralif.project.rounds import GUESS_MARK
from ralif.project.store import DiskFullError, ProjectGoneError, ProjectReplacedError, ReadOnlyError
from ralif.ui.thumbs import thumbnail

_COMPONENT = components.declare_component(
    "ralif_label_grid", path=str(Path(__file__).resolve().parent / "components" / "label_grid"))

MEMORY_KEY = "ralif_tab_memory"
# Enough to recognise any event a component can still resend; older ids are forgotten.
_PROCESSED_LIMIT = 5000
RECENT_LIMIT = 24
NOTICE_S = 10.0
NOTICE_THUMB_PX = 64
# Writes that failed for a reason outside the request (the disk, the folder): the event is kept
# by the grid, unsaved, and sent again on the next page run, instead of being dropped.
NOT_SENT = (DiskFullError, ReadOnlyError, ProjectReplacedError, ProjectGoneError)
# Why a write failed, in the few words the grid's status line has room for.
_PROBLEMS: tuple[tuple[type[BaseException], str], ...] = (
    (DiskFullError, "the disk is full"),
    (ReadOnlyError, "the project is read-only"),
    (ProjectGoneError, "the project folder was moved or deleted"),
    (ProjectReplacedError, "the project folder was replaced"),
)


def save_problem(exc: BaseException) -> str | None:
    """Why ``exc`` kept a change from being saved, in a few words (None: no known reason)."""
    for kind, text in _PROBLEMS:
        if isinstance(exc, kind):
            return text
    return None


@dataclass
class TabMemory:
    """What one browser tab remembers about one project between page runs."""

    processed: OrderedDict[str, None] = field(default_factory=OrderedDict)
    # Label version this tab itself last wrote, per image: an event typed before the grid saw
    # that write still carries the older version and must not be taken for another tab's change.
    own_versions: dict[int, int] = field(default_factory=dict)
    recent: list[int] = field(default_factory=list)           # image ids, newest first
    notices: dict[str, dict[str, Any]] = field(default_factory=dict)
    notice_count: int = 0
    # The action a first u showed (it lies outside the batch on screen): a second u undoes it.
    undo_confirm: int | None = None
    # Per grid, why its last write failed, until a later write succeeds: the grid keeps the
    # unsaved actions and says why they wait, across visits to other pages too.
    save_problems: dict[str, str] = field(default_factory=dict)

    def remember(self, event_id: str) -> None:
        self.processed[event_id] = None
        while len(self.processed) > _PROCESSED_LIMIT:
            self.processed.popitem(last=False)

    def touch(self, image_id: int) -> None:
        if image_id in self.recent:
            self.recent.remove(image_id)
        self.recent.insert(0, image_id)
        del self.recent[RECENT_LIMIT:]

    def notice(self, grid_key: str, text: str, kind: str = "", thumb: str | None = None,
               caption: str | None = None) -> None:
        self.notice_count += 1
        self.notices[grid_key] = {"id": str(self.notice_count), "text": text, "kind": kind, "thumb": thumb,
                                  "caption": caption, "at": time.monotonic()}

    def current_notice(self, grid_key: str) -> dict[str, Any] | None:
        """The grid's latest message while it is news; a grid drawn later (a new batch, a page
        visited again) does not show an old one."""
        note = self.notices.get(grid_key)
        if note is None or time.monotonic() - float(note["at"]) > NOTICE_S:
            return None
        return {k: v for k, v in note.items() if k != "at"}


def tab_memory(project: Project) -> TabMemory:
    """This tab's memory for ``project`` (kept in ``st.session_state``, one entry per project)."""
    per_project = st.session_state.setdefault(MEMORY_KEY, {})
    return per_project.setdefault(str(project.folder), TabMemory())


@dataclass
class Applied:
    """What applying a component's events did."""

    acked: list[str] = field(default_factory=list)
    submit: int | None = None                                       # round of a submit request
    allow_unanswered: bool = False                                  # the submit was confirmed with some left
    unsaved: int = 0                                                # events kept for the next run
    focus_hint: dict[str, Any] | None = None
    messages: list[tuple[str, str]] = field(default_factory=list)   # (kind, text) for the page


def _class_name(project: Project, class_id: int | None) -> str:
    if class_id is None:
        return "skipped"
    names = {c.id: c.name for c in project.classes()}
    return names.get(class_id, f"class {class_id}")


def _describe(state: LabelState) -> str:
    if state.state == "labeled":
        return repr(state.class_name)
    return "skipped" if state.state == "unsure" else "no label"


def apply_events(project: Project, value: Any, memory: TabMemory, grid_key: str) -> Applied:
    """Apply the not yet applied events in a component value (``{"outbox": [...]}``) in order."""
    out = Applied()
    events = value.get("outbox") if isinstance(value, dict) else None
    if not isinstance(events, list):
        return out
    store = value.get("store")
    if store and store != store_key(project, grid_key):
        # Sent by a grid drawn for another project (this tab switched projects): not ours to apply.
        return out
    valid = [ev for ev in events if isinstance(ev, dict) and isinstance(ev.get("id"), str)]
    notices, applied = memory.notice_count, 0
    for k, ev in enumerate(valid):
        eid = ev["id"]
        if eid in memory.processed:
            out.acked.append(eid)
            continue
        try:
            _apply_one(project, ev, memory, grid_key, out)
        except NOT_SENT as exc:
            # Not acknowledged: the grid keeps this event and those after it (order matters),
            # marked unsaved, and sends them again; the next page run writes them once it can.
            out.unsaved = len(valid) - k
            text = (f"Not saved yet ({out.unsaved} action(s) kept in this page, sent again automatically): "
                    f"{exc}")
            memory.notice(grid_key, text, "error")
            memory.save_problems[grid_key] = save_problem(exc) or str(exc)
            out.messages.append(("error", text))
            break
        except (ProjectError, KeyError, TypeError, ValueError) as exc:
            # A refused event (a class deleted in another tab, say) is reported, not retried forever.
            memory.notice(grid_key, f"Not saved: {exc}", "error")
            out.messages.append(("error", f"An action was not saved: {exc}"))
        applied += 1
        out.acked.append(eid)
        memory.remember(eid)
    if applied and not out.unsaved and grid_key in memory.save_problems:
        del memory.save_problems[grid_key]
        # The failure the grid still shows is over: it must not stay up beside "every answer
        # saved" (a message of this run, a conflict say, replaces it anyway).
        if memory.notice_count == notices:
            memory.notice(grid_key, "Saved: the answers that were waiting in this page are in the project now.")
    return out


def _apply_one(project: Project, ev: dict[str, Any], memory: TabMemory, grid_key: str, out: Applied) -> None:
    kind = ev.get("type")
    if kind in ("label", "clear"):
        image_id = int(ev["image_id"])
        seen = int(ev.get("version") or 0)
        expected = max(seen, memory.own_versions.get(image_id, 0))
        replay = bool(ev.get("replay"))
        policy = "reject" if replay else "overwrite"
        if kind == "label":
            cid = ev.get("class_id")
            res = project.label(image_id, None if cid is None else int(cid), expected_version=expected,
                                on_conflict=policy)
        else:
            res = project.unlabel(image_id, expected_version=expected, on_conflict=policy)
        if res.written or (replay and not res.conflict):
            # A replayed answer found already in place was written by this tab before the app
            # restarted; the tab's next answers for the image, typed against the version the page
            # showed, build on it rather than conflict with it.
            memory.own_versions[image_id] = res.version
        memory.touch(image_id)
        if res.conflict and not replay:
            now = "removed" if kind == "clear" else _class_name(project, res.class_id)
            text = (f"Image {image_id} had been changed elsewhere (another tab or person) to "
                    f"{_describe(res.previous)}; your answer ({now}) replaced it. Undo (u) restores it.")
            memory.notice(grid_key, text, "warn")
            out.messages.append(("warning", text))
    elif kind == "bulk":
        ids = [int(i) for i in ev["image_ids"]]
        cid = ev.get("class_id")
        project.bulk_label(ids, None if cid is None else int(cid))
        for i in ids:
            memory.own_versions[i] = project.label_of(i).version
        for i in reversed(ids):
            memory.touch(i)
    elif kind == "undo":
        _undo(project, ev, memory, grid_key, out)
    elif kind == "submit":
        out.submit = int(ev.get("round") or 0)
        out.allow_unanswered = bool(ev.get("allow_unanswered"))
        # What was said about this batch is not news for the next one.
        memory.notices.pop(grid_key, None)
    else:
        raise ValueError(f"unknown action {kind!r}")


def _undo(project: Project, ev: dict[str, Any], memory: TabMemory, grid_key: str, out: Applied) -> None:
    """Undo the tab's last action from the project's history (so a reload keeps it). An action
    on images that are not on screen is shown first and undone by a second u."""
    act = project.next_undo()
    if act is None:
        memory.undo_confirm = None
        memory.notice(grid_key, "Nothing left to undo.", "warn")
        return
    # The component lists the images on screen; an event without the list (from a page drawn by
    # an older version, still open) cannot be checked and is undone as before.
    listed = ev.get("on_screen")
    on_screen = {int(i) for i in listed} if isinstance(listed, list) else None
    outside = on_screen is not None and (act.count > len(act.image_ids) or not set(act.image_ids) <= on_screen)
    titles = ev.get("titles")
    named = ({int(i): str(t) for i, t in zip(listed, titles)}
             if isinstance(listed, list) and isinstance(titles, list) else {})
    thumb, caption = _undo_picture(act, named)
    if outside and memory.undo_confirm != act.id:
        memory.undo_confirm = act.id
        where = ("" if act.kind in ("merge", "delete-class") else
                 " It changed image(s) that are not in the batch on screen.")
        memory.notice(grid_key, f"The last action is {act.summary}.{where} Press u again to undo it.", "warn",
                      thumb, caption)
        return
    memory.undo_confirm = None
    res = project.undo_action(act.id)
    for i in res.restored:
        memory.own_versions[i] = project.label_of(i).version
    text = _undone_one(project, act, res, named)
    if text is None:
        text = f"Undone: {act.summary}."
        if res.classes_restored:
            text += f" Class back: {', '.join(repr(n) for n in res.classes_restored)}."
        if res.conflicts:
            text += (f" {len(res.conflicts)} image(s) were changed elsewhere since and were left as they "
                     f"are: {', '.join(map(str, res.conflicts[:10]))}.")
    memory.notice(grid_key, text, "warn" if res.conflicts else "", thumb, caption)
    if res.restored:
        out.focus_hint = {"event": ev["id"], "image_id": res.restored[0]}


def _undone_one(project: Project, act: ActionInfo, res: UndoResult, titles: dict[int, str]) -> str | None:
    """What undoing one image's answer did, naming the image as its tile does ("#2"), or None
    for an action on several images or on classes (its summary says it)."""
    if act.count != 1 or not act.image_ids or act.kind in ("merge", "delete-class", "oracle"):
        return None
    image = act.image_ids[0]
    where = titles.get(image) or (f'image "{Path(act.first_path).name}"' if act.first_path else f"image {image}")
    if image in res.conflicts:
        return (f"Not undone: {where} was changed elsewhere since (another tab or person), and that answer "
                "stays.")
    now = project.label_of(image)
    after = ("it has no answer now" if now.state == "unlabeled" else "it is skipped again" if now.state == "unsure"
             else f'it is "{now.class_name}" again' if now.class_name else "it has its earlier answer again")
    if act.first_label == "no label":
        return f"Undone: the removal of the answer of {where}; {after}."
    if act.first_label in ("skipped", "a deleted class"):
        return f"Undone: {where} is no longer {act.first_label}; {after}."
    return f'Undone: {where} is no longer "{act.first_label}"; {after}.'


def _undo_picture(act: ActionInfo, named: dict[int, str]) -> tuple[str | None, str | None]:
    """The first image an action changed, as a small thumbnail, and what it had been set to; the
    image is named by its tile (``named``: image id to tile title) or, off screen, by its file."""
    if not act.first_path:
        return None, None
    first = act.image_ids[0] if act.image_ids else None
    name = named.get(first) if first is not None else None
    return thumbnail(act.first_path, NOTICE_THUMB_PX), f"{name or Path(act.first_path).name}: {act.first_label}"


def apply_pending(project: Project, grid_key: str, memory: TabMemory) -> Applied:
    """Apply what the grid ``grid_key`` sent since the last page run (its value in session state)."""
    return apply_events(project, st.session_state.get(grid_key), memory, grid_key)


# ----------------------------------------------------------------------------- what the grid shows

_COLD = re.compile(r"k-means\+\+ pick (\d+) of (\d+) over .*\(cold start: ([^)]*)\)")
_TYPICAL = re.compile(r"typicality pick (\d+) of (\d+)")
_OF = re.compile(r"(\d[\d,]*) of (\d[\d,]*)")


def short_reason(reason: str) -> str:
    """The selection reason in a few words for a tile; the full text goes in its tooltip."""
    head = reason.split(";")[0].strip()
    m = _COLD.search(head)
    if m:
        return f"diverse pick {m.group(1)}/{m.group(2)}, cold start ({m.group(3)})"
    m = _TYPICAL.search(head)
    if m:
        return f"typical pick {m.group(1)}/{m.group(2)}, few labels yet"
    head = head.replace(" candidates", "").replace("influence rank ", "influence #")
    head = re.sub(r" among the ([\d.]+%) of images the model is least sure of", r" in the least-sure \1", head)
    head = re.sub(r"k-means(\+\+)? pick", "diverse pick", head).replace("k-center pick", "coverage pick")
    # Parts are split at ", " only: counts of 1,000 and more carry a thousands comma.
    return " · ".join(_OF.sub(r"\1/\2", part.strip()) for part in head.split(", "))


_PICK = re.compile(r"pick (\d[\d,]*) of (\d[\d,]*)")


def _count(text: str) -> str:
    return f"{int(text.replace(',', '')):,}"


def plain_reason(reason: str) -> str:
    """Why the image was chosen, in words for the person labeling; the numbers stay in the tooltip."""
    head = reason.split(";")[0]
    pick = _PICK.search(head)
    of = f"; {_count(pick.group(1))} of {_count(pick.group(2))} diverse picks" if pick else ""
    if _COLD.search(head):
        return f"chosen to cover the variety of images while there is no model yet{of}"
    if _TYPICAL.search(head):
        return (f"chosen as a typical image of a group that has few labels, while the model has too few "
                f"labels per class to be trusted{of}")
    unsure = "the model is unsure of it and " if "least sure" in head else ""
    if "influence" in head and "k-center" in head:
        return (f"chosen because {unsure}labeling it should help the model most, and far from every labeled "
                f"image: some class has few labels yet{of}")
    if "influence" in head:
        return f"chosen because {unsure}labeling it should help the model most{of}"
    if "random" in head.lower():
        return "chosen at random"
    return short_reason(reason)


def _label_fields(label: LabelState) -> dict[str, Any]:
    return {"state": label.state, "class_id": label.class_id, "class_name": label.class_name,
            "version": label.version}


def batch_items(batch: Sequence[BatchItem], px: int, classes: Sequence[ClassInfo] | None = None,
                audit: Collection[int] = (), truth: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
    """Tiles of the batch. A guess for a class merged away since the round shows the class it was
    merged into (``truth``: every class id -> the live class it counts as now,
    :meth:`ralif.project.Project.truth_map`); a guess for a class that no longer exists
    (``classes``: the live ones) is not offered: the tile shows none and says why when ``a`` is
    pressed. Neither is the guess for an image drawn to measure the model (``audit``): seen, it
    would sway the answer it is measured against."""
    live = None if classes is None else {c.id: c.name for c in classes}
    items = []
    for b in batch:
        guess_id, guess = b.predicted_class_id, b.predicted_class
        merged = False
        if live is not None and guess_id is not None and guess_id not in live and truth is not None:
            # Merged away: the guess counts as the merge target (its confidence is the merged-away
            # class's share, a lower bound of the target's).
            target = truth.get(guess_id)
            if target in live:
                guess_id, guess, merged = target, live[target], True
        gone = live is not None and guess_id is not None and guess_id not in live
        hidden = b.image_id in audit
        # Batches computed before audit reasons left the guess out still carry it.
        reason = b.reason.split(GUESS_MARK, 1)[0] if hidden and b.reason else b.reason
        items.append({
            "id": b.image_id, "src": thumbnail(b.path, px), "title": f"#{b.rank}",
            "subtitle": Path(b.path).name, "alt": f"image {b.rank} of the batch",
            "predicted": None if gone or hidden else guess,
            "predicted_class_id": None if gone or hidden else guess_id,
            "guess_gone": b.predicted_class if gone and not hidden else None,
            "confidence": None if gone or hidden else b.confidence,
            # Only the top class's probability is stored: the merged target's is at least that.
            "confidence_floor": merged and not hidden,
            "no_prediction": ("guess hidden: audit" if hidden
                              else "no guess: its class was removed" if gone else "no model yet"),
            "audit": hidden,
            "why": plain_reason(reason), "why_full": f"{short_reason(reason)}\n{reason}",
            "tooltip": b.path, "rank": b.rank,
            **_label_fields(b.label)})
    return items


def row_items(rows: Sequence[ImageRow], px: int) -> list[dict[str, Any]]:
    return [{"id": r.image_id, "src": thumbnail(r.path, px), "title": f"image {r.image_id}",
             "subtitle": "", "alt": Path(r.path).name, "predicted": None, "predicted_class_id": None,
             "confidence": None, "no_prediction": Path(r.path).name, "why": "", "why_full": "",
             "tooltip": r.path, "rank": 0, **_label_fields(r.label)} for r in rows]


def class_args(classes: Sequence[ClassInfo]) -> list[dict[str, Any]]:
    """The classes as the grid shows them: each with its own stored key and colour."""
    return [{"id": c.id, "name": c.name, "count": c.count, "key": c.hotkey, "color": c.color} for c in classes]


def label_grid(*, key: str, items: list[dict[str, Any]], classes: Sequence[ClassInfo], mode: str,
               batch_id: Any, acked: list[str], memory: TabMemory, project: Project,
               focus_hint: dict[str, Any] | None = None, capture_page_keys: bool = False,
               accept: AcceptDecision | None = None,
               image_px: int = 160, empty: str = "", sticky: bool = False) -> Any:
    """Draw the grid; returns its value (the events are applied by :func:`apply_pending`).
    ``sticky``: the class bar stays on screen while the page scrolls the grid, and moving the
    focus scrolls the page (the main grid of a page; a grid in a panel below it stays put)."""
    return _COMPONENT(
        key=key, default=None, items=items, classes=class_args(classes), mode=mode, batch_id=batch_id,
        acked=acked, notice=memory.current_notice(key), focus_hint=focus_hint,
        capture_page_keys=capture_page_keys, image_px=image_px, empty=empty, sticky=sticky,
        accept=None if accept is None else {"mode": accept.mode, "reason": accept.reason},
        save_problem=memory.save_problems.get(key),
        # Unsent actions are kept per tab and project, so a reload resends them to the right place.
        store_key=store_key(project, key))


def store_key(project: Project, grid_key: str) -> str:
    return f"ralif-outbox:{project.folder}:{grid_key}"

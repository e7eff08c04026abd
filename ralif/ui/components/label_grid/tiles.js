"use strict";
// The tiles of the grid: how each image is built and drawn, what a screen reader says of it (its
// name, description, role and selected state), a click on it, and the keyboard focus that follows
// the ring (see grid.js for the state).

// ---------------------------------------------------------------------------------- focus

// The tile with the ring is the one with the keyboard focus, so that a screen reader says which
// image a key will answer. The focus follows the ring when the grid has it (on a tile, or on
// nothing after a click on the grid), and after a move (``moved``) also from a tile's box or from
// a page that has it on nothing; a button of the grid or of the page keeps it (Enter presses it).
// The page scrolls as keepInView decides, never by the focus itself.
function followFocus(moved) {
  const it = S.items[S.focus];
  const tile = it ? S.tiles.get(it.id) : null;
  const active = document.activeElement;
  if (!tile || !tile.isConnected || active === tile) return;
  let take = false;
  if (document.hasFocus()) {
    take = !active || active === document.body || active === document.documentElement ||
           active.classList.contains("tile") || (moved && !!active.closest(".tile"));
  } else if (moved && S.pageKeys) {
    try {
      const pd = window.parent.document;
      const onPage = pd.activeElement;
      take = !onPage || onPage === pd.body || onPage === pd.documentElement;
    } catch (e) { /* another origin: the page's focus is not the grid's to take */ }
  }
  if (take) tile.focus({preventScroll: true});
}

// ---------------------------------------------------------------------------------- tiles

function makeTile(it) {
  // An option of the list of images (its name: number, file and answer; see tileName): focused,
  // it puts a screen reader in the mode where the grid's keys reach the grid. The selection box
  // is for the mouse; the option's selected state says the same.
  const t = el("div", "tile");
  t.tabIndex = -1;
  t.setAttribute("role", "option");
  t.dataset.imageId = it.id;
  const box = el("div", "img");
  const img = document.createElement("img");
  img.alt = "";
  img.draggable = false;
  box.append(img);
  // Under the picture, one row: the selection box with the image's number, then its answer.
  const labRow = el("div", "lab top");
  const lab = el("label");
  const cb = document.createElement("input");
  cb.type = "checkbox";
  cb.tabIndex = -1;
  cb.addEventListener("click", (e) => {
    e.stopPropagation();
    toggle(it.id, cb.checked);
  });
  lab.addEventListener("click", (e) => e.stopPropagation());
  lab.append(cb, el("span", "ttl"));
  labRow.append(lab, el("span", "answer"));
  const conf = el("div", "conf");
  conf.id = `tile-${it.id}-conf`;
  const meter = el("div", "meter");
  meter.append(el("i"));
  const why = el("div", "why");
  why.id = `tile-${it.id}-why`;
  t.setAttribute("aria-describedby", `${conf.id} ${why.id}`);
  t.append(box, labRow, conf, meter, why);
  t.addEventListener("click", (e) => onTileClick(e, it.id));
  return t;
}

function toggle(id, on) {
  if (on) S.selected.add(id); else S.selected.delete(id);
  S.anchor = id;
  drawAll();
}

// Selects every image from the anchor to index ``to`` (the anchor itself included).
function addRange(to) {
  const a = Math.max(0, S.items.findIndex((x) => x.id === S.anchor));
  const [lo, hi] = a < to ? [a, to] : [to, a];
  for (let j = lo; j <= hi; j++) S.selected.add(S.items[j].id);
}

function onTileClick(e, id) {
  const i = S.items.findIndex((x) => x.id === id);
  if (i < 0) return;
  withdraw();
  if (e.shiftKey) {
    // The range starts at the anchor, or at the focus when there is none; it becomes the anchor, so a
    // shift+arrow afterwards extends the same range.
    if (S.anchor === null) S.anchor = S.items[Math.max(0, Math.min(S.items.length - 1, S.focus))].id;
    addRange(i);
  } else if (e.ctrlKey || e.metaKey) {
    if (S.selected.has(id)) S.selected.delete(id); else S.selected.add(id);
    S.anchor = id;
  } else {
    S.selected.clear();
    S.anchor = id;
  }
  S.focus = i;
  window.focus();
  drawAll();
}

// What a screen reader says of a tile: "Image 3 of 20, dog_01.jpg, labeled cat".
function tileName(it, index, view) {
  const title = it.title && it.title !== `#${index + 1}` ? ` (${it.title})` : "";
  const file = it.subtitle || String(it.tooltip || "").split(/[\\/]/).pop() || it.alt || "";
  let answer = "no label yet";
  if (view.state === "labeled") {
    const c = classById(view.class_id);
    answer = `labeled ${c ? c.name : (it.class_name || "deleted class")}`;
  } else if (view.state === "unsure") {
    answer = "skipped";
  }
  return [`Image ${index + 1} of ${S.items.length}${title}`, file, answer].filter(Boolean).join(", ");
}

function updateTile(t, it, index) {
  const view = shown(it);
  t.classList.toggle("focus", index === S.focus);
  t.classList.toggle("sel", S.selected.has(it.id));
  // One tile in the order of Tab: the one with the ring.
  t.tabIndex = index === S.focus ? 0 : -1;
  t.setAttribute("aria-selected", String(S.selected.has(it.id)));
  t.setAttribute("aria-label", tileName(it, index, view));
  t.querySelector("input").checked = S.selected.has(it.id);
  t.querySelector(".ttl").textContent = it.title;
  const img = t.querySelector("img");
  if (img.getAttribute("src") !== it.src) img.setAttribute("src", it.src);
  img.alt = it.alt || it.title;
  const labRow = t.querySelector(".answer");
  labRow.replaceChildren();
  let chip;
  if (view.state === "labeled") {
    const c = classById(view.class_id);
    chip = el("span", "chip", c ? c.name : (it.class_name || "deleted class"));
    chip.title = chip.textContent;   // the whole name, where a long one is cut to the tile's width
    chip.style.background = classColor(view.class_id);
  } else if (view.state === "unsure") {
    chip = el("span", "chip unsure", "skipped");
  } else {
    chip = el("span", "chip none", "no label yet");
  }
  labRow.append(chip);
  if (view.pending) labRow.append(el("span", "pending", "saving…"));
  const conf = t.querySelector(".conf");
  const meter = t.querySelector(".meter > i");
  const guessed = it.predicted_class_id !== null && it.predicted_class_id !== undefined;
  if (guessed && !classById(it.predicted_class_id)) {
    // A guess for a class removed since the batch was picked is not offered.
    conf.textContent = "model: no guess among the current classes";
    meter.parentElement.style.visibility = "hidden";
  } else if (guessed) {
    const floor = it.confidence_floor ? "≥ " : "";
    const pct = it.confidence === null ? "" : ` ${floor}${Math.round(it.confidence * 100)}%`;
    conf.textContent = `model: ${it.predicted || "?"}${pct}`;
    meter.parentElement.style.visibility = "visible";
    meter.style.width = `${Math.round((it.confidence || 0) * 100)}%`;
  } else {
    conf.textContent = it.no_prediction || "";
    meter.parentElement.style.visibility = "hidden";
  }
  const why = t.querySelector(".why");
  why.textContent = it.why || "";
  why.title = it.why_full || it.why || "";
  t.title = [it.subtitle, it.tooltip].filter(Boolean).join("\n");
}

function drawGrid() {
  const grid = document.getElementById("grid");
  const keep = new Set(S.items.map((it) => it.id));
  for (const [id, t] of S.tiles) if (!keep.has(id)) { t.remove(); S.tiles.delete(id); }
  S.items.forEach((it, i) => {
    let t = S.tiles.get(it.id);
    if (!t) { t = makeTile(it); S.tiles.set(it.id, t); }
    if (grid.children[i] !== t) grid.insertBefore(t, grid.children[i] || null);
    updateTile(t, it, i);
  });
  if (!S.items.length && !grid.querySelector(".empty")) {
    grid.append(el("div", "empty", S.args.empty || "Nothing to show."));
  } else if (S.items.length) {
    const e = grid.querySelector(".empty");
    if (e) e.remove();
  }
  // A list of images while there are some (a list with no option in it is no list).
  if (S.items.length) {
    grid.setAttribute("role", "listbox");
    grid.setAttribute("aria-multiselectable", "true");
    grid.setAttribute("aria-label", S.args.mode === "batch" ? "Images of the batch" : "Images");
  } else {
    ["role", "aria-multiselectable", "aria-label"].forEach((a) => grid.removeAttribute(a));
  }
}

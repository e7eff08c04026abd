"use strict";
// A bidirectional Streamlit component (protocol v1): the app sends "streamlit:render" messages with
// the images and their labels; this page sends every labeling action back as an event with a unique
// id. Events stay in an outbox (and in the tab's sessionStorage) until the app acknowledges them, and every
// message carries the whole outbox, so a rerun that supersedes an earlier one cannot drop an action.

// Keys and colours come with each class from the project (stored with the class, never derived
// from its place in the list). Grey is kept for "skipped" and removed classes.
const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"];
const GONE_COLOR = "#888888";
// Past this many classes the bar shows the keyed ones only; the finder (/) reaches every class.
const BAR_ALL = 20;
const RESEND_MS = 1500;

const S = {
  args: null, items: [], classes: [], byId: new Map(), tiles: new Map(),
  focus: 0, selected: new Set(), anchor: null, batchId: null,
  outbox: [], seq: 0, counter: 0, nonce: Math.random().toString(36).slice(2, 10),
  storeKey: null, byClass: new Map(), message: "", messageKind: "", sayTimer: null, lastSent: 0, resendTimer: null,
  messageHolds: null, classShape: "",
  appliedHints: new Set(), lastHeight: 0, confirmSubmit: null, confirmAccept: null, prompt: null, thumb: null,
  caption: "",
  finder: {open: false, text: "", index: 0}, pageKeys: false, heldUntil: 0,
};

function post(type, extra) {
  window.parent.postMessage(Object.assign({isStreamlitMessage: true, type: type}, extra), "*");
}

function send() {
  S.seq += 1;
  S.lastSent = Date.now();
  post("streamlit:setComponentValue",
       {value: {outbox: S.outbox, seq: S.seq, nonce: S.nonce, store: S.storeKey}, dataType: "json"});
  scheduleResend();
}

function scheduleResend() {
  // An event the app has not acknowledged yet (connection lost, page busy) is sent again.
  if (S.resendTimer) clearTimeout(S.resendTimer);
  S.resendTimer = null;
  if (!S.outbox.length) return;
  S.resendTimer = setTimeout(() => { if (S.outbox.length) { send(); drawStatus(); } }, RESEND_MS * 2);
}

function persist() {
  if (!S.storeKey) return;
  try {
    if (S.outbox.length) sessionStorage.setItem(S.storeKey, JSON.stringify(S.outbox));
    else sessionStorage.removeItem(S.storeKey);
  } catch (e) { /* storage may be disabled; the outbox in memory still protects a rerun */ }
}

function enqueue(ev) {
  // An answer (a click on a class, undo) is not the yes a question waits for: the question goes.
  if (ev.type !== "submit") withdraw();
  S.counter += 1;
  ev.id = S.nonce + "-" + S.counter;
  ev.t = Date.now();
  S.outbox.push(ev);
  persist();
  send();
  drawAll();
}

// ---------------------------------------------------------------------------------- state

function classById(id) { return S.byClass.get(id) || null; }
function classByKey(key) { return S.classes.find((c) => c.key === key) || null; }
function classColor(id) {
  const c = classById(id);
  return c && c.color ? c.color : GONE_COLOR;
}

// What a tile shows: the app's last word, then every action still on its way, in order.
function shown(item) {
  let state = item.state, cls = item.class_id, pending = false;
  for (const ev of S.outbox) {
    const hits = ev.type === "bulk" ? ev.image_ids.includes(item.id) : ev.image_id === item.id;
    if (!hits) continue;
    if (ev.type === "label" || ev.type === "bulk") {
      state = ev.class_id === null ? "unsure" : "labeled"; cls = ev.class_id; pending = true;
    } else if (ev.type === "clear") {
      state = "unlabeled"; cls = null; pending = true;
    }
  }
  return {state: state, class_id: cls, pending: pending};
}

function remaining() {
  return S.items.filter((it) => shown(it).state === "unlabeled");
}

// ---------------------------------------------------------------------------------- actions

function targets() {
  if (S.selected.size) return S.items.filter((it) => S.selected.has(it.id));
  const it = S.items[S.focus];
  return it ? [it] : [];
}

function assign(classId) {
  const ts = targets();
  if (!ts.length) return;
  if (classId !== null && !classById(classId)) return;
  if (ts.length > 1) {
    enqueue({type: "bulk", image_ids: ts.map((t) => t.id), class_id: classId});
    S.selected.clear();
    S.anchor = null;
    say(`${classId === null ? "Skipped" : "Labeled"} ${ts.length} images` +
        (classId === null ? "." : ` as ${classById(classId).name}.`), "");
    advance(true);
  } else {
    const it = ts[0];
    enqueue({type: "label", image_id: it.id, class_id: classId, version: it.version});
    S.selected.clear();
    advance(false);
  }
}

function advance(toFirstOpen) {
  if (!S.items.length) return;
  // Next image without an answer after the focused one (wrapping); stay when all are answered.
  const n = S.items.length;
  const start = toFirstOpen ? -1 : S.focus;
  for (let step = 1; step <= n; step++) {
    const j = (start + step + n) % n;
    if (shown(S.items[j]).state === "unlabeled") { setFocus(j); return; }
  }
  if (!toFirstOpen && S.focus < n - 1) setFocus(S.focus + 1); else drawAll();
}

function setFocus(i, scroll) {
  if (!S.items.length) return;
  S.focus = Math.max(0, Math.min(S.items.length - 1, i));
  drawAll();
  followFocus(true);
  const tile = S.tiles.get(S.items[S.focus].id);
  if (tile && scroll !== false) keepInView(tile);
}

function columns() {
  const grid = document.getElementById("grid");
  const cols = getComputedStyle(grid).gridTemplateColumns.split(" ").filter(Boolean).length;
  return Math.max(1, cols);
}

// The project's one rule for unanswered images: they stay unlabeled, and submitting with some
// left needs an explicit yes (Enter again, right after the question), which the app passes on
// as allow_unanswered.
function submit(confirmed) {
  if (S.args.mode !== "batch") return;
  const left = remaining();
  if (left.length && !confirmed) {
    const ranks = left.slice(0, 8).map((it) => "#" + it.rank).join(", ");
    // Answers that come from the page (a button that fills the batch) end the question too.
    const batch = S.batchId;
    sayWhile(() => S.batchId === batch && remaining().length === left.length,
             `${left.length} of ${S.items.length} images have no answer yet ` +
             `(${ranks}${left.length > 8 ? ", …" : ""}): they would stay unlabeled. ` +
             "Press Enter again to submit anyway, or answer them first.", "warn");
    ask("submit", S.batchId);
    setFocus(S.items.indexOf(left[0]));
    return;
  }
  S.confirmSubmit = null;
  enqueue({type: "submit", round: S.batchId, allow_unanswered: left.length > 0, unanswered: left.length});
  say((left.length ? `Submitting the batch; ${left.length} unanswered image(s) stay unlabeled. ` : "Submitting the batch: ") +
      "training the model and picking the next batch…", "");
}

function undo() {
  // The app checks what it would undo against the images on screen (see grid.py), and names an
  // image by its tile ("#2"), as the person sees it.
  enqueue({type: "undo", on_screen: S.items.map((it) => it.id), titles: S.items.map((it) => it.title)});
  say("Undoing your last action…", "");
}

function say(text, kind, thumb, caption) {
  // A question whose text gives way to another message no longer holds.
  if (S.prompt) { S.confirmAccept = null; S.confirmSubmit = null; S.prompt = null; }
  S.messageHolds = null;
  S.message = text;
  S.messageKind = kind || "";
  S.thumb = thumb || null;
  S.caption = caption || "";
  drawMessage();
  // Plain news fades; a warning stays longer; an error stays until the next message.
  if (S.sayTimer) clearTimeout(S.sayTimer);
  S.sayTimer = null;
  const keep = {"": 5000, warn: 15000}[S.messageKind];
  if (text && keep) S.sayTimer = setTimeout(() => { S.message = ""; drawMessage(); }, keep);
}

// A message that holds only while its cause does (``holds()``: a key no class has, the image it
// is about still focused, images still unanswered): it goes as soon as that changes, whatever
// changed it (a key, a click, the classes or answers the app sends).
function sayWhile(holds, text, kind) {
  say(text, kind);
  S.messageHolds = holds;
}

function checkMessage() {
  if (!S.message || !S.messageHolds || S.messageHolds()) return;
  S.messageHolds = null;
  // A question goes with its text (see withdraw).
  if (S.prompt) withdraw(); else say("", "");
}

// What a message about the classes depends on: their names and keys (not their counts or colours).
function classShape(classes) {
  return JSON.stringify(classes.map((c) => [c.id, c.name, c.key || null]));
}

function sameClasses() {
  const shape = S.classShape;
  return () => S.classShape === shape;
}

function sameImage() {
  const it = S.items[S.focus];
  const id = it ? it.id : null;
  return () => { const now = S.items[S.focus]; return (now ? now.id : null) === id; };
}

// ---------------------------------------------------------------------------------- drawing

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function drawMessage() {
  const m = document.getElementById("msg");
  m.replaceChildren();
  if (S.thumb) {
    // What undo is about to take back (or took back): the image and what it had been set to.
    const fig = el("figure", "undo-pic");
    const img = document.createElement("img");
    img.src = S.thumb;
    img.alt = S.caption || "image";
    fig.append(img, el("figcaption", null, S.caption));
    m.append(fig);
  }
  m.append(el("span", "text", S.message));
  m.className = "msg" + (S.message ? " show" : "") + (S.messageKind ? " " + S.messageKind : "");
  fitHeight();
}

function drawBar() {
  const bar = document.getElementById("bar");
  bar.replaceChildren();
  // Many classes: the bar keeps to the keyed ones (in key order) so it stays one or two lines.
  const many = S.classes.length > BAR_ALL;
  const shownClasses = many ? KEYS.map(classByKey).filter(Boolean) : S.classes;
  shownClasses.forEach((c) => {
    const b = el("button", "cls");
    b.type = "button";
    b.dataset.classId = c.id;
    const k = el("span", "k", c.key || "·");
    k.style.background = classColor(c.id);
    b.append(k, document.createTextNode(c.name));
    b.title = (c.key ? `Key ${c.key}: ` : `Press / and type "${c.name}": `) +
              `label the focused (or selected) images ${c.name}`;
    b.addEventListener("click", () => assign(c.id));
    bar.append(b);
  });
  if (many) {
    const more = el("button", "act more", `Find one of ${S.classes.length.toLocaleString()} classes (/)`);
    more.type = "button";
    more.id = "more-classes";
    more.addEventListener("click", openFinder);
    bar.append(more);
  }
  const skip = el("button", "act", "Skip (x)");
  skip.type = "button";
  skip.title = "Not sure: skip the focused (or selected) images; they are not asked again";
  skip.addEventListener("click", () => assign(null));
  const und = el("button", "act", "Undo (u)");
  und.type = "button";
  und.addEventListener("click", undo);
  bar.append(skip, und);
  if (S.args.mode === "batch") {
    const sub = el("button", "act primary", "Submit batch (Enter)");
    sub.type = "button";
    sub.id = "submit";
    sub.addEventListener("click", () => submit(S.confirmSubmit === S.batchId));
    bar.append(sub);
  }
  const keys = el("button", "act keys", "Keys (?)");
  keys.type = "button";
  keys.id = "keys";
  keys.title = "Show or hide the keyboard keys";
  keys.setAttribute("aria-expanded", String(helpOpen()));
  keys.addEventListener("click", toggleHelp);
  bar.append(keys);
}

// The list of keys is folded away (it costs a line above the pictures); "?" or the button opens
// it, and the choice is remembered in this browser.
function helpOpen() {
  try { return localStorage.getItem("ralif-grid-help") === "open"; } catch (e) { return false; }
}

function toggleHelp() {
  const open = !helpOpen();
  try { localStorage.setItem("ralif-grid-help", open ? "open" : "closed"); } catch (e) { /* not kept */ }
  const b = document.getElementById("keys");
  if (b) b.setAttribute("aria-expanded", String(open));
  drawHelp();
  fitHeight();
}

function drawStatus() {
  const st = document.getElementById("status");
  st.replaceChildren();
  if (S.args.mode === "batch") {
    const done = S.items.length - remaining().length;
    const s = el("span");
    s.append(el("b", null, `${done} of ${S.items.length}`), document.createTextNode(" answered"));
    st.append(s);
    const sub = document.getElementById("submit");
    if (sub) sub.setAttribute("aria-disabled", done < S.items.length ? "true" : "false");
  }
  if (S.selected.size) st.append(el("span", null, `${S.selected.size} selected: a class key labels them all (Esc clears)`));
  if (S.outbox.length) {
    const waited = Date.now() - (S.outbox[0].t || Date.now());
    // Once the app has said why a write failed (a full disk, a read-only folder) the person can
    // act on it; blaming a slow app would send them waiting for nothing.
    const problem = S.args.save_problem;
    if (problem) st.append(el("span", "offline", unsavedText(problem)));
    else st.append(el("span", waited > RESEND_MS * 3 ? "offline" : "saving",
                      waited > RESEND_MS * 3 ? `${unsavedCount()} not saved yet: waiting for the app…` : "saving…"));
  } else if (S.items.length) {
    st.append(el("span", "saved", "✓ every answer saved"));
  }
}

function unsavedCount() {
  const n = S.outbox.length;
  const answers = S.outbox.every((ev) => ev.type === "label" || ev.type === "clear" || ev.type === "bulk");
  return `${n} ${answers ? "answer" : "action"}${n === 1 ? "" : "s"}`;
}

function unsavedText(problem) {
  return `${unsavedCount()} not saved yet: ${problem}; ` +
         `${S.outbox.length === 1 ? "it is" : "they are"} kept in this page and sent again automatically`;
}

function drawHelp() {
  const h = document.getElementById("help");
  const parts = [["1–9, 0", "label"], ["/ or c", S.classes.length > KEYS.length ? "find any class" : "find a class"],
                 ["a", "accept suggestion"], ["← → ↑ ↓", "move"], ["x / space", "skip"], ["u / ⌫", "undo"]];
  if (S.args.mode === "batch") parts.push(["Enter", "submit"]);
  parts.push(["shift+arrows / shift+click", "select a range"], ["Esc", "clear selection"]);
  h.replaceChildren();
  h.className = "help" + (helpOpen() ? " show" : "");
  parts.push(["?", "hide these keys"]);
  parts.forEach(([k, what], i) => {
    if (i) h.append(document.createTextNode(" · "));
    h.append(el("kbd", null, k), document.createTextNode(" " + what));
  });
  if (S.args.mode !== "batch") h.append(document.createTextNode(" (click a picture first)"));
}

function drawAll() {
  if (!S.args) return;
  drawGrid();
  drawStatus();
  followFocus(false);
  checkMessage();
  fitHeight();
}

function fitHeight() {
  // The content's own height: the document's scroll height never drops below the frame's height,
  // so measuring it would let the frame grow with every render and never shrink.
  const root = document.getElementById("root");
  const h = Math.ceil(root.getBoundingClientRect().height) + 12;
  if (Math.abs(h - S.lastHeight) > 1) {
    S.lastHeight = h;
    post("streamlit:setFrameHeight", {height: h});
  }
  // view.js loads after this file; the first resize can come before it has.
  if (typeof queueStick === "function") queueStick();
}

new ResizeObserver(() => fitHeight()).observe(document.getElementById("root"));

// ---------------------------------------------------------------------------------- render

function onRender(args) {
  const first = S.args === null;
  const resized = !first && S.args.image_px !== args.image_px;
  S.args = args;
  document.documentElement.style.setProperty("--img", (args.image_px || 160) + "px");
  document.documentElement.style.setProperty("--tile-w", ((args.image_px || 160) + 16) + "px");
  S.classes = args.classes || [];
  S.byClass = new Map(S.classes.map((c) => [c.id, c]));
  const shape = classShape(S.classes);
  const reclassed = !first && shape !== S.classShape;
  S.classShape = shape;
  const oldFocusId = S.items[S.focus] ? S.items[S.focus].id : null;
  S.items = args.items || [];
  const acked = new Set(args.acked || []);
  const before = S.outbox.length;
  S.outbox = S.outbox.filter((ev) => !acked.has(ev.id));
  if (S.outbox.length !== before) persist();
  if (args.store_key && S.storeKey !== args.store_key) {
    S.storeKey = args.store_key;
    restore();
  }
  const ids = new Set(S.items.map((it) => it.id));
  for (const id of Array.from(S.selected)) if (!ids.has(id)) S.selected.delete(id);
  if (args.batch_id !== S.batchId) {
    // A new batch: start at its first image without an answer. Answers restored from the outbox
    // above count: the app has not seen them yet, and a key typed on one would overwrite it.
    S.batchId = args.batch_id;
    S.selected.clear();
    S.anchor = null;
    S.confirmSubmit = null;
    const firstOpen = S.items.findIndex((it) => shown(it).state === "unlabeled");
    S.focus = Math.max(0, firstOpen);
    if (!first) say("", "");
  } else {
    const k = S.items.findIndex((it) => it.id === oldFocusId);
    S.focus = k >= 0 ? k : Math.min(S.focus, Math.max(0, S.items.length - 1));
  }
  const hint = args.focus_hint;
  if (hint && hint.event && !S.appliedHints.has(hint.event)) {
    S.appliedHints.add(hint.event);
    const k = S.items.findIndex((it) => it.id === hint.image_id);
    if (k >= 0) S.focus = k;
  }
  if (args.notice && args.notice.id && args.notice.id !== S.noticeId) {
    S.noticeId = args.notice.id;
    say(args.notice.text, args.notice.kind, args.notice.thumb, args.notice.caption);
  }
  document.body.classList.toggle("browse", args.mode !== "batch");
  if (args.capture_page_keys && !S.pageKeys) S.pageKeys = attachParent();
  if (resized && args.capture_page_keys) sliderDone();
  if (first) {
    drawBar();
    drawHelp();
  } else if (JSON.stringify(S.classes) !== S.classKey) {
    drawBar();
  }
  S.classKey = JSON.stringify(S.classes);
  if (!first) drawHelp();
  // An open finder lists the classes there are now.
  if (reclassed && S.finder.open) drawFinder();
  drawAll();
  if (first && S.pageKeys) claimKeys();
  watchScroll();
  drawMessage();
  if (S.outbox.length && Date.now() - S.lastSent > RESEND_MS) send();
  else scheduleResend();
}

function restore() {
  // Actions of this tab that the app had not confirmed when the page was reloaded or left: sent
  // again, marked as replays so that they never overwrite a label someone set since.
  try {
    const saved = JSON.parse(sessionStorage.getItem(S.storeKey) || "[]");
    const have = new Set(S.outbox.map((e) => e.id));
    const old = saved.filter((e) => !have.has(e.id) && e.type !== "submit" && e.type !== "undo");
    if (old.length) {
      old.forEach((e) => { e.replay = true; });
      S.outbox = old.concat(S.outbox);
      persist();
      send();
    }
  } catch (e) { /* unreadable storage: nothing to restore */ }
}

window.addEventListener("message", (e) => {
  const d = e.data;
  if (d && d.type === "streamlit:render") onRender(d.args || {});
});

// Ready only once every script of the page has run: a render that came between this file and
// keys.js would find no key handling, and the page's keys would never be attached.
if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", () => post("streamlit:componentReady", {apiVersion: 1}));
} else {
  post("streamlit:componentReady", {apiVersion: 1});
}

"use strict";
// Keys of the grid and of the page around it, and the class finder (see grid.js for the state).

// ---------------------------------------------------------------------------------- keys

// Classes past the tenth have no key of their own: "/" opens a finder where typing part of a name
// (or a class's number) narrows the list and Enter gives the first match.
function finderMatches() {
  const q = S.finder.text.trim().toLowerCase();
  const all = S.classes.map((c, i) => ({c: c, n: i + 1}));
  if (!q) return all;
  const num = /^[0-9]+$/.test(q) ? parseInt(q, 10) : null;
  const starts = [], inside = [];
  all.forEach((m) => {
    const name = m.c.name.toLowerCase();
    if (num !== null && String(m.n).startsWith(q)) (m.n === num ? starts.unshift(m) : starts.push(m));
    else if (name.startsWith(q)) starts.push(m);
    else if (name.includes(q)) inside.push(m);
  });
  return starts.concat(inside);
}

function openFinder() {
  S.finder = {open: true, text: "", index: 0};
  drawFinder();
}

function closeFinder() {
  S.finder.open = false;
  drawFinder();
}

function finderKey(key) {
  const matches = finderMatches();
  if (key === "Escape") closeFinder();
  else if (key === "Enter") {
    const m = matches[Math.min(S.finder.index, matches.length - 1)];
    if (m) { closeFinder(); assign(m.c.id); }
    else {
      const text = S.finder.text, classes = sameClasses();
      sayWhile(() => S.finder.open && S.finder.text === text && classes(),
               "No class matches; Backspace to edit, Esc to close.", "warn");
    }
  }
  else if (key === "ArrowDown" || key === "ArrowRight" || key === "Tab") {
    S.finder.index = Math.min(S.finder.index + 1, Math.max(0, matches.length - 1)); drawFinder();
  }
  else if (key === "ArrowUp" || key === "ArrowLeft") { S.finder.index = Math.max(0, S.finder.index - 1); drawFinder(); }
  else if (key === "Backspace") { S.finder.text = S.finder.text.slice(0, -1); S.finder.index = 0; drawFinder(); }
  else if (key.length === 1) { S.finder.text += key; S.finder.index = 0; drawFinder(); }
  else return false;
  return true;
}

function drawFinder() {
  const f = document.getElementById("finder");
  f.className = "finder" + (S.finder.open ? " show" : "");
  f.replaceChildren();
  if (!S.finder.open) { checkMessage(); fitHeight(); return; }
  const q = el("div", "q");
  q.append(document.createTextNode("Class: " + S.finder.text), el("span", "caret"));
  const hint = el("span", "none", "  type a name or number · ↑↓ choose · Enter label · Esc close");
  q.append(hint);
  const list = el("ol");
  const matches = finderMatches();
  matches.slice(0, 24).forEach((m, i) => {
    const li = el("li", i === S.finder.index ? "on" : "", `${m.n} ${m.c.name}`);
    li.dataset.classId = m.c.id;
    li.addEventListener("click", () => { closeFinder(); assign(m.c.id); });
    list.append(li);
  });
  if (!matches.length) list.append(el("li", "none", "no class matches"));
  else if (matches.length > 24) list.append(el("li", "none", `… ${matches.length - 24} more: type more`));
  f.append(q, list);
  checkMessage();
  fitHeight();
}

function acceptGuess(confirming) {
  // `a` writes the model's guess as the answer, under the project's rule (args.accept: "allow",
  // "confirm": a second `a` on the same image, "off": refused), and never for an audit image.
  const it = S.items[S.focus];
  const guess = it ? it.predicted_class_id : null;
  const known = guess !== null && guess !== undefined;
  const gone = it && (it.guess_gone || (known && !classById(guess)));
  const rule = (S.args && S.args.accept) || {mode: "allow", reason: ""};
  // Each warning is about the focused image (or the selection): it goes once that changes.
  const here = sameImage();
  if (S.selected.size) {
    sayWhile(() => S.selected.size > 0,
             "a accepts the suggestion of the focused image only; press a class key to label the selection.", "warn");
  } else if (!it) {
    return;
  } else if (it.audit) {
    sayWhile(here, "This image was drawn at random to measure the model, so its answer has to be yours: " +
                   "press a class key.", "warn");
  } else if (gone) {
    const classes = sameClasses();
    sayWhile(() => here() && classes(),
             `The model's guess for this image (${it.guess_gone || it.predicted || "a class"}) is a class that ` +
             "no longer exists, so there is no suggestion to accept: press a class key instead.", "warn");
  } else if (!known) {
    sayWhile(() => here() && !hasGuess(S.items[S.focus]),
             "No suggestion for this image yet (no model): press a class key.", "warn");
  } else if (rule.mode === "off") {
    sayWhile(() => ((S.args && S.args.accept) || {}).mode === "off",
             `Accepting the model's guess is off for now: ${rule.reason}. Press a class key.`, "warn");
  } else if (rule.mode === "confirm" && confirming !== it.id) {
    const why = rule.reason.charAt(0).toUpperCase() + rule.reason.slice(1);
    // The question holds for the next key only, and only while its image and class are there.
    sayWhile(() => here() && !!classById(guess),
             `Accept "${classById(guess).name}" for this image? ${why}. ` +
             "Press a again to accept, or a class key.", "warn");
    ask("accept", it.id);
  } else {
    assign(guess);
  }
}

function hasGuess(it) {
  return !!it && it.predicted_class_id !== null && it.predicted_class_id !== undefined;
}

// Keys that write an answer for the focused (or selected) images.
const ANSWERS = ["x", "X", " ", "a", "A"];
// Keys of the same burst as the one that found the focused image out of sight were typed for
// something else (an image number into the page): they are held back too, however fast the
// page scrolls the image into view, until the typing pauses this long.
const HOLD_MS = 1000;

function writesAnswer(key) {
  if (S.finder.open) return key === "Enter";
  return KEYS.includes(key) || ANSWERS.includes(key);
}

// An answer typed while the focus is elsewhere on the page must never go to an image the person
// cannot see: instead the image comes into view with the keys, and the next key answers it. Keys
// typed in the grid itself are the labeling: a fast labeler's next key often arrives while the
// next image is still scrolling in, and must answer it (unless a hold from the page is running).
function heldBack(e, fromPage) {
  if (!writesAnswer(e.key)) return false;
  const it = S.items[S.focus];
  const tile = it ? S.tiles.get(it.id) : null;
  const now = Date.now();
  const held = now < S.heldUntil;
  if (!fromPage && !held) return false;
  if (!tile || (!held && inSight(tile))) return false;
  e.preventDefault();
  e.stopPropagation();
  S.heldUntil = now + HOLD_MS;
  if (held && inSight(tile)) return true;
  withdraw();
  takeKeys();
  sayWhile(sameImage(), `Keys go to ${S.args.mode === "batch" ? "the batch" : "these images"}: ${it.title} is ` +
                        "focused. Press the key again to answer it.", "warn");
  keepInView(tile);
  return true;
}

function onKey(e, fromPage = false) {
  if (!S.args || e.defaultPrevented) return false;
  if (e.ctrlKey || e.metaKey || e.altKey) return false;
  if (heldBack(e, fromPage)) return true;
  const key = e.key;
  if (S.finder.open) {
    const used = finderKey(key);
    if (used) { e.preventDefault(); e.stopPropagation(); }
    return used;
  }
  let handled = true;
  const ki = KEYS.indexOf(key);
  const keyed = ki >= 0 ? classByKey(key) : null;
  // A held key repeats: moving may, answering must not run on from image to image.
  if (e.repeat && (ki >= 0 || "xXuU aAcC/".includes(key) || key === "Enter" || key === "Backspace")) {
    e.preventDefault();
    return true;
  }
  // Shift on its way to "?" is not an answer to a question.
  if (MODIFIERS.includes(key)) return false;
  // A question (accept this guess? submit anyway?) holds for the very next key only.
  const confirming = S.confirmAccept;
  const submitting = S.confirmSubmit === S.batchId;
  withdraw();
  if (keyed) assign(keyed.id);
  else if (ki >= 0) sayWhile(sameClasses(), `No class has the key ${key}; press / to find a class.`, "warn");
  else if (key === "x" || key === "X" || key === " ") assign(null);
  else if (key === "a" || key === "A") acceptGuess(confirming);
  else if (key === "u" || key === "U" || key === "Backspace") undo();
  else if (key === "Enter") submit(submitting);
  else if (key in STEPS && e.shiftKey) { if (!e.repeat) extendSelection(S.focus + STEPS[key]()); }
  else if (key in STEPS) setFocus(S.focus + STEPS[key]());
  else if (key === "Home") setFocus(0);
  else if (key === "End") setFocus(S.items.length - 1);
  else if (key === "Escape") { S.selected.clear(); S.anchor = null; say("", ""); drawAll(); }
  else if (key === "/" || key === "c" || key === "C") openFinder();
  else if (key === "?") toggleHelp();
  else handled = false;
  if (handled) { e.preventDefault(); e.stopPropagation(); }
  return handled;
}

const MODIFIERS = ["Shift", "Control", "Alt", "Meta", "CapsLock", "AltGraph"];
const STEPS = {ArrowRight: () => 1, ArrowLeft: () => -1, ArrowDown: () => columns(), ArrowUp: () => -columns()};

// Shift+arrow selects the images from the anchor to the new focus, as shift+click does. One step per
// key press (no shift+Home/End, a held key does not repeat it, and a range restarts at the focus when
// the focus has left it): every image it selects has come into view on the way, so a class key never
// labels a selection with images nobody has seen.
function extendSelection(to) {
  if (!S.items.length) return;
  const target = Math.max(0, Math.min(S.items.length - 1, to));
  if (S.anchor === null || !S.selected.has(S.items[S.focus].id)) S.anchor = S.items[S.focus].id;
  S.selected.clear();
  addRange(target);
  setFocus(target);
}

// The questions put by `a` and by Enter with images left. Their text goes with them, so it never
// stays on screen, stale, once the question no longer holds.
function ask(what, about) {
  if (what === "accept") S.confirmAccept = about; else S.confirmSubmit = about;
  S.prompt = what;
  // It stays on screen for as long as it holds: until the next key.
  if (S.sayTimer) clearTimeout(S.sayTimer);
  S.sayTimer = null;
}

function withdraw() {
  S.confirmAccept = null;
  S.confirmSubmit = null;
  if (S.prompt) say("", "");
}

// A control of the grid that has the focus (a bar button reached with Tab, a tile's box) keeps
// Enter and Space: they press it, and must never skip an image or submit the batch.
const OWN_CONTROLS = "button,input,select,textarea,a[href],[role=button]";

function frameKey(e) {
  const control = e.target && e.target.closest ? e.target.closest(OWN_CONTROLS) : null;
  if (control && !S.finder.open && (e.key === "Enter" || e.key === " ")) {
    // Pressing the Submit button is the question's answer; any other control withdraws it.
    if (control.id !== "submit") withdraw();
    return;
  }
  onKey(e);
}

document.addEventListener("keydown", frameKey);

// A bar button clicked with the mouse gives the keys straight back to the grid: Enter after a
// click on a class submits, as it would after a key, instead of pressing that class again.
document.addEventListener("click", (e) => {
  const control = e.detail > 0 && e.target && e.target.closest ? e.target.closest("button,input") : null;
  if (control) control.blur();
});

// Inputs that take no text (Streamlit's sliders are inputs of type range) are controls, not fields.
const NOT_TEXT = ["range", "checkbox", "radio", "button", "submit", "reset", "color", "file", "image"];

function typing(target) {
  if (!target) return false;
  const tag = (target.tagName || "").toLowerCase();
  if (tag === "input") return !NOT_TEXT.includes((target.type || "").toLowerCase());
  return tag === "textarea" || target.isContentEditable ||
         (target.getAttribute && target.getAttribute("role") === "combobox");
}

// The main grid also listens on the page around it, so keys work without clicking into the frame
// first; keys typed into a text field of the page are left alone.
// A control of the page that has the focus (a button just clicked, a link, a tab, a slider) keeps
// its keys: Space or Enter on it must press it, not skip an image or submit the batch.
const CONTROLS = "button,a[href],summary,select,input,[role=button],[role=tab],[role=checkbox],[role=radio]," +
                 "[role=slider],[role=switch],[role=menuitem],[role=option],[role=listbox],[role=link]";
// Of those, the ones that do nothing with a key but Enter and Space: a sidebar link or a button
// keeps the focus after a click, and the grid's other keys must still work then. Sliders, tabs,
// radios and lists use the arrows and letters themselves (Esc gives the keys back from them).
const PRESSED_ONLY = "button,a[href],summary,[role=button],[role=link],[role=checkbox],[role=switch]," +
                     "input[type=checkbox],input[type=button],input[type=submit],input[type=reset]";
// A button can be a tab or a menu entry (Streamlit's tabs are buttons): the arrows are its own.
const USES_ARROWS = "[role=tab],[role=radio],[role=slider],[role=menuitem],[role=option],[role=listbox]," +
                    "[role=tablist],[role=radiogroup],[role=menu]";

function onControl(target) {
  if (!target || !target.closest || target === window.frameElement) return null;
  return target.closest(CONTROLS);
}

function parentKey(e) {
  const frame = window.frameElement;
  if (!frame || !frame.isConnected) return;
  const role = e.target && e.target.closest ? e.target.closest("[role=dialog],[data-baseweb=popover]") : null;
  if (role) return;
  const field = typing(e.target);
  const control = field ? null : onControl(e.target);
  const pressed = e.key === "Enter" || e.key === " ";
  // A link or button keeps the focus once pressed (a sidebar link, the expander's header): Esc
  // gives the keys back from it too, so that Enter submits again instead of pressing it.
  if (control && e.key === "Escape" && control.matches(PRESSED_ONLY) && !control.closest(USES_ARROWS) &&
      !e.ctrlKey && !e.metaKey && !e.altKey) {
    takeKeys();
    onKey(e, true);
    return;
  }
  if (field || (control && (pressed || !control.matches(PRESSED_ONLY) || control.closest(USES_ARROWS)))) {
    // Esc lets go of a control of the page (the tile size slider, a tab): the grid's keys again.
    if (control && e.key === "Escape" && !e.ctrlKey && !e.metaKey && !e.altKey) {
      e.preventDefault();
      takeKeys();
    } else if (!MODIFIERS.includes(e.key)) {
      withdraw();
    }
    return;
  }
  onKey(e, true);
}

// The grid's keys back from a control of the page that holds them: that control loses the focus
// and the grid's frame gets it (a key then reaches the grid whichever listener hears it first).
function takeKeys() {
  try {
    const active = window.parent.document.activeElement;
    if (active && active !== window.frameElement && active.blur) active.blur();
  } catch (e) { /* another origin: nothing of the page to release */ }
  const it = S.items[S.focus];
  const tile = it ? S.tiles.get(it.id) : null;
  if (tile) tile.focus({preventScroll: true}); else window.focus();
}

// Reached through the sidebar, the page leaves the focus on the link that was pressed (or on
// nothing): Enter would press that link again instead of submitting, so the new grid takes it.
const NAV = "[data-testid=stSidebarNav],[data-testid=stSidebarNavLink],[data-testid=stSidebarNavItems]";

function claimKeys() {
  try {
    const pd = window.parent.document;
    const active = pd.activeElement;
    if (!active || active === pd.body || active === pd.documentElement || (active.closest && active.closest(NAV))) {
      takeKeys();
    }
  } catch (e) { /* another origin: keys work once the grid has focus */ }
}

// A slider of the page changed the grid (its tile size) and still holds the keys: the change is
// done, so the grid takes them back, as after Esc.
function sliderDone() {
  try {
    const active = window.parent.document.activeElement;
    if (active && active.matches && active.matches("input[type=range],[role=slider]")) takeKeys();
  } catch (e) { /* another origin */ }
}

// Each main grid hears the page's keys through a listener of its own on the page. The browser
// drops a listener once the frame that added it is gone (even one built from the page's own
// Function), so no grid may rely on another's: the newest grid still on the page takes a key,
// and a listener of a removed frame is taken off the page whenever one is seen.
function liveGrids(reg) {
  const pd = window.parent.document;
  reg.grids = reg.grids.filter((g) => {
    const live = g.frame && g.frame.isConnected && g.listener;
    if (!live && g.listener) pd.removeEventListener("keydown", g.listener, true);
    return live;
  });
  return reg.grids;
}

function attachParent() {
  try {
    const pw = window.parent;
    if (pw === window) return false;
    let reg = pw.__ralifGridKeys;
    if (!reg || !Array.isArray(reg.grids)) reg = pw.__ralifGridKeys = {grids: []};
    if (reg.listener) {
      // One page listener shared by every grid (earlier versions of this file): it died with its frame.
      pw.document.removeEventListener("keydown", reg.listener, true);
      delete reg.listener;
    }
    detachParent();
    const frame = window.frameElement;
    const me = {frame: frame, listener: null};
    me.listener = (e) => {
      const live = liveGrids(reg);
      if (live[live.length - 1] === me) parentKey(e);
    };
    liveGrids(reg).push(me);
    pw.document.addEventListener("keydown", me.listener, true);
    return true;
  } catch (e) { return false; /* another origin: keys work once the grid has focus */ }
}

function detachParent() {
  S.pageKeys = false;
  try {
    const reg = window.parent.__ralifGridKeys;
    if (!reg || !Array.isArray(reg.grids)) return;
    const frame = window.frameElement;
    reg.grids.filter((g) => g.frame === frame).forEach((g) => {
      if (g.listener) window.parent.document.removeEventListener("keydown", g.listener, true);
    });
    reg.grids = reg.grids.filter((g) => g.frame !== frame);
  } catch (e) { /* nothing attached */ }
}

window.addEventListener("pagehide", detachParent);
// Back from the browser's page cache: the grid takes the page's keys again.
window.addEventListener("pageshow", (e) => {
  if (e.persisted && S.args && S.args.capture_page_keys && !S.pageKeys) S.pageKeys = attachParent();
});
window.addEventListener("focus", () => document.body.classList.add("active"));
window.addEventListener("blur", () => document.body.classList.remove("active"));


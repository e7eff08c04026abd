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
    if (m) { closeFinder(); assign(m.c.id); } else say("No class matches; Backspace to edit, Esc to close.", "warn");
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
  if (!S.finder.open) { fitHeight(); return; }
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
  if (S.selected.size) {
    say("a accepts the suggestion of the focused image only; press a class key to label the selection.", "warn");
  } else if (!it) {
    return;
  } else if (it.audit) {
    say("This image was drawn at random to measure the model, so its answer has to be yours: " +
        "press a class key.", "warn");
  } else if (gone) {
    say(`The model's guess for this image (${it.guess_gone || it.predicted || "a class"}) is a class that ` +
        "no longer exists, so there is no suggestion to accept: press a class key instead.", "warn");
  } else if (!known) {
    say("No suggestion for this image yet (no model): press a class key.", "warn");
  } else if (rule.mode === "off") {
    say(`Accepting the model's guess is off for now: ${rule.reason}. Press a class key.`, "warn");
  } else if (rule.mode === "confirm" && confirming !== it.id) {
    S.confirmAccept = it.id;
    const why = rule.reason.charAt(0).toUpperCase() + rule.reason.slice(1);
    say(`Accept "${classById(guess).name}" for this image? ${why}. ` +
        "Press a again to accept, or a class key.", "warn");
  } else {
    assign(guess);
  }
}

function onKey(e) {
  if (!S.args || e.defaultPrevented) return false;
  if (e.ctrlKey || e.metaKey || e.altKey) return false;
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
  // A confirmation asked by `a` holds for the very next key only.
  const confirming = S.confirmAccept;
  S.confirmAccept = null;
  if (keyed) assign(keyed.id);
  else if (ki >= 0) say(`No class has the key ${key}; press / to find a class.`, "warn");
  else if (key === "x" || key === "X" || key === " ") assign(null);
  else if (key === "a" || key === "A") acceptGuess(confirming);
  else if (key === "u" || key === "U" || key === "Backspace") undo();
  else if (key === "Enter") submit();
  else if (key === "ArrowRight") setFocus(S.focus + 1);
  else if (key === "ArrowLeft") setFocus(S.focus - 1);
  else if (key === "ArrowDown") setFocus(S.focus + columns());
  else if (key === "ArrowUp") setFocus(S.focus - columns());
  else if (key === "Home") setFocus(0);
  else if (key === "End") setFocus(S.items.length - 1);
  else if (key === "Escape") { S.selected.clear(); S.anchor = null; say("", ""); drawAll(); }
  else if (key === "/" || key === "c" || key === "C") openFinder();
  else if (key === "?") toggleHelp();
  else handled = false;
  if (handled) { e.preventDefault(); e.stopPropagation(); }
  return handled;
}

document.addEventListener("keydown", onKey);

function typing(target) {
  if (!target) return false;
  const tag = (target.tagName || "").toLowerCase();
  return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable ||
         (target.getAttribute && target.getAttribute("role") === "combobox");
}

// The main grid also listens on the page around it, so keys work without clicking into the frame
// first; keys typed into a text field of the page are left alone.
// A control of the page that has the focus (a button just clicked, a link, a tab, a slider) keeps
// its keys: Space or Enter on it must press it, not skip an image or submit the batch.
const CONTROLS = "button,a[href],summary,select,[role=button],[role=tab],[role=checkbox],[role=radio]," +
                 "[role=slider],[role=switch],[role=menuitem],[role=option],[role=listbox]";

function onControl(target) {
  return !!(target && target.closest && target !== window.frameElement && target.closest(CONTROLS));
}

function parentKey(e) {
  const frame = window.frameElement;
  if (!frame || !frame.isConnected) return;
  if (typing(e.target) || onControl(e.target)) return;
  const role = e.target && e.target.closest ? e.target.closest("[role=dialog],[data-baseweb=popover]") : null;
  if (role) return;
  onKey(e);
}

// One listener on the page for every main grid it has shown, made in the page's own realm so that
// it outlives any frame: a key goes to the newest grid still on the page. Streamlit may replace a
// grid's frame; a frame that loaded late and was then removed must not take the keys with it.
function dispatchTo(reg, e) {
  const live = reg.grids.filter((g) => g.frame && g.frame.isConnected);
  reg.grids = live;
  if (live.length) live[live.length - 1].key(e);
}

function pageListener(pw, reg) {
  try {
    // dispatchTo itself, rebuilt in the page's realm.
    return new pw.Function("reg", "const dispatchTo = " + dispatchTo.toString() + ";" +
                           " return function (e) { dispatchTo(reg, e); };")(reg);
  } catch (e) {
    // A page whose policy forbids building functions from text: the same listener from this frame.
    return (ev) => dispatchTo(reg, ev);
  }
}

function attachParent() {
  try {
    const pw = window.parent;
    if (pw === window) return false;
    let reg = pw.__ralifGridKeys;
    if (!reg || !Array.isArray(reg.grids)) {
      reg = {grids: []};
      reg.listener = pageListener(pw, reg);
      pw.document.addEventListener("keydown", reg.listener, true);
      pw.__ralifGridKeys = reg;
    }
    const frame = window.frameElement;
    reg.grids = reg.grids.filter((g) => g.frame !== frame && g.frame && g.frame.isConnected);
    reg.grids.push({frame: frame, key: parentKey});
    return true;
  } catch (e) { return false; /* another origin: keys work once the grid has focus */ }
}

function detachParent() {
  S.pageKeys = false;
  try {
    const reg = window.parent.__ralifGridKeys;
    if (reg && Array.isArray(reg.grids)) reg.grids = reg.grids.filter((g) => g.key !== parentKey);
  } catch (e) { /* nothing attached */ }
}

window.addEventListener("pagehide", detachParent);
// Back from the browser's page cache: the grid takes the page's keys again.
window.addEventListener("pageshow", (e) => {
  if (e.persisted && S.args && S.args.capture_page_keys && !S.pageKeys) S.pageKeys = attachParent();
});
window.addEventListener("focus", () => document.body.classList.add("active"));
window.addEventListener("blur", () => document.body.classList.remove("active"));


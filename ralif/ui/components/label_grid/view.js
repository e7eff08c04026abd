"use strict";
// Where the grid sits in the page. Streamlit scrolls its main section, not the window, and this
// frame is as tall as its content: keeping the focused tile in view and the class bar on screen
// both work on that scrolling element of the page around the frame.

const VIEW = {scroller: null, onScroll: null, raf: 0};
const MARGIN = 12;

function pageScroller() {
  try {
    const frame = window.frameElement;
    if (!frame || !frame.isConnected) return null;
    for (let e = frame.parentElement; e; e = e.parentElement) {
      const s = window.parent.getComputedStyle(e);
      if ((s.overflowY === "auto" || s.overflowY === "scroll") && e.scrollHeight > e.clientHeight + 1) return e;
    }
    return window.parent.document.scrollingElement;
  } catch (e) { return null; }   // another origin: the frame cannot see the page
}

// The part of the scrolling element a person sees, in the page's coordinates: its box, less
// Streamlit's header bar where that bar lies over its top.
function visibleBand(sc) {
  const pw = window.parent;
  const r = sc === pw.document.scrollingElement ? {top: 0, bottom: pw.innerHeight} : sc.getBoundingClientRect();
  let top = Math.max(0, r.top);
  const bottom = Math.min(pw.innerHeight, r.bottom);
  const header = pw.document.querySelector("[data-testid=stHeader]");
  if (header) {
    const h = header.getBoundingClientRect();
    if (h.height && h.top <= top + 1 && h.bottom > top) top = h.bottom;
  }
  return {top: top, bottom: bottom};
}

function headHeight() {
  const head = document.getElementById("head");
  return head && S.args && S.args.sticky ? head.offsetHeight : 0;
}

// Scrolls the page just enough to show the whole tile below the (stuck) class bar: nothing moves
// while the tile is already in view, so moving along a row never shakes the page.
function keepInView(tile) {
  const sc = pageScroller();
  if (!sc) { tile.scrollIntoView({block: "nearest"}); return; }
  const f = window.frameElement.getBoundingClientRect();
  const r = tile.getBoundingClientRect();
  const band = visibleBand(sc);
  const top = f.top + r.top, bottom = f.top + r.bottom;
  const viewTop = band.top + headHeight(), viewBottom = band.bottom;
  let delta = 0;
  if (top < viewTop + MARGIN) delta = top - viewTop - MARGIN;
  else if (bottom > viewBottom - MARGIN) delta = Math.min(bottom - viewBottom + MARGIN, top - viewTop - MARGIN);
  if (Math.abs(delta) < 1) return;
  const still = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  sc.scrollBy({top: delta, behavior: still ? "auto" : "smooth"});
}

// Whether a person can see enough of the tile to know what a key would answer: a key from the
// page can come while the grid is scrolled far out of sight (focus on a control lower down).
// Lenient on purpose: a tile still sliding in after a move counts once a third of it shows.
function inSight(tile) {
  const r = tile.getBoundingClientRect();
  if (!r.height || !r.width) return false;
  let top = Math.max(r.top, 0), bottom = Math.min(r.bottom, window.innerHeight);
  try {
    const frame = window.frameElement;
    if (frame && frame.isConnected) {
      const f = frame.getBoundingClientRect();
      const sc = pageScroller();
      const band = sc ? visibleBand(sc) : {top: 0, bottom: window.parent.innerHeight};
      const off = f.top + frame.clientTop;
      top = Math.max(off + top, band.top + headHeight());
      bottom = Math.min(off + bottom, band.bottom);
      if (f.right <= 0 || f.left >= window.parent.innerWidth) return false;
    }
  } catch (e) { /* another origin: the frame's own view is all there is to go by */ }
  return bottom - top >= Math.min(r.height / 3, 40);
}

// position: sticky cannot work inside a frame that never scrolls itself, so the class bar is
// moved down by hand while the top of the grid is scrolled out of sight.
function stickHead() {
  VIEW.raf = 0;
  const head = document.getElementById("head");
  if (!head) return;
  const sc = S.args && S.args.sticky ? pageScroller() : null;
  let shift = 0;
  if (sc) {
    const f = window.frameElement.getBoundingClientRect();
    const grid = document.getElementById("grid");
    const room = grid.offsetTop + grid.offsetHeight - head.offsetHeight - head.offsetTop;
    shift = Math.max(0, Math.min(visibleBand(sc).top - f.top - head.offsetTop, room));
  }
  head.style.transform = shift > 0 ? `translateY(${Math.round(shift)}px)` : "";
  head.classList.toggle("stuck", shift > 0);
}

function queueStick() {
  if (!VIEW.raf) VIEW.raf = requestAnimationFrame(stickHead);
}

function watchScroll() {
  const sc = S.args && S.args.sticky ? pageScroller() : null;
  if (sc === VIEW.scroller) { queueStick(); return; }
  unwatchScroll();
  if (!sc) return;
  VIEW.scroller = sc;
  VIEW.onScroll = () => {
    if (!window.frameElement || !window.frameElement.isConnected) { unwatchScroll(); return; }
    queueStick();
  };
  const target = sc === window.parent.document.scrollingElement ? window.parent : sc;
  target.addEventListener("scroll", VIEW.onScroll, {passive: true});
  window.parent.addEventListener("resize", VIEW.onScroll, {passive: true});
  queueStick();
}

function unwatchScroll() {
  try {
    if (VIEW.scroller && VIEW.onScroll) {
      const target = VIEW.scroller === window.parent.document.scrollingElement ? window.parent : VIEW.scroller;
      target.removeEventListener("scroll", VIEW.onScroll);
      window.parent.removeEventListener("resize", VIEW.onScroll);
    }
  } catch (e) { /* the page is gone already */ }
  VIEW.scroller = null;
  VIEW.onScroll = null;
}

window.addEventListener("pagehide", unwatchScroll);

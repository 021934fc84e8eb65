// nerfexport view: an orbit camera over one or more bundles, frames from /api/frame.
// While the camera moves each bundle is asked for 1/4-size frames; once it stops for IDLE_MS,
// 1/2 and then full size. Every request carries a growing seq: the server drops a waiting
// request when a newer one of this page arrives (HTTP 204), and a panel never shows a frame
// older than the one it shows. No more than MAX_INFLIGHT requests per bundle are in flight.
"use strict";
(function () {
  const LEVELS = [4, 2, 1];
  const IDLE_MS = 150;
  const MAX_INFLIGHT = 2;
  const DISPLAY = 400;            // pixels: small bundles are shown scaled up to this size
  const client = "p" + Math.random().toString(36).slice(2, 12);
  const $ = (id) => document.getElementById(id);
  let info = null, start = null, cam = null;
  let seq = 0, version = 0, idle = false, idleTimer = null, dirty = false;
  const panels = [];

  const wrap = (a) => ((a + 180) % 360 + 360) % 360 - 180;
  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

  function makePanel(b, i) {
    const div = document.createElement("div");
    div.className = "panel";
    const h = document.createElement("h2");
    h.textContent = b.name;
    const img = document.createElement("img");
    const scale = Math.max(b.W, b.H) < DISPLAY ? DISPLAY / Math.max(b.W, b.H) : 1;
    img.width = Math.round(b.W * scale);
    img.height = Math.round(b.H * scale);
    img.alt = "render of " + b.name;
    img.draggable = false;
    const stats = document.createElement("div");
    stats.className = "stats";
    stats.style.width = img.width + "px";
    const about = `${b.runtime} · ${b.precision} · ${b.size_mb.toFixed(2)} MB · ` +
      `${b.samples[0]}+${b.samples[1]} samples` +
      (b.grid ? " · grid" : " · no grid");
    div.append(h, img, stats);
    $("panels").append(div);
    const p = { i, b, img, stats, about, inflight: 0, wanted: null, asked: null, shown: null, frames: 0 };
    stats.textContent = about + "\nwaiting for the first frame…";
    bindCamera(img);
    return p;
  }

  function showStats(p, resp, want) {
    const ms = Number(resp.headers.get("X-Frame-Ms")), ev = Number(resp.headers.get("X-Evaluations"));
    p.stats.textContent = p.about + `\n${ms < 100 ? ms.toFixed(1) : ms.toFixed(0)} ms/frame · ` +
      `${ev.toLocaleString("en")} evaluations/frame\n${resp.headers.get("X-Size")} ` +
      `(${want.level === 1 ? "full size" : "1/" + want.level + " size"})`;
  }

  function display(p, blob, s, want) {
    const old = p.img.src;
    p.img.src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    p.shown = { seq: s, version: want.version, level: want.level, skip: want.skip, ...want.cam };
    Object.assign(p.img.dataset, { seq: s, level: want.level, az: want.cam.az, el: want.cam.el, r: want.cam.r });
    p.frames += 1;
  }

  function send(p, want) {
    if (p.inflight >= MAX_INFLIGHT) { p.wanted = want; return; }
    const s = ++seq;
    p.inflight += 1;
    p.asked = { version: want.version, level: want.level };
    const q = new URLSearchParams({
      bundle: p.i, az: want.cam.az.toFixed(4), el: want.cam.el.toFixed(4), r: want.cam.r.toFixed(5),
      w: Math.max(1, Math.round(p.b.W / want.level)), h: Math.max(1, Math.round(p.b.H / want.level)),
      skip: want.skip ? 1 : 0, seq: s, client,
    });
    fetch("api/frame?" + q).then(async (resp) => {
      if (resp.status === 200) {
        const blob = await resp.blob();
        if (!p.shown || s > p.shown.seq) { display(p, blob, s, want); showStats(p, resp, want); refine(p); }
      } else if (resp.status !== 204) {
        p.stats.textContent = p.about + "\n" + (await resp.text()).trim();
        p.stats.classList.add("error");
        return;
      }
      p.stats.classList.remove("error");
    }).catch(() => {
      p.stats.textContent = p.about + "\nthe viewer's server cannot be reached";
      p.stats.classList.add("error");
    }).finally(() => {
      p.inflight -= 1;
      if (p.wanted) { const w = p.wanted; p.wanted = null; send(p, w); }
    });
  }

  function want(level) { return { level, version, cam: { ...cam }, skip: $("skip").checked }; }

  // after the camera stops: the next finer level of what the panel shows, once
  function refine(p) {
    if (!idle || !p.shown || p.shown.version !== version) return;
    const k = LEVELS.indexOf(p.shown.level);
    if (k < 0 || k + 1 >= LEVELS.length) return;
    const level = LEVELS[k + 1];
    if (p.asked && p.asked.version === version && p.asked.level <= level) return;
    send(p, want(level));
  }

  function changed() {
    version += 1;
    idle = false;
    clearTimeout(idleTimer);
    $("camera").textContent =
      `azimuth ${cam.az.toFixed(1)}°, elevation ${cam.el.toFixed(1)}°, radius ${cam.r.toFixed(2)}`;
    for (const p of panels) send(p, want(LEVELS[0]));
    idleTimer = setTimeout(() => { idle = true; panels.forEach(refine); }, IDLE_MS);
  }

  function schedule() {
    if (dirty) return;
    dirty = true;
    requestAnimationFrame(() => { dirty = false; changed(); });
  }

  function bindCamera(img) {
    let drag = null;
    img.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY };
      img.setPointerCapture(e.pointerId);
      img.classList.add("dragging");
      e.preventDefault();
    });
    img.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!dx && !dy) return;
      drag = { x: e.clientX, y: e.clientY };
      cam.az = wrap(cam.az - 0.4 * dx);
      cam.el = clamp(cam.el + 0.3 * dy, -89, 89);
      schedule();
    });
    const end = () => { drag = null; img.classList.remove("dragging"); };
    img.addEventListener("pointerup", end);
    img.addEventListener("pointercancel", end);
    img.addEventListener("wheel", (e) => {
      e.preventDefault();
      cam.r = clamp(cam.r * Math.exp(0.001 * e.deltaY), 0.05 * start.r, maxRadius());
      schedule();
    }, { passive: false });
  }

  function maxRadius() { return Math.min(...info.bundles.map((b) => b.max_radius)); }

  async function init() {
    const resp = await fetch("api/info");
    info = await resp.json();
    start = { ...info.start };
    cam = { ...start };
    $("start").textContent = "start: " + info.start_note;
    if (!info.bundles.some((b) => b.grid)) $("skip").parentElement.title = "no occupancy grid: early termination only";
    info.bundles.forEach((b, i) => panels.push(makePanel(b, i)));
    $("reset").addEventListener("click", () => { cam = { ...start }; changed(); });
    $("skip").addEventListener("change", changed);
    changed();
  }

  window.nerfViewer = { panels, camera: () => ({ ...cam }), client };
  init().catch((e) => { document.body.append("cannot start the viewer: " + e); });
})();

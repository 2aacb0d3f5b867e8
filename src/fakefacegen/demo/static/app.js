// FakeFaceGen demo page. No libraries: everything here is served by the package, so it works offline.
//
// The page state (seed, number of faces, truncation) lives in the URL, so a link reproduces the
// grid. The grid is fetched as ONE PNG (/api/grid.png: one batched forward pass on the server,
// far cheaper than one request per face) and cut into per-face canvases, which are the click targets.
// A picked face can be edited with one slider per attribute the model offers (/api/model's "editing");
// its picture follows the slider (debounced, at most one request in flight per face), and the walk and
// the downloads use the edited faces (edit, edit_a, edit_b in their URLs).
"use strict";

(() => {
  const PAD = 2;               // the grid PNG's padding, in pixels (the server's default)
  const SEED_MAX = 4294967295;
  const GRID_SIZES = [4, 9, 16, 25, 36, 49, 64];
  const $ = (id) => document.getElementById(id);

  const state = { seed: 0, n: 16, trunc: null, picks: [], info: null, photo: null, editK: 0, attrs: [] };
  let token = 0;               // the newest grid request; older ones that finish late are ignored
  let requested = null;        // the key of the newest grid request
  let walkToken = 0;
  let debounce = null;
  let walkDebounce = null;
  const EDIT_DEBOUNCE_MS = 40;  // slider moves closer together than this make one request
  const WALK_DEBOUNCE_MS = 250; // the walk (two images, dozens of faces) follows once a slider is let go
  let notice = "";             // a problem with the link itself: shown until the user changes something

  // Exposed for tests and for measuring: when the grid was last drawn, and what it showed.
  window.fakefacegen = { gridReadyMs: null, grids: 0, walks: 0, key: null, photo: null,
                         edits: 0, editRequests: 0, editInFlightMax: 0 };

  // ---------------------------------------------------------------- URL <-> state
  function parseState() {
    const q = new URLSearchParams(location.search);
    const errs = [];
    const s = q.get("seed");
    if (s !== null && /^\d{1,10}$/.test(s) && Number(s) <= SEED_MAX) state.seed = Number(s);
    else {
      if (s !== null) errs.push(`seed in the link must be an integer 0..${SEED_MAX}, got "${s}"`);
      state.seed = randomSeed();
    }
    const n = Number(q.get("n") || 16);
    state.n = GRID_SIZES.includes(n) ? n : 16;
    if (q.has("n") && !GRID_SIZES.includes(n)) errs.push(`n in the link must be one of ${GRID_SIZES.join(", ")}`);
    const t = q.get("truncation");
    state.trunc = null;
    if (t !== null && t !== "" && t !== "off") {
      const v = Number(t);
      if (Number.isFinite(v) && v >= 0.3 && v <= 1.0) state.trunc = v;
      else errs.push(`truncation in the link must be 0.3..1.0 or off, got "${t}"`);
    }
    return errs;
  }

  function query(obj) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(obj)) if (v !== null && v !== undefined) q.set(k, String(v));
    return q.toString();
  }

  function pageQuery() {
    return query({ seed: state.seed, n: state.n === 16 ? null : state.n,
                   truncation: state.trunc === null ? null : state.trunc.toFixed(2) });
  }

  function syncUrl(push) {
    const url = `${location.pathname}?${pageQuery()}`;
    if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
  }

  function randomSeed() {
    const a = new Uint32Array(1);
    crypto.getRandomValues(a);
    return a[0];
  }

  const truncParam = () => (state.trunc === null ? null : state.trunc.toFixed(2));
  // A pick is a face of the grid ({seed, index}) or a projected photo ({photo: id}), with its attribute
  // edit ({Smiling: 2}: amounts in sigmas; absent = 0) and the state of its edit requests.
  const newPick = (p) => ({ ...p, edit: {}, good: {}, busy: false, dirty: false, inflight: 0, blob: null, timer: null });
  const amount = (v) => String(Math.round(v * 100) / 100);
  const editParam = (e) => {
    const names = Object.keys(e || {}).filter((k) => e[k] !== 0).sort();
    return names.length ? names.map((k) => `${k}:${amount(e[k])}`).join(",") : null;
  };
  const faceUrl = (p) => (p.photo ? `/api/projection.png?${query({ id: p.photo, edit: editParam(p.edit) })}`
    : `/api/face.png?${query({ seed: p.seed, index: p.index, truncation: truncParam(), edit: editParam(p.edit) })}`);
  const endParam = (p) => (p.photo ? `photo:${p.photo}` : `${p.seed}:${p.index}`);
  const endName = (p) => (p.photo ? `photo-${p.photo.slice(0, 6)}` : `${p.seed}-${p.index}`)
    + (editParam(p.edit) ? "-edited" : "");

  // ---------------------------------------------------------------- errors
  function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = !msg;
  }

  async function explain(url) {
    // An <img> that failed to load says nothing about why; ask the server for its JSON error.
    try {
      const r = await fetch(url);
      const j = await r.json();
      return j.error || `HTTP ${r.status}`;
    } catch (err) {
      return `the demo server does not answer (${err.message}); is fakefacegen demo still running?`;
    }
  }

  // ---------------------------------------------------------------- controls
  function syncControls() {
    $("seed").value = state.seed;
    $("n").value = String(state.n);
    $("trunc-on").checked = state.trunc !== null;
    if (state.trunc !== null) $("truncation").value = String(state.trunc);
    $("truncation").classList.toggle("off", state.trunc === null);
    $("trunc-value").textContent = state.trunc === null ? "off" : state.trunc.toFixed(2);
  }

  function setTruncationFromSlider() {
    state.trunc = Number($("truncation").value);
    syncControls();
  }

  // ---------------------------------------------------------------- model facts
  function fmtCount(x) {
    if (x === null || x === undefined) return null;
    if (x >= 1e6) return `${(x / 1e6).toFixed(x >= 1e7 ? 0 : 1)}M`;
    if (x >= 1e3) return `${(x / 1e3).toFixed(x >= 1e4 ? 0 : 1)}k`;
    return String(x);
  }

  async function loadModel() {
    try {
      const r = await fetch("/api/model");
      const m = await r.json();
      if (!r.ok) throw new Error(m.error || `HTTP ${r.status}`);
      state.info = m;
      const facts = [`${m.resolution}×${m.resolution} px`];
      const seen = fmtCount(m.images_seen);
      facts.push(seen ? `${seen} images seen` : "images seen: not recorded");
      if (m.fid !== null && m.fid !== undefined) {
        let fid = `FID ${Number(m.fid).toFixed(1)}`;
        const extra = [m.fid_n ? `${fmtCount(m.fid_n)} faces` : null, m.fid_source ? `from ${m.fid_source}` : null]
          .filter(Boolean);
        if (extra.length) fid += ` (${extra.join(", ")})`;
        facts.push(fid);
      } else facts.push("FID: not recorded");
      const el = $("model");
      const name = document.createElement("b");
      name.textContent = m.name + (m.bundled ? " (bundled)" : "");
      el.replaceChildren(name, " · " + facts.join(" · "));
      el.title = m.source;
      buildSliders(m.editing);
      if (m.projection && !m.projection.perceptual) {
        $("photo-status").textContent = "(pixel loss only: the Inception weights for the perceptual loss are not installed)";
      }
    } catch (err) {
      $("model").textContent = `model facts unavailable: ${err.message}`;
    }
  }

  // ---------------------------------------------------------------- the grid
  function gridUrl() {
    return `/api/grid.png?${query({ seed: state.seed, n: state.n, truncation: truncParam() })}`;
  }

  function renderGrid() {
    const my = ++token;
    const url = gridUrl();
    const key = `${state.seed}|${state.n}|${truncParam()}`;
    requested = key;
    const grid = $("grid");
    grid.setAttribute("aria-busy", "true");
    $("status").textContent = "rendering…";
    $("download-grid").href = url;
    $("download-grid").download = `faces-seed${state.seed}.png`;
    const img = new Image();
    img.onload = () => {
      if (my !== token) return;
      drawCells(img, key);
      showError(notice);
      grid.setAttribute("aria-busy", "false");
      $("status").textContent = "";
      window.fakefacegen.gridReadyMs = performance.now();
      window.fakefacegen.grids += 1;
      window.fakefacegen.key = key;
      document.body.dataset.grid = key;
    };
    img.onerror = async () => {
      if (my !== token) return;
      grid.setAttribute("aria-busy", "false");
      $("status").textContent = "";
      showError(await explain(url));
    };
    img.src = url;
  }

  function drawCells(img, key) {
    const n = state.n;
    const cols = Math.max(1, Math.ceil(Math.sqrt(n)));
    const R = Math.round((img.naturalWidth - PAD) / cols - PAD);
    const grid = $("grid");
    const cell = Math.max(48, Math.min(128, Math.floor(560 / cols)));
    grid.style.setProperty("--cols", cols);
    grid.style.setProperty("--cell", `${cell}px`);
    const frag = document.createDocumentFragment();
    for (let i = 0; i < n; i++) {
      const r = Math.floor(i / cols), c = i % cols;
      const wrap = document.createElement("div");
      wrap.className = "cell";
      const b = document.createElement("button");
      b.type = "button";
      b.className = "face";
      b.dataset.index = String(i);
      b.setAttribute("aria-label", `face ${i} of seed ${state.seed}: pick for the interpolation`);
      const cv = document.createElement("canvas");
      cv.width = R;
      cv.height = R;
      cv.getContext("2d").drawImage(img, PAD + c * (R + PAD), PAD + r * (R + PAD), R, R, 0, 0, R, R);
      const badge = document.createElement("span");
      badge.className = "badge";
      b.append(cv, badge);
      b.addEventListener("click", () => pick({ seed: state.seed, index: i }));
      const dl = document.createElement("a");
      dl.className = "dl";
      dl.textContent = "↓";
      dl.title = `download face ${i} of seed ${state.seed} as PNG`;
      dl.href = faceUrl({ seed: state.seed, index: i });
      dl.download = `seed${state.seed}-${String(i).padStart(5, "0")}.png`;
      wrap.append(b, dl);
      frag.append(wrap);
    }
    grid.replaceChildren(frag);
    grid.dataset.key = key;
    markPicks();
  }

  // ---------------------------------------------------------------- picking two faces and the walk
  function pick(p) {
    if (state.picks.length >= 2) state.picks = [];
    state.picks.push(newPick(p));
    state.editK = state.picks.length - 1;  // the sliders edit the face just picked
    markPicks();
    renderWalk();
    showEditor();
  }

  function markPicks() {
    for (const b of document.querySelectorAll("#grid .face")) {
      const i = Number(b.dataset.index);
      const k = state.picks.findIndex((p) => p.seed === state.seed && p.index === i);
      b.classList.toggle("picked", k >= 0);
      b.querySelector(".badge").textContent = k === 0 ? "A" : k === 1 ? "B" : "";
    }
    ["a", "b"].forEach((name, k) => {
      const p = state.picks[k];
      const im = $(`end-${name}`);
      if (p) im.src = faceUrl(p);
      else im.removeAttribute("src");
      $(`${name}-label`).textContent = !p ? "—" : p.photo ? "your photo (projected)" : `seed ${p.seed}, face ${p.index}`;
    });
  }

  function renderWalk() {
    const my = ++walkToken;
    const [a, b] = state.picks;
    if (!b) {
      $("walk").hidden = true;
      $("walk-hint").textContent = a ? "Now pick face B." : "Pick face A, then face B.";
      return;
    }
    const common = { a: endParam(a), b: endParam(b), edit_a: editParam(a.edit), edit_b: editParam(b.edit),
                     truncation: truncParam() };
    const strip = `/api/walk.png?${query({ ...common, frames: 8 })}`;
    const anim = `/api/walk.gif?${query({ ...common, frames: 24, fps: 12 })}`;
    $("walk-hint").textContent = "rendering the walk…";
    let left = 2;
    const done = () => {
      if (my !== walkToken || --left) return;
      $("walk").hidden = false;
      $("walk-hint").textContent = "From A to B along a great circle of the noise space.";
      window.fakefacegen.walks += 1;
      document.body.dataset.walk = `${common.a}|${common.b}|${common.truncation}`
        + (common.edit_a || common.edit_b ? `|${common.edit_a}|${common.edit_b}` : "");
    };
    const fail = async (url) => {
      if (my !== walkToken) return;
      $("walk-hint").textContent = "";
      showError(await explain(url));
    };
    const si = $("walk-strip"), ai = $("walk-anim");
    si.onload = done;
    ai.onload = done;
    si.onerror = () => fail(strip);
    ai.onerror = () => fail(anim);
    si.src = strip;
    ai.src = anim;
    $("download-strip").href = strip;
    $("download-strip").download = `walk-${endName(a)}-${endName(b)}.png`;
    $("download-anim").href = anim;
    $("download-anim").download = `walk-${endName(a)}-${endName(b)}.gif`;
  }

  // ---------------------------------------------------------------- a photo, projected into the model
  // The photo is sent to this server only (POST /api/project), which projects it in memory; the page
  // polls the projection's progress and then offers it as face A of a walk.
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function projectPhoto(file) {
    if (!file) return;
    const limits = (state.info && state.info.limits) || {};
    const maxBytes = limits.max_upload_bytes || 16 << 20;
    if (file.size > maxBytes) {
      showError(`photo: ${file.size.toLocaleString()} bytes; the limit is ${maxBytes.toLocaleString()} (16 MiB)`);
      return;
    }
    const panel = document.querySelector(".photo-panel");
    const bar = $("photo-progress"), status = $("photo-status");
    panel.setAttribute("aria-busy", "true");
    showError("");
    const orig = $("photo-orig");
    if (orig.src) URL.revokeObjectURL(orig.src);
    orig.src = URL.createObjectURL(file);        // shown from the browser's memory, not the server
    $("photo-proj").removeAttribute("src");
    $("photo-result").hidden = false;
    $("photo-walk").hidden = true;
    bar.hidden = false;
    bar.removeAttribute("value");                // indeterminate while it uploads and waits
    status.textContent = "uploading…";
    try {
      const most = state.info && state.info.projection ? state.info.projection.max_steps : 40;
      const steps = Math.max(1, Math.min(limits.project_default_steps || 40, most));
      const r = await fetch(`/api/project?steps=${steps}`, {
        method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
      });
      let job = await r.json();
      if (!r.ok) throw new Error(job.error || `HTTP ${r.status}`);
      while (job.state === "queued" || job.state === "running") {
        if (job.state === "queued") status.textContent = "waiting for the server…";
        else if (job.step === 0) status.textContent = "projecting: choosing a starting face…";
        else {
          bar.max = job.steps || 1;
          bar.value = job.step;
          status.textContent = `projecting: step ${job.step} of ${job.steps}…`;
        }
        await sleep(250);
        const q = await fetch(`/api/projection?id=${job.id}`);
        const next = await q.json();
        if (!q.ok) throw new Error(next.error || `HTTP ${q.status}`);
        job = next;
      }
      if (job.state !== "done") throw new Error(job.error || `projection ${job.state}`);
      state.photo = job.id;
      window.fakefacegen.photo = job;
      $("photo-proj").src = `/api/projection.png?id=${job.id}`;
      status.textContent = `Projected in ${job.seconds} s (${job.steps} steps); pixel distance ${job.pixel_rms.toFixed(3)}. ` +
        "It is face A now: pick a face in the grid to walk to it.";
      $("photo-walk").hidden = false;
      walkFromPhoto();
      document.body.dataset.photo = job.id;
    } catch (err) {
      status.textContent = "";
      showError(err.message);
    } finally {
      bar.hidden = true;
      panel.setAttribute("aria-busy", "false");
    }
  }

  function walkFromPhoto() {
    if (!state.photo) return;
    state.picks = [newPick({ photo: state.photo })];
    state.editK = 0;
    markPicks();
    renderWalk();
    showEditor();
  }

  // ---------------------------------------------------------------- attribute editing
  // One slider per offered attribute (the headline ones first, the rest under "more attributes"). A
  // slider move changes the edited pick's amounts and asks for its picture after EDIT_DEBOUNCE_MS; while
  // a request for that face is in flight, further moves only mark it dirty, and the newest amounts are
  // asked for when it returns. A refused edit (e.g. two nearly parallel directions) shows the server's
  // message and puts the sliders back to the last edit that rendered.
  function buildSliders(editing) {
    state.attrs = (editing && editing.attributes) || [];
    const none = $("edit-none");
    none.textContent = editing && !editing.available && editing.why_not
      ? `No attribute editing for this model: ${editing.why_not}` : "";
    const head = document.createDocumentFragment(), more = document.createDocumentFragment();
    const step = (editing && editing.limits && editing.limits.step) || 0.1;
    let nMore = 0;
    for (const a of state.attrs) {
      const id = `attr-${a.name}`;
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = a.label || a.name;
      const facts = [];
      if (a.accuracy !== null && a.accuracy !== undefined) facts.push(`held-out accuracy ${a.accuracy.toFixed(3)}`);
      if (a.auc !== null && a.auc !== undefined) facts.push(`AUC ${a.auc.toFixed(3)}`);
      label.title = `${a.name}: the attribute classifier's ${facts.join(", ") || "accuracy: not recorded"}` +
        ` on held-out real faces; slider ${a.range[0]}..${a.range[1]} sigmas`;
      const input = document.createElement("input");
      input.type = "range";
      input.id = id;
      input.min = String(a.range[0]);
      input.max = String(a.range[1]);
      input.step = String(step);
      input.value = "0";
      input.dataset.attr = a.name;
      input.setAttribute("aria-label", `${a.label || a.name}, in sigmas`);
      const out = document.createElement("output");
      out.htmlFor = id;
      out.textContent = "0";
      input.addEventListener("input", () => onSlide(a.name, Number(input.value)));
      input.addEventListener("change", scheduleWalk);
      input.addEventListener("dblclick", () => { onSlide(a.name, 0); scheduleWalk(); });
      (a.headline ? head : more).append(label, input, out);
      if (!a.headline) nMore += 1;
    }
    $("sliders").replaceChildren(head);
    $("sliders-more").replaceChildren(more);
    $("more-attrs").hidden = nMore === 0;
    $("more-attrs").querySelector("summary").textContent = `more attributes (${nMore})`;
    showEditor();
  }

  const editing = () => state.picks[state.editK] || null;

  function showEditor() {
    const p = editing();
    const can = state.attrs.length > 0;
    $("edit-panel").hidden = !(p && can);
    $("edit-none").hidden = !(p && !can && $("edit-none").textContent);
    if (!p || !can) return;
    const names = ["A", "B"];
    $("edit-target").textContent = `face ${names[state.editK]}`
      + (p.photo ? " (your photo, projected)" : ` (seed ${p.seed}, face ${p.index})`);
    for (const b of $("edit-which").querySelectorAll("button")) {
      const k = Number(b.dataset.k);
      b.disabled = !state.picks[k];
      b.setAttribute("aria-pressed", String(k === state.editK));
    }
    syncSliders();
    showEdited(p);
  }

  function syncSliders() {
    const p = editing();
    for (const input of document.querySelectorAll(".sliders input[type=range]")) {
      const v = (p && p.edit[input.dataset.attr]) || 0;
      input.value = String(v);
      const out = input.nextElementSibling;
      out.textContent = amount(v);
      out.classList.toggle("moved", v !== 0);
    }
  }

  function showEdited(p) {
    // The picture of the edited face: the last one fetched while sliding, else the face's URL.
    const url = faceUrl(p);
    const src = p.blob && p.blobUrl === url ? p.blob : url;
    if (editing() === p) {
      $("edit-face").src = src;
      $("download-edit").href = url;
      $("download-edit").download = `${p.photo ? `photo-${p.photo.slice(0, 6)}` : `seed${p.seed}-${String(p.index).padStart(5, "0")}`}`
        + (editParam(p.edit) ? "-edited" : "") + ".png";
    }
    const k = state.picks.indexOf(p);
    if (k >= 0) $(`end-${k ? "b" : "a"}`).src = src;
  }

  function onSlide(name, v) {
    const p = editing();
    if (!p) return;
    if (v === 0) delete p.edit[name];
    else p.edit[name] = v;
    syncSliders();
    clearTimeout(p.timer);
    p.timer = setTimeout(() => refreshEdit(p), EDIT_DEBOUNCE_MS);
  }

  async function refreshEdit(p) {
    if (p.busy) { p.dirty = true; return; }   // one request in flight per face; the newest amounts follow
    p.busy = true;
    p.dirty = false;
    const url = faceUrl(p);
    const sent = { ...p.edit };
    const fx = window.fakefacegen;
    fx.editRequests += 1;
    p.inflight += 1;
    fx.editInFlightMax = Math.max(fx.editInFlightMax, p.inflight);  // per face: stays 1
    $("edit-panel").setAttribute("aria-busy", "true");
    try {
      const r = await fetch(url);
      if (!r.ok) {
        let msg = `HTTP ${r.status}`;
        try { msg = (await r.json()).error || msg; } catch (err) { /* not JSON */ }
        throw Object.assign(new Error(msg), { refused: r.status === 400 });
      }
      const blob = await r.blob();
      if (!state.picks.includes(p)) return;
      const old = p.blob;
      p.blob = URL.createObjectURL(blob);
      p.blobUrl = url;
      p.good = sent;
      showEdited(p);
      if (old) URL.revokeObjectURL(old);
      $("edit-status").textContent = "";
      if ($("error").dataset.edit) { showError(notice); delete $("error").dataset.edit; }
      fx.edits += 1;
      document.body.dataset.edit = `${endParam(p)}|${editParam(sent)}|${truncParam()}`;
    } catch (err) {
      if (!state.picks.includes(p)) return;
      showError(err.refused ? err.message : `the edit did not render: ${err.message}`);
      $("error").dataset.edit = "1";
      if (err.refused) {                      // back to the last edit that rendered
        p.edit = { ...p.good };
        p.dirty = false;
        if (editing() === p) syncSliders();
      }
    } finally {
      p.inflight -= 1;
      p.busy = false;
      if (p.dirty && state.picks.includes(p)) refreshEdit(p);
      else $("edit-panel").setAttribute("aria-busy", "false");
    }
  }

  function scheduleWalk() {
    // The walk follows once the faces' own pictures are in: a refused edit has been put back by then.
    clearTimeout(walkDebounce);
    walkDebounce = setTimeout(() => {
      if (state.picks.some((p) => p.busy || p.dirty)) scheduleWalk();
      else if (state.picks.length === 2) renderWalk();
    }, WALK_DEBOUNCE_MS);
  }

  function wireEditor() {
    $("edit-reset").addEventListener("click", () => {
      const p = editing();
      if (!p) return;
      p.edit = {};
      syncSliders();
      refreshEdit(p);
      scheduleWalk();
    });
    for (const b of $("edit-which").querySelectorAll("button")) {
      b.addEventListener("click", () => {
        if (!state.picks[Number(b.dataset.k)]) return;
        state.editK = Number(b.dataset.k);
        showEditor();
      });
    }
  }

  function wirePhoto() {
    const drop = $("drop");
    $("photo-file").addEventListener("change", () => {
      projectPhoto($("photo-file").files[0]);
      $("photo-file").value = "";
    });
    // A photo dropped anywhere on the page is taken, never opened by the browser in place of the page.
    for (const ev of ["dragenter", "dragover"]) {
      document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const f = e.dataTransfer && e.dataTransfer.files[0];
      if (f) projectPhoto(f);
    });
    $("photo-walk").addEventListener("click", walkFromPhoto);
  }

  // ---------------------------------------------------------------- wiring
  function rerender(push) {
    notice = "";
    syncUrl(push);
    syncControls();
    renderGrid();
    if (state.picks.length) { markPicks(); renderWalk(); showEditor(); }
  }

  function init() {
    notice = parseState().join("; ");
    syncControls();
    showError(notice);
    syncUrl(false);
    loadModel();
    renderGrid();
    wirePhoto();
    wireEditor();

    $("new-faces").addEventListener("click", () => {
      state.seed = randomSeed();
      rerender(true);
    });
    $("seed-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = $("seed").value.trim();
      if (!/^\d{1,10}$/.test(v) || Number(v) > SEED_MAX) {
        showError(`seed must be an integer 0..${SEED_MAX}, got "${v}"`);
        return;
      }
      state.seed = Number(v);
      rerender(true);
    });
    $("n").addEventListener("change", () => {
      state.n = Number($("n").value);
      rerender(true);
    });
    $("trunc-on").addEventListener("change", () => {
      if ($("trunc-on").checked) setTruncationFromSlider();
      else state.trunc = null;
      rerender(false);
    });
    // Moving the slider turns truncation on; redraw once it rests (not on every pixel of a drag).
    $("truncation").addEventListener("input", () => {
      setTruncationFromSlider();
      clearTimeout(debounce);
      debounce = setTimeout(() => rerender(false), 150);
    });
    $("truncation").addEventListener("change", () => {
      clearTimeout(debounce);
      setTruncationFromSlider();
      if (requested !== `${state.seed}|${state.n}|${truncParam()}`) rerender(false);
    });
    window.addEventListener("popstate", () => {
      notice = parseState().join("; ");
      syncControls();
      renderGrid();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

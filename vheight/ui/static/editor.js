// vheight landmark editor (Streamlit components v2 module, no build step).
//
// Coordinates: every point is (x, y) in pixels of the FULL-RESOLUTION film,
// x = column, y = row, the centre of the top-left pixel at (0, 0).  The film
// is shown from a smaller display image that is stretched over the
// full-resolution extent, so the display scale never leaks into a point.
//
// Python is the single source of truth: each edit sends the complete set of
// points ("edit" state: {rev, vertebrae, calibration_line}); Python saves it,
// measures, and sends the points back with `ack` = the last revision it
// applied.  Local edits newer than `ack` are kept until Python catches up.
// Python-side changes (an uploaded annotation, a cleared level, a snap) bump
// `epoch`: the editor adopts the points as one step of its undo history, so
// Ctrl+Z undoes a server-side change like any edit.
//
// The selected landmark is reported to Python (for "Snap point") as
// {level, name, seq}: inside each edit, and on its own ("selected" state) when
// only the selection changed; `seq` orders the two.

const INSTANCES = new WeakMap();

const GRADE_COLOURS = {
  0: "#3ccf7a",
  1: "#f5d142",
  2: "#ff9838",
  3: "#ff4d4f",
};
const INCOMPLETE_COLOUR = "#a3acb9";
const CALIBRATION_COLOUR = "#4cc2ff";
const HIT_RADIUS = 10; // screen px, at most
const MIN_HIT_RADIUS = 3; // screen px, at least
// A point is grabbed only within this share of the distance (screen px) to the
// nearest point of another level, so two endplates 10 px apart are never confused.
const HIT_SHARE = 0.4;
const MIN_HEIGHT = 420; // CSS px of the viewport, whatever the window
const BOTTOM_GAP = 14; // CSS px left below the viewer when it fills the window
const CROP_DELAY_MS = 220; // view settled this long -> ask for the full-resolution region
const DIRECTION_KEY = "vheight.editor.direction";
const CLICK_SLOP = 4; // screen px a click may move before it becomes a pan
const MAX_ZOOM = 32; // screen px per film px
const NUDGE_COMMIT_DELAY_MS = 450;
// How long a level chosen in the viewer outranks the level of Python's runs
// that have not seen it yet (their echo normally comes within a few hundred ms).
const LEVEL_ECHO_MS = 3000;
const LABEL_MARGIN_Y = 30; // CSS px kept clear for the corner read-outs (window, zoom)

const clone = (value) => JSON.parse(JSON.stringify(value ?? null));

function shortName(name) {
  return name.replace("superior_", "S").replace("inferior_", "I").replace("anterior", "A")
    .replace("middle", "M").replace("posterior", "P");
}

class Editor {
  constructor(parentElement) {
    this.parent = parentElement;
    this.root = parentElement.querySelector(".vh-editor");
    this.viewport = this.root.querySelector(".vh-viewport");
    this.canvas = this.root.querySelector(".vh-canvas");
    this.ctx = this.canvas.getContext("2d");
    this.nextEl = this.root.querySelector(".vh-next");
    this.modeBadge = this.root.querySelector(".vh-mode-badge");
    this.hudLeft = this.root.querySelector(".vh-hud-left");
    this.hudRight = this.root.querySelector(".vh-hud-right");
    this.toastEl = this.root.querySelector(".vh-toast");
    this.helpEl = this.root.querySelector(".vh-help");
    this.loadingEl = this.root.querySelector(".vh-loading");
    this.filmDrawn = false;
    this.codesReported = false;
    this.announceDrawn = false;
    this.buttons = {};
    for (const button of this.root.querySelectorAll("[data-action]")) {
      this.buttons[button.dataset.action] = button;
    }

    // Polled layout: the page above the viewer may move it without any resize.
    this.heightTimer = setInterval(() => this.fitHeight(), 400);

    this.filmId = null;
    this.imageUrl = null;
    this.image = null;
    this.rows = 1;
    this.columns = 1;
    this.levels = [];
    this.pointNames = [];
    this.points = {};
    this.calibrationLine = [];
    this.grades = {};
    this.treated = new Set();
    this.activeLevel = null;
    this.lastDataLevel = null;
    this.pendingLevel = null; // {from, until}: a level chosen here, not yet seen by Python
    this.previousLevel = null; // the level the last one chosen here replaced
    this.mode = "landmarks";
    this.epoch = null;
    this.rev = 0;
    this.history = [];
    this.historyIndex = -1;
    this.selected = null; // {kind: "point", level, name} | {kind: "calibration", index}
    this.selectionSeq = 0;
    this.publishedSelection = "null";
    this.view = { zoom: 1, tx: 0, ty: 0 };
    this.fitted = false;
    this.drag = null;
    this.spaceDown = false;
    this.mouse = null;
    this.nudgeTimer = null;
    this.toastTimer = null;
    this.frame = null;
    this.height = 640;
    this.setStateValue = () => {};

    // Film codes (16-bit) windowed here: a new window needs no new image.
    this.values = null; // {codes, width, height, x0, y0, x1, y1, canvas, imageData}
    this.crop = null; // the full-resolution region last received, same shape
    this.cropUrl = null;
    this.cropTimer = null;
    this.cropAsked = null;
    this.mapping = { scale: 1, offset: 0 };
    this.window = null; // {center, width, function, invert, lut?}
    this.lastDataWindow = null;
    this.lut = null;
    this.windowSeq = 0;
    this.wlMode = false;
    this.wlFrames = []; // {t, cost} of the last window/level frames, ms (read by benchmarks)
    this.root.vhWindowFrames = this.wlFrames;
    this.overlay = true;
    this.fillDim = false;
    this.fullscreen = false;
    this.heights = {};
    this.badge = null;
    this.direction = readDirection();
    this.badgeEl = this.root.querySelector(".vh-cal-badge");
    this.wlEl = this.root.querySelector(".vh-wl");

    this.listeners = [];
    this.bindEvents();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.viewport);
    // What is drawn above the viewer can grow after it (a header, a message):
    // the page's block grows with it, and the viewer's height follows.
    this.pageObserver = new ResizeObserver(() => this.fitHeight());
    this.pageObserver.observe(this.pageBlock());
    this.on(window, "resize", () => this.fitHeight());
    this.on(document, "fullscreenchange", () => {
      if (!document.fullscreenElement && this.fullscreen) {
        this.setFullscreen(false);
      } else {
        this.fitHeight(); // the page's layout is back: fill the window below the top again
        this.resize();
      }
    });
  }

  // ---------------------------------------------------------------- plumbing

  on(target, type, handler, options) {
    target.addEventListener(type, handler, options);
    this.listeners.push(() => target.removeEventListener(type, handler, options));
  }

  destroy() {
    for (const off of this.listeners) off();
    this.listeners = [];
    this.resizeObserver.disconnect();
    this.pageObserver.disconnect();
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    clearTimeout(this.nudgeTimer);
    clearTimeout(this.toastTimer);
    clearTimeout(this.cropTimer);
    clearInterval(this.heightTimer);
  }

  // -------------------------------------------------------------- data in

  update(data) {
    if (!data) return;
    this.levels = data.levels || this.levels;
    this.pointNames = data.point_names || this.pointNames;
    this.rows = data.rows;
    this.columns = data.columns;
    this.grades = data.grades || {};
    this.heights = data.heights || {};
    this.badge = data.badge || null;
    this.treated = new Set(data.treated || []);
    if (data.height) this.height = data.height;
    if (data.mapping) this.mapping = data.mapping;

    const filmChanged = data.film_id !== this.filmId;
    if (filmChanged) {
      this.filmId = data.film_id;
      this.filmDrawn = false;
      this.codesReported = false;
      this.fitted = false;
      this.selected = null;
      this.history = [];
      this.historyIndex = -1;
      this.epoch = null;
      this.crop = null;
      this.cropUrl = null;
      this.cropAsked = null;
      this.lastDataWindow = null;
      this.values = null;
      this.image = null;
      delete this.root.dataset.codes;
    }
    // The window Python sends wins only when it changed there (a preset picked);
    // a window dragged here stays until Python has caught up with it.
    const dataWindow = JSON.stringify(data.window || null);
    if (dataWindow !== this.lastDataWindow) {
      this.lastDataWindow = dataWindow;
      this.window = clone(data.window);
      this.lut = null;
      this.rewindow();
    }

    const epochChanged = data.epoch !== this.epoch;
    const ack = Number(data.ack || 0);
    this.root.dataset.ack = String(ack);
    if (filmChanged || epochChanged || ack >= this.rev) {
      this.points = clone(data.vertebrae) || {};
      this.calibrationLine = clone(data.calibration_line) || [];
      this.rev = Math.max(this.rev, ack);
      if (epochChanged) {
        this.pushHistory();
      }
      this.epoch = data.epoch;
      this.dropStaleSelection();
    }

    // A level chosen here (auto-advance, N) stays until Python has seen it: a run
    // that started before it, or before the last edit, still carries the level
    // it replaced and must not take it back under the mouse.  Any other level
    // from Python (the level box) is adopted at once.
    const pending = this.pendingLevel;
    if (pending && (filmChanged || data.active_level !== pending.from
                    || performance.now() > pending.until)) {
      this.pendingLevel = null;
    }
    const stale = !filmChanged && data.active_level === (this.pendingLevel || {}).from;
    const behind = !filmChanged && ack < this.rev && data.active_level !== this.activeLevel
      && data.active_level === this.previousLevel;
    if (!stale && !behind && data.active_level !== this.lastDataLevel) {
      const before = this.activeLevel;
      this.activeLevel = data.active_level;
      this.lastDataLevel = data.active_level;
      if (before && before !== this.activeLevel && !filmChanged) {
        this.toast(`Now placing ${this.activeLevel}`);
      }
    }
    this.announceDrawn = Boolean(data.announce_drawn);
    if (data.mode !== this.mode) {
      this.mode = data.mode || "landmarks";
      this.selected = null;
      this.drag = null;
    }

    if (data.image && data.image.url !== this.imageUrl) {
      this.loadValues(data.image);
      this.maybePreview(data);
    }
    if (data.crop && data.crop.url !== this.cropUrl) {
      this.loadCrop(data.crop);
    } else if (!data.crop && this.crop) {
      this.crop = null;
      this.cropUrl = null;
      delete this.root.dataset.crop;
    }
    this.fitHeight();
    this.resize();
    this.updateChrome();
    this.requestDraw();
  }

  async fetchCodes(spec) {
    const reply = await fetch(resolveUrl(spec.url));
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    const buffer = await reply.arrayBuffer();
    const codes = new Uint16Array(buffer);
    if (codes.length !== spec.width * spec.height) throw new Error("truncated film data");
    const canvas = document.createElement("canvas");
    canvas.width = spec.width;
    canvas.height = spec.height;
    const context = canvas.getContext("2d");
    const imageData = context.createImageData(spec.width, spec.height);
    return { ...spec, codes, canvas, context, imageData, out: new Uint32Array(imageData.data.buffer) };
  }

  // While the codes load: the JPEG preview, when it shows the window asked for.
  maybePreview(data) {
    const p = data.preview;
    if (!p || this.values || !this.window) return;
    if (JSON.stringify(p.key) !== JSON.stringify(this.window.key)) return;
    const url = this.imageUrl;
    const image = new Image();
    image.decoding = "async";
    image.onload = () => {
      if (this.values || this.imageUrl !== url) return;
      this.image = image;
      this.loadingEl.hidden = true;
      this.loadingEl.style.display = "none";
      if (!this.fitted) this.fit();
      this.root.dataset.ready = "true";
      this.requestDraw();
    };
    image.src = resolveUrl(p.url);
  }

  loadValues(spec) {
    const url = spec.url;
    this.imageUrl = url;
    this.fetchCodes(spec).then((values) => {
      if (this.imageUrl !== url) return;
      this.values = values;
      this.paintCodes(values);
      this.image = values.canvas;
      this.root.dataset.codes = "true";
      this.loadingEl.hidden = true;
      this.loadingEl.style.display = "none";
      if (!this.fitted) this.fit();
      this.root.dataset.ready = "true";
      this.root.dataset.display = `${values.width}x${values.height}`;
      this.requestDraw();
    }).catch(() => {
      if (this.imageUrl !== url) return;
      this.loadingEl.textContent = "The film image could not be loaded.";
    });
  }

  loadCrop(spec) {
    const url = spec.url;
    this.cropUrl = url;
    this.fetchCodes(spec).then((crop) => {
      if (this.cropUrl !== url) return;
      this.crop = crop;
      this.paintCodes(crop);
      this.root.dataset.crop = JSON.stringify({
        x0: crop.x0, y0: crop.y0, x1: crop.x1, y1: crop.y1, width: crop.width, height: crop.height,
      });
      this.requestDraw();
    }).catch(() => {
      if (this.cropUrl === url) this.cropUrl = null;
    });
  }

  // 65536 grey levels (RGBA words) of the current window, one per code.
  buildLut() {
    const w = this.window || { center: 32768, width: 65536, function: "LINEAR_EXACT" };
    const lut = new Uint32Array(65536);
    const { scale, offset } = this.mapping;
    const invert = Boolean(w.invert);
    let table = null;
    if (w.function === "LUT" && w.lut) {
      const raw = atob(w.lut);
      table = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i += 1) table[i] = raw.charCodeAt(i);
    }
    const c = Number(w.center);
    const width = Math.max(Number(w.width), 1e-6);
    for (let q = 0; q < 65536; q += 1) {
      let byte;
      if (table) {
        byte = table[q];
      } else {
        const m = q * scale + offset;
        let y;
        if (w.function === "SIGMOID") {
          y = 1 / (1 + Math.exp(Math.min(Math.max((-4 * (m - c)) / width, -80), 80)));
        } else if (w.function === "LINEAR_EXACT") {
          y = (m - c) / width + 0.5;
        } else if (width <= 1) {
          y = m > c - 0.5 ? 1 : 0;
        } else {
          y = (m - (c - 0.5)) / (width - 1) + 0.5;
        }
        y = y < 0 ? 0 : y > 1 ? 1 : y;
        if (invert) y = 1 - y;
        byte = Math.round(y * 255);
      }
      lut[q] = 0xff000000 | (byte << 16) | (byte << 8) | byte;
    }
    this.lut = lut;
  }

  paintCodes(target) {
    if (!target) return;
    if (!this.lut) this.buildLut();
    const { codes, out } = target;
    const lut = this.lut;
    for (let i = 0, n = codes.length; i < n; i += 1) out[i] = lut[codes[i]];
    target.context.putImageData(target.imageData, 0, 0);
  }

  // Apply the current window to the film (and the full-resolution region).
  rewindow() {
    this.lut = null;
    if (this.values) this.paintCodes(this.values);
    if (this.crop) this.paintCodes(this.crop);
    this.updateWindowText();
    this.requestDraw();
  }

  updateWindowText() {
    const w = this.window;
    if (!w || !this.wlEl) return;
    const text = w.function === "LUT"
      ? (w.label || "VOI LUT")
      : `W ${formatValue(w.width)}  C ${formatValue(w.center)}`;
    this.wlEl.textContent = text + (w.invert ? "  inv" : "");
    this.root.dataset.window = JSON.stringify({ center: w.center, width: w.width });
  }

  // Mouse window/level: horizontal = width, vertical = centre (as OHIF, Weasis).
  windowDrag(d, sx, sy) {
    const started = performance.now();
    const dx = sx - d.sx;
    const dy = sy - d.sy;
    const step = d.sensitivity;
    const width = Math.max(1, d.width + dx * step);
    const center = d.center + dy * step;
    this.window = {
      center, width, function: "LINEAR_EXACT", invert: d.invert, label: "manual",
    };
    this.rewindow();
    this.draw();
    if (this.frame !== null) {
      cancelAnimationFrame(this.frame);
      this.frame = null;
    }
    const now = performance.now();
    this.wlFrames.push({ t: now, cost: now - started });
    if (this.wlFrames.length > 400) this.wlFrames.shift();
    this.root.dataset.wlFrames = String(this.wlFrames.length);
  }

  startWindowDrag(sx, sy) {
    const w = this.window || { center: 0, width: 1, invert: false };
    // The film's value range over ~1000 screen px.
    const range = this.mapping.range || [0, 65535 * Math.abs(this.mapping.scale)];
    const span = Math.abs(range[1] - range[0]) || 1;
    let width = Number(w.width);
    let center = Number(w.center);
    if (w.function === "LINEAR") {
      width = Math.max(1, width - 1); // the same window, written as LINEAR_EXACT
      center -= 0.5;
    }
    this.drag = {
      kind: "window", sx, sy, width, center, invert: Boolean(w.invert),
      sensitivity: Math.max(span / 1000, 1e-6), moved: false,
    };
    this.canvas.classList.add("vh-windowing");
  }

  finishWindowDrag(d) {
    this.canvas.classList.remove("vh-windowing");
    if (!d.moved) return;
    this.windowSeq = Math.max(this.windowSeq + 1, Date.now());
    this.setStateValue("window", {
      center: this.window.center, width: this.window.width, seq: this.windowSeq,
    });
  }

  // ------------------------------------------------------------ geometry

  toScreen([x, y]) {
    return [x * this.view.zoom + this.view.tx, y * this.view.zoom + this.view.ty];
  }

  toFilm(sx, sy) {
    return [(sx - this.view.tx) / this.view.zoom, (sy - this.view.ty) / this.view.zoom];
  }

  clampToFilm([x, y]) {
    return [
      Math.min(Math.max(x, -0.5), this.columns - 0.5),
      Math.min(Math.max(y, -0.5), this.rows - 0.5),
    ];
  }

  fitZoom() {
    const w = this.canvas.clientWidth || 1;
    const h = this.canvas.clientHeight || 1;
    return Math.min(w / this.columns, h / this.rows) * 0.96;
  }

  fit() {
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    if (!w || !h) return;
    const zoom = this.fitZoom();
    this.view = {
      zoom,
      tx: (w - this.columns * zoom) / 2 + 0.5 * zoom,
      ty: (h - this.rows * zoom) / 2 + 0.5 * zoom,
    };
    this.fitted = true;
    this.viewChanged();
  }

  zoomAt(factor, sx, sy) {
    const minZoom = this.fitZoom() / 4;
    const zoom = Math.min(Math.max(this.view.zoom * factor, minZoom), MAX_ZOOM);
    const [fx, fy] = this.toFilm(sx, sy);
    this.view = { zoom, tx: sx - fx * zoom, ty: sy - fy * zoom };
    this.fitted = false;
    this.viewChanged();
  }

  // The view moved: draw, and ask for the full-resolution region once it settles.
  viewChanged() {
    this.requestDraw();
    clearTimeout(this.cropTimer);
    this.cropTimer = setTimeout(() => this.askCrop(), CROP_DELAY_MS);
  }

  // Zoomed past the display copy (one of its pixels wider than a screen pixel):
  // ask Python for the visible region at full resolution, unless it is here already.
  // Whether the full-resolution region covers the whole canvas's view.
  cropCovers() {
    const c = this.crop;
    if (!c) return false;
    const [ax, ay] = this.toFilm(0, 0);
    const [bx, by] = this.toFilm(this.canvas.clientWidth, this.canvas.clientHeight);
    return c.x0 <= Math.max(0, Math.floor(ax)) && c.y0 <= Math.max(0, Math.floor(ay))
      && c.x1 >= Math.min(this.columns, Math.ceil(bx)) && c.y1 >= Math.min(this.rows, Math.ceil(by));
  }

  askCrop() {
    const v = this.values;
    if (!v || v.width >= this.columns) return;
    const dpr = window.devicePixelRatio || 1;
    const screenPerDisplay = (this.view.zoom * dpr * this.columns) / v.width;
    if (screenPerDisplay <= 1.05) return;
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    const [ax, ay] = this.toFilm(0, 0);
    const [bx, by] = this.toFilm(w, h);
    const mx = (bx - ax) * 0.15;
    const my = (by - ay) * 0.15;
    const region = {
      x0: Math.max(0, Math.floor(ax - mx)),
      y0: Math.max(0, Math.floor(ay - my)),
      x1: Math.min(this.columns, Math.ceil(bx + mx)),
      y1: Math.min(this.rows, Math.ceil(by + my)),
    };
    if (region.x1 <= region.x0 || region.y1 <= region.y0) return;
    const covers = (c) => c && c.x0 <= Math.max(0, Math.floor(ax)) && c.y0 <= Math.max(0, Math.floor(ay))
      && c.x1 >= Math.min(this.columns, Math.ceil(bx)) && c.y1 >= Math.min(this.rows, Math.ceil(by))
      && c.width >= (c.x1 - c.x0) * 0.999;
    if (covers(this.crop) || covers(this.cropAsked)) return;
    this.cropAsked = { ...region, width: region.x1 - region.x0 };
    this.setStateValue("crop", region);
  }

  zoomCentre(factor) {
    this.zoomAt(factor, this.canvas.clientWidth / 2, this.canvas.clientHeight / 2);
  }

  oneToOne() {
    this.zoomCentre(1 / this.view.zoom);
  }

  // The viewer fills the window below its top (or the whole screen in full-screen mode).
  fitHeight() {
    if (this.fullscreen) {
      this.viewport.style.height = "";
      return;
    }
    const top = this.pageTop();
    const wanted = Math.max(MIN_HEIGHT, Math.floor(window.innerHeight - top - BOTTOM_GAP));
    const height = Number.isFinite(wanted) ? wanted : this.height;
    if (this.viewport.style.height !== `${height}px`) {
      this.viewport.style.height = `${height}px`;
    }
  }

  // The viewport's ancestors, nearest first, across the shadow root.
  *ancestors() {
    let el = this.viewport.parentElement || (this.viewport.parentNode && this.viewport.parentNode.host);
    while (el) {
      yield el;
      el = el.parentElement || (el.parentNode && el.parentNode.host) || null;
    }
  }

  // The block of the page holding the viewer (Streamlit's main block); the
  // document's body outside Streamlit.
  pageBlock() {
    for (const el of this.ancestors()) {
      if (el.dataset && el.dataset.testid === "stMainBlockContainer") return el;
    }
    return document.body;
  }

  // The viewport's top in the page, however far the page is scrolled: Streamlit
  // scrolls its main block, not the window, so every scrolled ancestor counts;
  // the viewer keeps its height while the page scrolls.
  pageTop() {
    let top = this.viewport.getBoundingClientRect().top;
    for (const el of this.ancestors()) top += el.scrollTop;
    return top;
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = this.viewport.clientWidth;
    const h = this.viewport.clientHeight;
    if (!w || !h) return;
    const pw = Math.round(w * dpr);
    const ph = Math.round(h * dpr);
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      const before = this.canvasSize;
      this.canvas.width = pw;
      this.canvas.height = ph;
      this.canvasSize = [w, h];
      if (this.image && (this.fitted || !before)) {
        this.fit(); // refit a fitted view to the new size
      } else if (this.image && before) {
        // Keep the film point at the centre where it was.
        this.view.tx += (w - before[0]) / 2;
        this.view.ty += (h - before[1]) / 2;
        this.viewChanged();
      }
      this.requestDraw();
    }
  }

  setFullscreen(on) {
    this.fullscreen = on;
    this.root.classList.toggle("vh-fullscreen", on);
    this.root.dataset.fullscreen = String(on);
    // The browser's full screen too, where it allows it (the element may sit in a
    // shadow root, so document.fullscreenElement is then its host).
    if (on && this.root.requestFullscreen && !document.fullscreenElement) {
      this.root.requestFullscreen().catch(() => {});
    } else if (!on && document.fullscreenElement && document.exitFullscreen) {
      document.exitFullscreen().catch(() => {});
    }
    this.fitHeight();
    this.fitted = true;
    this.resize();
    this.toast(on ? "Full screen: F or Esc to leave" : "Full screen off");
  }

  // ------------------------------------------------------------- queries

  nextMissing(level) {
    const pts = this.points[level] || {};
    for (const name of this.pointNames) {
      if (!(name in pts)) return name;
    }
    return null;
  }

  countPoints(level) {
    return Object.keys(this.points[level] || {}).length;
  }

  // The point under (sx, sy): only the current level's points while placing, any
  // level's with `anyLevel` (Shift held).  Each point's reach shrinks with the
  // distance to the nearest point of another level, so that neighbouring
  // endplates a few screen pixels apart are never confused.
  hitTest(sx, sy, anyLevel = false) {
    let best = null;
    let bestDist = HIT_RADIUS;
    if (this.mode === "calibrate") {
      this.calibrationLine.forEach((p, index) => {
        const [px, py] = this.toScreen(p);
        const d = Math.hypot(px - sx, py - sy);
        if (d <= bestDist) {
          best = { kind: "calibration", index };
          bestDist = d;
        }
      });
      return best;
    }
    if (!this.overlay) return null;
    const screen = [];
    for (const level of Object.keys(this.points)) {
      for (const [name, p] of Object.entries(this.points[level])) {
        screen.push({ level, name, xy: this.toScreen(p) });
      }
    }
    for (const point of screen) {
      if (!anyLevel && point.level !== this.activeLevel) continue;
      const [px, py] = point.xy;
      const d = Math.hypot(px - sx, py - sy);
      if (d > bestDist) continue;
      let nearest = Infinity;
      for (const other of screen) {
        if (other.level === point.level) continue;
        nearest = Math.min(nearest, Math.hypot(other.xy[0] - px, other.xy[1] - py));
      }
      const reach = Math.max(MIN_HIT_RADIUS, Math.min(HIT_RADIUS, HIT_SHARE * nearest));
      if (d <= reach) {
        best = { kind: "point", level: point.level, name: point.name };
        bestDist = d;
      }
    }
    return best;
  }

  isComplete(level) {
    const pts = this.points[level] || {};
    return this.pointNames.length > 0 && this.pointNames.every((n) => n in pts);
  }

  // The next level to work on after `level`: the first incomplete one in the
  // direction of work, or null at the end of the spine.
  nextLevelAfter(level) {
    const step = this.direction === "up" ? -1 : 1;
    for (let i = this.levels.indexOf(level) + step; i >= 0 && i < this.levels.length; i += step) {
      if (!this.isComplete(this.levels[i])) return this.levels[i];
    }
    return null;
  }

  selectedPosition() {
    const s = this.selected;
    if (!s) return null;
    if (s.kind === "calibration") return this.calibrationLine[s.index] || null;
    return (this.points[s.level] || {})[s.name] || null;
  }

  setSelectedPosition(xy) {
    const s = this.selected;
    if (!s) return;
    if (s.kind === "calibration") {
      this.calibrationLine[s.index] = xy;
    } else {
      this.points[s.level] = this.points[s.level] || {};
      this.points[s.level][s.name] = xy;
    }
  }

  dropStaleSelection() {
    if (this.selected && !this.selectedPosition()) this.selected = null;
  }

  // -------------------------------------------------------------- edits

  snapshot() {
    return JSON.stringify({ v: this.points, c: this.calibrationLine });
  }

  pushHistory() {
    const snap = this.snapshot();
    if (this.historyIndex >= 0 && this.history[this.historyIndex] === snap) return;
    this.history = this.history.slice(0, this.historyIndex + 1);
    this.history.push(snap);
    if (this.history.length > 200) this.history.shift();
    this.historyIndex = this.history.length - 1;
  }

  commit() {
    clearTimeout(this.nudgeTimer);
    this.nudgeTimer = null;
    this.pushHistory();
    this.send();
  }

  send() {
    this.rev += 1;
    this.root.dataset.rev = String(this.rev);
    // Drop empty levels so that the Python side sees exactly what is drawn.
    const vertebrae = {};
    for (const level of this.levels) {
      const pts = this.points[level];
      if (pts && Object.keys(pts).length) vertebrae[level] = pts;
    }
    this.setStateValue("edit", {
      rev: this.rev,
      vertebrae,
      calibration_line: this.calibrationLine.length ? this.calibrationLine : null,
      selected: this.selectionReport(),
    });
    this.updateChrome();
    this.requestDraw();
  }

  // The selected landmark as reported to Python (null for none or a calibration end).
  selectionReport() {
    const s = this.selected;
    const key = s && s.kind === "point" ? JSON.stringify([s.level, s.name]) : "null";
    if (key !== this.publishedSelection) {
      this.publishedSelection = key;
      this.selectionSeq += 1;
    }
    this.root.dataset.selected = s && s.kind === "point" ? `${s.level}:${s.name}` : "";
    const [level, name] = key === "null" ? [null, null] : JSON.parse(key);
    return { level, name, seq: this.selectionSeq };
  }

  // Tell Python about a selection change that no edit carries (a click, Tab, Esc).
  publishSelection() {
    const before = this.publishedSelection;
    const report = this.selectionReport();
    if (this.publishedSelection !== before) this.setStateValue("selected", report);
  }

  restore(snap) {
    const parsed = JSON.parse(snap);
    this.points = parsed.v || {};
    this.calibrationLine = parsed.c || [];
    this.dropStaleSelection();
    this.send();
  }

  undo() {
    if (this.historyIndex <= 0) return this.toast("Nothing to undo");
    this.historyIndex -= 1;
    this.restore(this.history[this.historyIndex]);
  }

  redo() {
    if (this.historyIndex >= this.history.length - 1) return this.toast("Nothing to redo");
    this.historyIndex += 1;
    this.restore(this.history[this.historyIndex]);
  }

  insideFilm([x, y]) {
    return x >= -0.5 && y >= -0.5 && x <= this.columns - 0.5 && y <= this.rows - 0.5;
  }

  placeAt(xy) {
    if (!this.insideFilm(xy)) return this.toast("Click on the film to place a point");
    const p = xy.map((v) => Math.round(v * 100) / 100);
    if (this.mode === "calibrate") {
      if (this.calibrationLine.length >= 2) this.calibrationLine = [];
      this.calibrationLine.push(p);
      this.selected = { kind: "calibration", index: this.calibrationLine.length - 1 };
      this.commit();
      return;
    }
    const level = this.activeLevel;
    if (!level) return this.toast("Choose a level first");
    const name = this.nextMissing(level);
    if (!name) {
      return this.toast(`${level} is complete: press N for the next level, or drag a point`);
    }
    this.points[level] = this.points[level] || {};
    this.points[level][name] = p;
    this.selected = { kind: "point", level, name };
    this.commit();
    if (this.isComplete(level)) {
      const next = this.nextLevelAfter(level);
      if (next) {
        this.setLevel(next, `${level} complete \u2014 now placing ${next}`);
      } else {
        this.toast(`${level} complete`);
      }
    }
  }

  deleteSelected() {
    const s = this.selected;
    if (!s) return this.toast("Select a point first (click it)");
    if (s.kind === "calibration") {
      this.calibrationLine.splice(s.index, 1);
    } else {
      delete this.points[s.level][s.name];
      if (!Object.keys(this.points[s.level]).length) delete this.points[s.level];
    }
    this.selected = null;
    this.commit();
  }

  nudge(dx, dy, big) {
    const pos = this.selectedPosition();
    if (!pos) return;
    const step = (this.view.zoom >= 4 ? 0.25 : 1) * (big ? 10 : 1);
    this.setSelectedPosition(this.clampToFilm([pos[0] + dx * step, pos[1] + dy * step]));
    this.requestDraw();
    this.updateHud();
    clearTimeout(this.nudgeTimer);
    this.nudgeTimer = setTimeout(() => this.commit(), NUDGE_COMMIT_DELAY_MS);
  }

  changeLevel(step) {
    if (!this.levels.length) return;
    let index = this.levels.indexOf(this.activeLevel);
    if (index < 0) index = step > 0 ? -1 : this.levels.length;
    const next = this.levels[Math.min(Math.max(index + step, 0), this.levels.length - 1)];
    if (next === this.activeLevel) return;
    this.setLevel(next, `Now placing ${next}`);
  }

  // Every change of level is said (status line and a message), never silent.
  setLevel(level, message, keepSelection = false) {
    if (level === this.activeLevel) return;
    this.previousLevel = this.activeLevel;
    this.pendingLevel = { from: this.activeLevel, until: performance.now() + LEVEL_ECHO_MS };
    this.activeLevel = level;
    if (!keepSelection) this.selected = null;
    this.setStateValue("active_level", level);
    this.toast(message || `Now placing ${level}`);
    this.updateChrome();
    this.requestDraw();
  }

  toggleDirection() {
    this.direction = this.direction === "up" ? "down" : "up";
    try {
      window.localStorage.setItem(DIRECTION_KEY, this.direction);
    } catch (err) {
      // private mode: the choice lasts this page
    }
    this.toast(this.direction === "up"
      ? "After six points: the level above (towards the head)"
      : "After six points: the level below (towards the sacrum)");
    this.updateChrome();
  }

  toggleOverlay() {
    this.overlay = !this.overlay;
    if (!this.overlay) this.selected = null;
    this.root.dataset.overlay = String(this.overlay);
    this.toast(this.overlay ? "Overlay shown" : "Overlay hidden: H to show it");
    this.requestDraw();
  }

  toggleFill() {
    this.fillDim = !this.fillDim;
    this.root.dataset.fill = this.fillDim ? "dim" : "normal";
    this.toast(this.fillDim ? "Fill off: outlines only (D)" : "Fill on (D)");
    this.requestDraw();
  }

  toggleWindowMode() {
    this.wlMode = !this.wlMode;
    this.root.dataset.wlMode = String(this.wlMode);
    this.canvas.classList.toggle("vh-wl-mode", this.wlMode);
    this.toast(this.wlMode
      ? "Window/level: drag (left/right = width, up/down = centre); W to leave"
      : "Window/level mode off: clicks place points");
    this.updateChrome();
  }

  cycleSelection(step) {
    const level = this.selected?.kind === "point" ? this.selected.level : this.activeLevel;
    const names = this.pointNames.filter((n) => (this.points[level] || {})[n]);
    if (!names.length) return;
    let index = this.selected?.kind === "point" ? names.indexOf(this.selected.name) : -1;
    index = (index + step + names.length) % names.length;
    this.selected = { kind: "point", level, name: names[index] };
    this.publishSelection();
    this.requestDraw();
    this.updateHud();
  }

  // -------------------------------------------------------------- events

  bindEvents() {
    const c = this.canvas;
    this.on(c, "pointerdown", (e) => this.onPointerDown(e));
    this.on(c, "pointermove", (e) => this.onPointerMove(e));
    this.on(c, "pointerup", (e) => this.onPointerUp(e));
    this.on(c, "pointercancel", () => this.cancelDrag());
    this.on(c, "pointerleave", () => {
      this.mouse = null;
      this.updateHud();
    });
    this.on(c, "wheel", (e) => this.onWheel(e), { passive: false });
    this.on(c, "contextmenu", (e) => e.preventDefault());
    this.on(c, "auxclick", (e) => e.preventDefault());
    this.on(this.root, "keydown", (e) => this.onKeyDown(e));
    this.on(this.root, "keyup", (e) => {
      if (e.key === " ") {
        this.spaceDown = false;
        this.canvas.classList.remove("vh-pan-ready");
      }
    });
    this.on(this.root, "focus", () => this.root.classList.add("vh-focused"));
    this.on(this.root, "blur", () => {
      this.root.classList.remove("vh-focused");
      this.spaceDown = false;
    });
    this.on(this.helpEl, "pointerdown", () => this.toggleHelp(false));
    for (const [action, button] of Object.entries(this.buttons)) {
      this.on(button, "click", (e) => {
        e.preventDefault();
        this.root.focus({ preventScroll: true });
        this.runAction(action);
      });
    }
  }

  runAction(action) {
    switch (action) {
      case "undo": return this.undo();
      case "redo": return this.redo();
      case "delete": return this.deleteSelected();
      case "fit": return this.fit();
      case "zoom-in": return this.zoomCentre(1.25);
      case "zoom-out": return this.zoomCentre(0.8);
      case "help": return this.toggleHelp();
      case "next-level": return this.changeLevel(1);
      case "prev-level": return this.changeLevel(-1);
      case "direction": return this.toggleDirection();
      case "overlay": return this.toggleOverlay();
      case "window-mode": return this.toggleWindowMode();
      case "fullscreen": return this.setFullscreen(!this.fullscreen);
      default: return undefined;
    }
  }

  localXY(e) {
    const rect = this.canvas.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  }

  onPointerDown(e) {
    this.root.focus({ preventScroll: true });
    const [sx, sy] = this.localXY(e);
    try {
      this.canvas.setPointerCapture(e.pointerId);
    } catch (err) {
      // a pointer the browser does not track (a synthetic event): no capture needed
    }
    if (e.button === 1 || (e.button === 0 && this.spaceDown)) {
      e.preventDefault();
      this.drag = { kind: "pan", sx, sy, tx: this.view.tx, ty: this.view.ty, moved: true };
      this.canvas.classList.add("vh-panning");
      return;
    }
    if (e.button === 2 || (e.button === 0 && this.wlMode)) {
      e.preventDefault();
      this.startWindowDrag(sx, sy);
      return;
    }
    if (e.button !== 0) return;
    const hit = this.hitTest(sx, sy, e.shiftKey);
    if (hit) {
      this.selected = hit;
      if (hit.kind === "point" && hit.level !== this.activeLevel && this.mode !== "calibrate") {
        this.setLevel(hit.level, `Editing ${hit.level} (Shift+click)`, true);
      }
      const pos = this.selectedPosition();
      this.drag = { kind: "point", sx, sy, orig: pos.slice(), moved: false };
      this.updateChrome();
      this.requestDraw();
      return;
    }
    this.drag = { kind: "pending", sx, sy, tx: this.view.tx, ty: this.view.ty, moved: false };
  }

  onPointerMove(e) {
    const [sx, sy] = this.localXY(e);
    this.mouse = [sx, sy];
    const d = this.drag;
    if (!d) {
      const hit = this.wlMode ? null : this.hitTest(sx, sy, e.shiftKey);
      this.canvas.classList.toggle("vh-over-point", Boolean(hit));
      this.updateHud();
      return;
    }
    const dist = Math.hypot(sx - d.sx, sy - d.sy);
    if (d.kind === "window") {
      if (dist > 0) d.moved = true;
      this.windowDrag(d, sx, sy);
      return;
    }
    if (d.kind === "pending" && dist > CLICK_SLOP) {
      d.kind = "pan";
      d.moved = true;
      this.canvas.classList.add("vh-panning");
    }
    if (d.kind === "pan") {
      this.view.tx = d.tx + (sx - d.sx);
      this.view.ty = d.ty + (sy - d.sy);
      this.fitted = false;
      this.viewChanged();
    } else if (d.kind === "point") {
      if (!d.moved && dist <= 2) return;
      d.moved = true;
      const [ox, oy] = d.orig;
      const dx = (sx - d.sx) / this.view.zoom;
      const dy = (sy - d.sy) / this.view.zoom;
      const p = this.clampToFilm([ox + dx, oy + dy]).map((v) => Math.round(v * 100) / 100);
      this.setSelectedPosition(p);
      this.requestDraw();
    }
    this.updateHud();
  }

  onPointerUp(e) {
    const d = this.drag;
    this.drag = null;
    this.canvas.classList.remove("vh-panning");
    if (this.canvas.hasPointerCapture(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
    if (!d) return;
    if (d.kind === "window") {
      this.finishWindowDrag(d);
    } else if (d.kind === "point" && d.moved) {
      this.commit();
    } else if (d.kind === "point") {
      this.publishSelection(); // a click on a point selects it
    } else if (d.kind === "pending") {
      this.selected = null;
      const [sx, sy] = this.localXY(e);
      this.placeAt(this.toFilm(sx, sy));
      this.publishSelection(); // no-op when placeAt sent an edit
    }
    this.requestDraw();
  }

  cancelDrag() {
    const d = this.drag;
    this.drag = null;
    this.canvas.classList.remove("vh-panning");
    if (d && d.kind === "window") this.finishWindowDrag(d);
    if (d && d.kind === "point" && d.moved) {
      this.setSelectedPosition(d.orig);
      this.requestDraw();
    }
  }

  onWheel(e) {
    e.preventDefault();
    const [sx, sy] = this.localXY(e);
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
    this.zoomAt(Math.exp(-delta * 0.0015), sx, sy);
    this.mouse = [sx, sy];
    this.updateHud();
  }

  onKeyDown(e) {
    if (e.target && e.target.tagName === "INPUT") return;
    const ctrl = e.ctrlKey || e.metaKey;
    const key = e.key;
    let handled = true;
    if (ctrl && (key === "z" || key === "Z")) {
      if (e.shiftKey) this.redo();
      else this.undo();
    } else if (ctrl && (key === "y" || key === "Y")) {
      this.redo();
    } else if (ctrl) {
      handled = false;
    } else if (key === "+" || key === "=") {
      this.zoomCentre(1.25);
    } else if (key === "-" || key === "_") {
      this.zoomCentre(0.8);
    } else if (key === "0") {
      this.fit();
    } else if (key === "1") {
      this.oneToOne();
    } else if (key === "ArrowLeft" || key === "ArrowRight" || key === "ArrowUp" || key === "ArrowDown") {
      const dx = key === "ArrowLeft" ? -1 : key === "ArrowRight" ? 1 : 0;
      const dy = key === "ArrowUp" ? -1 : key === "ArrowDown" ? 1 : 0;
      if (this.selected) {
        this.nudge(dx, dy, e.shiftKey);
      } else {
        this.view.tx -= dx * 60;
        this.view.ty -= dy * 60;
        this.fitted = false;
        this.viewChanged();
      }
    } else if (key === "Delete" || key === "Backspace") {
      this.deleteSelected();
    } else if (key === "Escape") {
      if (!this.helpEl.hidden) this.toggleHelp(false);
      else if (this.drag) this.cancelDrag();
      else if (this.fullscreen) this.setFullscreen(false);
      else if (this.wlMode) this.toggleWindowMode();
      else {
        this.selected = null;
        this.publishSelection();
      }
      this.requestDraw();
    } else if (key === "n" || key === "N") {
      this.changeLevel(e.shiftKey ? -1 : 1);
    } else if (key === "Tab") {
      this.cycleSelection(e.shiftKey ? -1 : 1);
    } else if (key === "?") {
      this.toggleHelp();
    } else if (key === "h" || key === "H") {
      this.toggleOverlay();
    } else if (key === "d" || key === "D") {
      this.toggleFill();
    } else if (key === "f" || key === "F") {
      this.setFullscreen(!this.fullscreen);
    } else if (key === "w" || key === "W") {
      this.toggleWindowMode();
    } else if (key === " ") {
      this.spaceDown = true;
      this.canvas.classList.add("vh-pan-ready");
    } else {
      handled = false;
    }
    if (handled) {
      e.preventDefault();
      e.stopPropagation();
    }
  }

  toggleHelp(show) {
    const visible = show === undefined ? this.helpEl.hidden : show;
    this.helpEl.hidden = !visible;
  }

  toast(message) {
    this.toastEl.textContent = message;
    this.toastEl.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => {
      this.toastEl.hidden = true;
    }, 2600);
  }

  // ------------------------------------------------------------- drawing

  updateChrome() {
    const calibrating = this.mode === "calibrate";
    this.modeBadge.hidden = !calibrating;
    let text;
    let done = false;
    if (calibrating) {
      const n = this.calibrationLine.length;
      text = n < 2
        ? `Click the ${n === 0 ? "first" : "second"} end of a line of known length (${n + 1}/2)`
        : "Line drawn: enter its length in mm beside the viewer, or drag its ends";
    } else if (!this.activeLevel) {
      text = "Choose a level";
    } else {
      const name = this.nextMissing(this.activeLevel);
      const count = this.countPoints(this.activeLevel);
      if (name) {
        const placed = this.pointNames.indexOf(name) + 1;
        text = `${this.activeLevel}: ${name} (${placed}/${this.pointNames.length})`;
      } else {
        text = `${this.activeLevel}: complete (${count}/${this.pointNames.length}) \u2014 N for the next level`;
        done = true;
      }
      if (this.wlMode) text = `Window/level mode (W) \u00b7 ${text}`;
    }
    this.nextEl.textContent = text;
    this.nextEl.classList.toggle("vh-done", done);
    this.buttons.undo.disabled = this.historyIndex <= 0;
    this.buttons.redo.disabled = this.historyIndex >= this.history.length - 1;
    this.buttons.delete.disabled = !this.selected;
    if (this.buttons.direction) {
      this.buttons.direction.textContent = this.direction === "up" ? "Then \u2191" : "Then \u2193";
      this.buttons.direction.title = this.direction === "up"
        ? "After six points, go to the level above (click for below)"
        : "After six points, go to the level below (click for above)";
    }
    if (this.buttons["window-mode"]) {
      this.buttons["window-mode"].classList.toggle("vh-on", this.wlMode);
    }
    if (this.buttons.overlay) this.buttons.overlay.classList.toggle("vh-on", !this.overlay);
    if (this.badgeEl) {
      const badge = this.badge;
      this.badgeEl.hidden = !badge;
      if (badge) {
        this.badgeEl.textContent = badge.text;
        this.badgeEl.title = badge.title || badge.text;
        this.badgeEl.classList.toggle("vh-uncalibrated", !badge.calibrated);
      }
    }
    this.root.dataset.activeLevel = this.activeLevel || "";
    this.root.dataset.mode = this.mode;
    this.root.dataset.direction = this.direction;
  }

  updateHud() {
    const parts = [];
    if (this.mouse) {
      const [x, y] = this.toFilm(...this.mouse);
      if (x >= -0.5 && y >= -0.5 && x <= this.columns - 0.5 && y <= this.rows - 0.5) {
        parts.push(`x ${x.toFixed(1)}  y ${y.toFixed(1)} px`);
      }
    }
    const sel = this.selectedPosition();
    if (sel && this.selected.kind === "point") {
      parts.push(`${this.selected.level} ${shortName(this.selected.name)} (${sel[0].toFixed(2)}, ${sel[1].toFixed(2)})`);
    }
    this.hudLeft.textContent = parts.join("   \u00b7   ");
    const sharp = this.crop && this.crop.width >= (this.crop.x1 - this.crop.x0) && this.cropCovers()
      ? "   \u00b7   full resolution" : "";
    this.hudRight.textContent = `${this.columns} \u00d7 ${this.rows} px   \u00b7   zoom ${(this.view.zoom * 100).toFixed(this.view.zoom < 0.1 ? 1 : 0)} %${sharp}`;
    this.root.dataset.view = JSON.stringify(this.view);
  }

  requestDraw() {
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  draw() {
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#0a0c0f";
    ctx.fillRect(0, 0, w, h);
    if (this.image) {
      const { zoom, tx, ty } = this.view;
      ctx.save();
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      // The display image covers the full-resolution extent [-0.5, N - 0.5].
      ctx.drawImage(this.image, tx - 0.5 * zoom, ty - 0.5 * zoom, this.columns * zoom, this.rows * zoom);
      const c = this.crop;
      if (c && this.view.zoom * this.columns > this.values.width) {
        // The full-resolution region over its place on the film.
        ctx.drawImage(
          c.canvas, tx + (c.x0 - 0.5) * zoom, ty + (c.y0 - 0.5) * zoom,
          (c.x1 - c.x0) * zoom, (c.y1 - c.y0) * zoom,
        );
      }
      ctx.restore();
      if (!this.filmDrawn) {
        // The first frame with the film on screen, for timing the app's start
        // (``performance.getEntriesByName("vheight:film-drawn")``).
        this.filmDrawn = true;
        performance.mark("vheight:film-drawn", { detail: { film: this.filmId } });
      }
      if (this.announceDrawn && !this.codesReported && this.values && this.image === this.values.canvas) {
        // The film's codes are on screen: Python may now start what it held back.
        this.codesReported = true;
        this.setStateValue("drawn", this.filmId);
      }
    }
    if (this.overlay) {
      this.labelSlots = [];
      for (const level of this.levels) {
        if (this.points[level]) this.drawVertebra(level);
      }
    }
    if (this.mode === "calibrate") this.drawCalibration();
    this.updateHud();
    this.updateChrome();
  }

  vertebraColour(level) {
    const pts = this.points[level] || {};
    const complete = this.pointNames.every((n) => n in pts);
    const grade = this.grades[level];
    if (!complete || grade === null || grade === undefined) return INCOMPLETE_COLOUR;
    return GRADE_COLOURS[grade] || INCOMPLETE_COLOUR;
  }

  drawVertebra(level) {
    const ctx = this.ctx;
    const pts = this.points[level];
    const colour = this.vertebraColour(level);
    const active = level === this.activeLevel && this.mode !== "calibrate";
    const S = (name) => (pts[name] ? this.toScreen(pts[name]) : null);
    const sa = S("superior_anterior");
    const sm = S("superior_middle");
    const sp = S("superior_posterior");
    const ia = S("inferior_anterior");
    const im = S("inferior_middle");
    const ip = S("inferior_posterior");
    const dim = this.mode === "calibrate" ? 0.45 : 1;

    ctx.save();
    ctx.globalAlpha = dim;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";

    // Body outline, lightly filled.
    if (sa && sp && ip && ia) {
      ctx.beginPath();
      ctx.moveTo(...sa);
      if (sm) ctx.lineTo(...sm);
      ctx.lineTo(...sp);
      ctx.lineTo(...ip);
      if (im) ctx.lineTo(...im);
      ctx.lineTo(...ia);
      ctx.closePath();
      if (!this.fillDim) {
        ctx.fillStyle = withAlpha(colour, active ? 0.12 : 0.07);
        ctx.fill();
      }
      if (this.treated.has(level)) {
        ctx.save();
        ctx.clip();
        ctx.strokeStyle = withAlpha(colour, 0.35);
        ctx.lineWidth = 1;
        const xs = [sa[0], sp[0], ip[0], ia[0]];
        const ys = [sa[1], sp[1], ip[1], ia[1]];
        const x0 = Math.min(...xs);
        const x1 = Math.max(...xs);
        const y0 = Math.min(...ys);
        const y1 = Math.max(...ys);
        ctx.beginPath();
        for (let k = x0 - (y1 - y0); k < x1; k += 9) {
          ctx.moveTo(k, y1);
          ctx.lineTo(k + (y1 - y0), y0);
        }
        ctx.stroke();
        ctx.restore();
      }
    }

    // Endplates.
    ctx.strokeStyle = colour;
    ctx.lineWidth = active ? 2.2 : 1.6;
    for (const line of [[sa, sm, sp], [ia, im, ip]]) {
      const present = line.filter(Boolean);
      if (present.length < 2) continue;
      ctx.beginPath();
      ctx.moveTo(...present[0]);
      for (const p of present.slice(1)) ctx.lineTo(...p);
      ctx.stroke();
    }

    // Anterior, middle and posterior heights.
    ctx.setLineDash([5, 4]);
    ctx.lineWidth = 1.3;
    ctx.strokeStyle = withAlpha("#ffffff", 0.85);
    for (const [a, b] of [[sa, ia], [sm, im], [sp, ip]]) {
      if (!a || !b) continue;
      ctx.beginPath();
      ctx.moveTo(...a);
      ctx.lineTo(...b);
      ctx.stroke();
    }
    ctx.setLineDash([]);

    // Landmarks.
    for (const name of this.pointNames) {
      const p = S(name);
      if (!p) continue;
      const isSelected = this.selected?.kind === "point" && this.selected.level === level
        && this.selected.name === name;
      const r = isSelected ? 6.5 : active ? 5 : 4;
      ctx.beginPath();
      ctx.arc(p[0], p[1], r, 0, Math.PI * 2);
      ctx.fillStyle = colour;
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#0a0c0f";
      ctx.stroke();
      if (isSelected) {
        ctx.beginPath();
        ctx.arc(p[0], p[1], r + 4, 0, Math.PI * 2);
        ctx.strokeStyle = "#ffffff";
        ctx.lineWidth = 1.5;
        ctx.stroke();
      }
    }

    // Label beside the anterior wall (outside the body).
    this.drawLabel(level, pts, colour, active);
    ctx.restore();
  }

  labelText(level, pts) {
    const grade = this.grades[level];
    const complete = this.pointNames.every((n) => n in pts);
    let title = level;
    if (complete && grade !== null && grade !== undefined) title += `  G${grade}`;
    else if (!complete) title += `  ${Object.keys(pts).length}/${this.pointNames.length}`;
    if (this.treated.has(level)) title += "  \u2022 treated";
    const h = this.heights[level];
    let numbers = "";
    if (h && complete) {
      const f = (v) => (v === null || v === undefined ? "\u2013" : Number(v).toFixed(1));
      numbers = `Ha ${f(h.ha)}  Hm ${f(h.hm)}  Hp ${f(h.hp)} ${h.unit || ""}`.trim();
    }
    return { title, numbers };
  }

  // Level, grade and heights beside the vertebra (outside the body, on the
  // anterior side), at a fixed screen size whatever the zoom; labels are
  // stacked so that neighbours never overlap.
  drawLabel(level, pts, colour, active) {
    const ctx = this.ctx;
    const screen = Object.values(pts).map((p) => this.toScreen(p));
    if (!screen.length) return;
    const cy = screen.reduce((s, p) => s + p[1], 0) / screen.length;
    let dirX = -1;
    const ant = [pts.superior_anterior, pts.inferior_anterior].filter(Boolean);
    const post = [pts.superior_posterior, pts.inferior_posterior].filter(Boolean);
    if (ant.length && post.length) {
      const ax = ant.reduce((s, p) => s + p[0], 0) / ant.length;
      const px = post.reduce((s, p) => s + p[0], 0) / post.length;
      dirX = ax >= px ? 1 : -1;
    }
    const xs = screen.map((p) => p[0]);
    const edge = dirX > 0 ? Math.max(...xs) : Math.min(...xs);
    const { title, numbers } = this.labelText(level, pts);
    const lineHeight = 15;
    const lines = numbers ? [title, numbers] : [title];
    ctx.font = `${active ? 700 : 600} 12.5px Inter, "Source Sans Pro", system-ui, sans-serif`;
    const titleWidth = ctx.measureText(title).width;
    ctx.font = "500 11.5px Inter, \"Source Sans Pro\", system-ui, sans-serif";
    const numberWidth = numbers ? ctx.measureText(numbers).width : 0;
    const tw = Math.max(titleWidth, numberWidth);
    const boxH = lines.length * lineHeight + 6;
    const boxW = tw + 12;
    // Beside the body, on the other side when that one is off the canvas, and
    // inside the canvas when the body fills it (zoomed in): always readable.
    const [cw, ch] = this.canvasSize || [Infinity, Infinity];
    const ys = screen.map((p) => p[1]);
    if (Math.max(...ys) < 0 || Math.min(...ys) > ch || Math.max(...xs) < 0 || Math.min(...xs) > cw) {
      return; // the body is off the canvas: no label pinned to its edge
    }
    const otherEdge = dirX > 0 ? Math.min(...xs) : Math.max(...xs);
    const beside = (side, from) => (side > 0 ? from + 14 : from - 14 - boxW);
    let x = beside(dirX, edge);
    if (x < 4 || x + boxW > cw - 4) {
      const flipped = beside(-dirX, otherEdge);
      x = flipped >= 4 && flipped + boxW <= cw - 4 ? flipped : x;
    }
    x = Math.max(4, Math.min(x, cw - boxW - 4));
    let y = Math.max(LABEL_MARGIN_Y, Math.min(cy - boxH / 2, ch - boxH - LABEL_MARGIN_Y));
    // Stack below any label already drawn on the same side that it would overlap.
    for (const slot of this.labelSlots || []) {
      const overlapX = x < slot.x + slot.w && slot.x < x + boxW;
      if (overlapX && y < slot.y + slot.h + 2 && slot.y < y + boxH) y = slot.y + slot.h + 2;
    }
    (this.labelSlots || (this.labelSlots = [])).push({ x, y, w: boxW, h: boxH });
    ctx.fillStyle = "rgba(10, 12, 15, 0.8)";
    roundRect(ctx, x, y, boxW, boxH, 4);
    ctx.fill();
    ctx.strokeStyle = colour;
    ctx.lineWidth = active ? 1.5 : 1;
    ctx.stroke();
    ctx.textBaseline = "middle";
    ctx.fillStyle = "#eef2f7";
    ctx.font = `${active ? 700 : 600} 12.5px Inter, "Source Sans Pro", system-ui, sans-serif`;
    ctx.fillText(title, x + 6, y + 3 + lineHeight / 2 + 0.5);
    if (numbers) {
      ctx.fillStyle = "#c9d3df";
      ctx.font = "500 11.5px Inter, \"Source Sans Pro\", system-ui, sans-serif";
      ctx.fillText(numbers, x + 6, y + 3 + lineHeight * 1.5 + 0.5);
    }
  }

  drawCalibration() {
    const ctx = this.ctx;
    const pts = this.calibrationLine.map((p) => this.toScreen(p));
    ctx.save();
    ctx.strokeStyle = CALIBRATION_COLOUR;
    ctx.fillStyle = CALIBRATION_COLOUR;
    ctx.lineWidth = 2;
    if (pts.length === 2) {
      ctx.beginPath();
      ctx.moveTo(...pts[0]);
      ctx.lineTo(...pts[1]);
      ctx.stroke();
      const [a, b] = this.calibrationLine;
      const len = Math.hypot(b[0] - a[0], b[1] - a[1]);
      const text = `${len.toFixed(1)} px`;
      ctx.font = "600 12.5px Inter, system-ui, sans-serif";
      const mx = (pts[0][0] + pts[1][0]) / 2;
      const my = (pts[0][1] + pts[1][1]) / 2;
      const tw = ctx.measureText(text).width;
      ctx.fillStyle = "rgba(10, 12, 15, 0.8)";
      roundRect(ctx, mx + 10, my - 10, tw + 12, 20, 4);
      ctx.fill();
      ctx.fillStyle = "#d6f1ff";
      ctx.textBaseline = "middle";
      ctx.fillText(text, mx + 16, my + 0.5);
    }
    pts.forEach((p, index) => {
      const isSelected = this.selected?.kind === "calibration" && this.selected.index === index;
      ctx.beginPath();
      ctx.moveTo(p[0] - 9, p[1]);
      ctx.lineTo(p[0] + 9, p[1]);
      ctx.moveTo(p[0], p[1] - 9);
      ctx.lineTo(p[0], p[1] + 9);
      ctx.strokeStyle = CALIBRATION_COLOUR;
      ctx.lineWidth = isSelected ? 2.5 : 1.5;
      ctx.stroke();
    });
    ctx.restore();
  }
}

function readDirection() {
  try {
    return window.localStorage.getItem(DIRECTION_KEY) === "up" ? "up" : "down";
  } catch (err) {
    return "down";
  }
}

function formatValue(value) {
  const v = Number(value);
  if (!Number.isFinite(v)) return "\u2013";
  return Math.abs(v) >= 100 ? String(Math.round(v)) : v.toFixed(Math.abs(v) >= 10 ? 1 : 2);
}

function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}

function resolveUrl(url) {
  if (!url || url.startsWith("data:") || /^[a-z]+:\/\//i.test(url)) return url;
  // Media URLs are server-absolute ("/media/..."); honour a base URL path.
  const base = window.location.pathname.replace(/\/[^/]*$/, "");
  return `${window.location.origin}${base}${url.startsWith("/") ? "" : "/"}${url}`;
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let editor = INSTANCES.get(parentElement);
  if (!editor) {
    editor = new Editor(parentElement);
    INSTANCES.set(parentElement, editor);
  }
  editor.setStateValue = setStateValue;
  editor.update(data);
  return () => {
    editor.destroy();
    INSTANCES.delete(parentElement);
  };
}

// lineguard inspection page: upload images, show score / decision / overlay, move the threshold, browse results.
// Decisions at a moved threshold are recomputed here from the normalised score (>= threshold is a defect);
// the region outline is recomputed from the normalised map PNG (grey value / 255 * map_png_scale).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {model: null, results: new Map(), current: null, key: localStorage.getItem("lineguard-key") || ""};

function threshold() { return parseFloat($("threshold").value); }
function decisionAt(result) { return result.normalized_score >= threshold() ? "defect" : "ok"; }

function message(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const headers = state.key ? {"X-API-Key": state.key} : {};
  const response = await fetch(path, {...options, headers});
  const body = await response.json().catch(() => ({detail: response.statusText}));
  if (!response.ok) {
    if (response.status === 401) $("key-box").hidden = false;
    throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  }
  return body;
}

async function loadModel() {
  try {
    state.model = await api("/v1/model");
    const m = state.model;
    $("model").textContent = `${m.method} (image size ${m.image_size}); thresholds: ${m.calibration}; ` +
      `lineguard ${m.version}`;
    await loadRecent();
  } catch (error) {
    $("model").textContent = `model information unavailable: ${error.message}`;
  }
}

async function loadRecent() {
  for (const item of await api("/v1/recent")) {
    if (!state.results.has(item.id)) state.results.set(item.id, {...item, full: null});
  }
  renderList();
}

async function inspectFiles(files) {
  if (!files.length) return;
  if (!state.model) await loadModel();
  if (!state.model) {
    message("the model information could not be loaded (API key?)", true);
    return;
  }
  // Test-batch methods score a batch against itself: send everything in one request.
  const batches = state.model && !state.model.uses_normal_images ? [files] : files.map((f) => [f]);
  let done = 0;
  for (const batch of batches) {
    const form = new FormData();
    const single = batch.length === 1 && state.model.uses_normal_images;
    for (const file of batch) form.append(single ? "file" : "files", file, file.name);
    message(`inspecting ${batch.map((f) => f.name).join(", ")}…`);
    try {
      const body = await api(single ? "/v1/inspect" : "/v1/inspect-batch", {method: "POST", body: form});
      for (const result of single ? [body] : body.results) {
        state.results.set(result.id, {...result, full: result});
        await show(result.id);
      }
      done += batch.length;
    } catch (error) {
      message(`${batch.map((f) => f.name).join(", ")}: ${error.message}`, true);
      return;
    }
  }
  message(`${done} image(s) inspected`);
}

function loadImage(base64) {
  const image = new Image();
  image.src = "data:image/png;base64," + base64;
  return image.decode().then(() => image);
}

async function show(id) {
  const entry = state.results.get(id);
  if (!entry.full) entry.full = await api(`/v1/results/${id}`);
  const full = entry.full;
  if (!full.overlay_png) {
    message(`result ${id} was requested without images: nothing to draw`, true);
    return;
  }
  if (!full.view) {
    const [overlay, map] = await Promise.all([loadImage(full.overlay_png), loadImage(full.map_png)]);
    const canvas = document.createElement("canvas");
    canvas.width = map.width;
    canvas.height = map.height;
    const context = canvas.getContext("2d", {willReadFrequently: true});
    context.drawImage(map, 0, 0);
    const grey = context.getImageData(0, 0, map.width, map.height).data;
    const values = new Float32Array(map.width * map.height);
    for (let i = 0; i < values.length; i++) values[i] = grey[4 * i] / 255 * state.model.map_png_scale;
    full.view = {overlay, values, width: map.width, height: map.height};
  }
  state.current = id;
  $("current").hidden = false;
  draw();
  renderList();
}

// Draw the overlay with the outline of {map >= threshold}; return the number of 8-connected regions.
function draw() {
  const entry = state.results.get(state.current);
  const {overlay, values, width, height} = entry.full.view;
  const canvas = $("view");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(overlay, 0, 0, width, height);
  const t = threshold();
  const inside = (x, y) => x >= 0 && y >= 0 && x < width && y < height && values[y * width + x] >= t;
  const pixels = context.getImageData(0, 0, width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (inside(x, y) && !(inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1))) {
        pixels.data.set([255, 255, 255, 255], 4 * (y * width + x));
      }
    }
  }
  context.putImageData(pixels, 0, 0);
  const decision = decisionAt(entry);
  $("filename").textContent = entry.filename;
  $("decision").textContent = decision;
  $("decision").className = decision;
  $("normalized-score").textContent = entry.normalized_score.toFixed(3);
  $("score").textContent = entry.score.toPrecision(4);
  $("regions").textContent = countRegions(values, width, height, t);
}

function countRegions(values, width, height, t) {
  const seen = new Uint8Array(values.length);
  let count = 0;
  for (let start = 0; start < values.length; start++) {
    if (seen[start] || values[start] < t) continue;
    count++;
    const stack = [start];
    seen[start] = 1;
    while (stack.length) {
      const i = stack.pop(), x = i % width, y = (i - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx, ny = y + dy, j = ny * width + nx;
          if (nx >= 0 && ny >= 0 && nx < width && ny < height && !seen[j] && values[j] >= t) {
            seen[j] = 1;
            stack.push(j);
          }
        }
      }
    }
  }
  return count;
}

function renderList() {
  const body = $("results");
  body.replaceChildren();
  const entries = [...state.results.values()].sort((a, b) => b.id - a.id);
  // The slider reaches past the highest score, so that every decision can be flipped.
  const highest = Math.max(0, ...entries.map((e) => e.normalized_score));
  $("threshold").max = Math.max(4, Math.ceil(highest + 0.5));
  let defects = 0;
  for (const entry of entries) {
    const decision = decisionAt(entry);
    defects += decision === "defect";
    const row = document.createElement("tr");
    row.className = entry.id === state.current ? "selected result" : "result";
    row.dataset.id = entry.id;
    row.dataset.decision = decision;
    for (const [text, css] of [[entry.id, ""], [entry.filename, ""], [entry.normalized_score.toFixed(3), ""],
                               [decision, decision]]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      cell.className = css;
      row.appendChild(cell);
    }
    row.addEventListener("click", () => show(entry.id).catch((e) => message(e.message, true)));
    body.appendChild(row);
  }
  $("counts").textContent = `${entries.length} result(s): ${defects} defect, ${entries.length - defects} ok ` +
    `at threshold ${threshold().toFixed(2)}`;
}

function onThreshold() {
  $("threshold-value").textContent = threshold().toFixed(2);
  renderList();
  if (state.current !== null) draw();
}

function setup() {
  $("file-input").addEventListener("change", (e) => inspectFiles([...e.target.files]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    inspectFiles([...e.dataTransfer.files].filter((f) => f.type.startsWith("image/") || /\.tiff?$/i.test(f.name)));
  });
  $("threshold").addEventListener("input", onThreshold);
  $("threshold-reset").addEventListener("click", () => { $("threshold").value = 1; onThreshold(); });
  $("api-key").value = state.key;
  $("key-box").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("api-key").value;
    localStorage.setItem("lineguard-key", state.key);
    loadModel();
  });
  loadModel();
}

setup();

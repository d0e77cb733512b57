// digits: the draw-a-digit page. Plain JavaScript, no build step, no third-party code.
// It speaks to the service's own API on the same origin, with relative URLs so that the page
// also works behind a proxy that serves it under a path prefix. Two modes: one digit
// (POST /predict, on a square pad) and a whole number (POST /read, on a wide pad, with a box
// drawn around each digit the service found).
"use strict";

(() => {
  const KEY_STORAGE = "digits.apiKey";
  const ALL_MODELS = "all";
  // Wait this long after a stroke ends before asking: a digit is often two strokes (4, 7, x).
  const PREDICT_DELAY_MS = 350;
  // A number takes longer to write: the pause between two digits should not ask already.
  const READ_DELAY_MS = 700;
  // The pad's drawing size in each mode: square for a digit, about 3:1 for a number.
  const PAD_SIZES = { digit: [560, 560], number: [1200, 400] };

  const byId = (id) => document.getElementById(id);
  const canvas = byId("canvas");
  const ctx = canvas.getContext("2d");
  const pad = byId("pad");
  const modelSelect = byId("model");
  const fileInput = byId("file");
  const statusLine = byId("status");
  const answer = byId("answer");
  const digitOut = byId("digit");
  const confidenceOut = byId("confidence");
  const verdict = byId("verdict");
  const answeredBy = byId("answered-by");
  const seen = byId("seen");
  const barsTitle = byId("bars-title");
  const bars = byId("bars");
  const ensemble = byId("ensemble");
  const ensembleRows = byId("ensemble-rows");
  const keyForm = byId("key-form");
  const keyInput = byId("api-key");
  const layout = byId("layout");
  const inputTitle = byId("input-title");
  const resultTitle = byId("result-title");
  const padHint = byId("pad-hint-what");
  const boxes = byId("boxes");
  const lengthField = byId("length-field");
  const lengthInput = byId("length");
  const reading = byId("reading");
  const readingDigits = byId("reading-digits");
  const modeInputs = Array.from(document.querySelectorAll('input[name="mode"]'));

  // Stroke width relative to the pad's height (a digit is written about as tall as the pad),
  // close to MNIST's pen once the digit is scaled to 20 px.
  const INK = "#111111";
  const lineWidth = () => canvas.height / 14;

  let drawing = false;
  let lastPoint = null;
  let hasInk = false;
  let showingFile = false;
  let predictTimer = 0;
  let inFlight = null; // AbortController of the request whose answer we still want
  let lastInput = null; // "canvas", or {blob, type} of the last file
  let mode = "digit"; // or "number"
  // Where the picture that was sent lies on the pad, in canvas pixels: {x, y, scale} maps the
  // picture's pixels (the service's boxes) to the pad's. null: a file the browser cannot show.
  let placement = null;

  // ---- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function storedKey() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  }

  async function call(path, init = {}) {
    const headers = { ...(init.headers || {}) };
    const key = storedKey();
    if (key) headers["X-API-Key"] = key;
    const response = await fetch(path, { ...init, headers });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const error = body && body.error;
      throw new ApiError(
        response.status,
        error ? error.code : "http_error",
        error ? error.message : `The service answered HTTP ${response.status}.`,
      );
    }
    return body;
  }

  function showError(err) {
    if (err instanceof ApiError) {
      if (err.status === 401) {
        keyForm.hidden = false;
        setStatus(
          storedKey()
            ? "That API key was not accepted. Check it and try again."
            : "This service needs an API key: enter it in the API key field.",
          true,
        );
        keyInput.focus();
        return;
      }
      setStatus(err.message, true);
    } else {
      setStatus("Cannot reach the service. Is it running?", true);
    }
  }

  function setStatus(text, isError = false) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", isError);
  }

  // A percentage for people: never "100.0%" or "0.0%" for what is only nearly certain or
  // nearly impossible.
  function percent(p, digits = 1) {
    const step = 10 ** -digits;
    const text = (100 * p).toFixed(digits);
    if (p < 1 && Number(text) >= 100) return `>${(100 - step).toFixed(digits)}%`;
    if (p > 0 && Number(text) <= 0) return `<${step.toFixed(digits)}%`;
    return `${text}%`;
  }

  // ---- models ----------------------------------------------------------------------------

  function modelLabel(model) {
    let label = `${model.name} v${model.version}`;
    if (model.default && model.newest) label += " (default)";
    if (model.metrics) label += ` · ${percent(model.metrics.test_accuracy, 2)} accurate`;
    return label;
  }

  async function loadModels() {
    modelSelect.disabled = true;
    let listing;
    try {
      listing = await call("models");
    } catch (err) {
      modelSelect.replaceChildren(new Option("Models unavailable", ""));
      showError(err);
      return;
    }
    const ready = listing.models.filter((m) => m.status === "ready");
    const options = ready.map((m) => {
      const option = new Option(modelLabel(m), `${m.name}/${m.version}`);
      option.selected = option.defaultSelected = m.default && m.newest;
      return option;
    });
    if (new Set(ready.map((m) => m.name)).size > 1) {
      options.push(new Option("All models (compare)", ALL_MODELS));
    }
    modelSelect.replaceChildren(...options);
    modelSelect.disabled = ready.length === 0;
    offerAllModels();
    setStatus(ready.length ? startHint() : "No model is serving yet.", !ready.length);
  }

  // Comparing every model is for one digit; a number is read by one model.
  function offerAllModels() {
    const all = Array.from(modelSelect.options).find((o) => o.value === ALL_MODELS);
    if (!all) return;
    all.hidden = all.disabled = mode === "number";
    if (mode === "number" && modelSelect.value === ALL_MODELS) {
      const fallback = Array.from(modelSelect.options).find((o) => o.defaultSelected);
      modelSelect.value = (fallback || modelSelect.options[0]).value;
    }
  }

  function startHint() {
    return mode === "number" ? "Write a number to start." : "Draw a digit to start.";
  }

  function modelParams() {
    const params = new URLSearchParams({ explain: "true" });
    const choice = modelSelect.value;
    if (choice === ALL_MODELS) {
      params.set("model", ALL_MODELS);
    } else if (choice) {
      const [name, version] = choice.split("/");
      params.set("model", name);
      params.set("version", version);
    }
    return params;
  }

  // ---- asking ----------------------------------------------------------------------------

  async function predict(blob, type) {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const params = modelParams();
    const asNumber = mode === "number";
    if (asNumber && lengthInput.validity.valid && lengthInput.value) {
      params.set("length", lengthInput.value);
    }
    setStatus("Reading…");
    try {
      const body = await call(`${asNumber ? "read" : "predict"}?${params}`, {
        method: "POST",
        body: blob,
        headers: { "Content-Type": type || "application/octet-stream" },
        signal: controller.signal,
      });
      if (inFlight !== controller) return;
      if (asNumber) showReading(body);
      else if (params.get("model") === ALL_MODELS) showEnsemble(body);
      else showPrediction(body);
    } catch (err) {
      if (err.name === "AbortError") return;
      if (asNumber) clearBoxes();
      showError(err);
    } finally {
      if (inFlight === controller) inFlight = null;
    }
  }

  function predictCanvas() {
    if (!hasInk) return;
    lastInput = "canvas";
    placement = { x: 0, y: 0, scale: 1 }; // the picture sent is the pad itself
    // Black ink on white, as a PNG: the service inverts, crops and centres it like MNIST.
    canvas.toBlob((blob) => blob && predict(blob, "image/png"), "image/png");
  }

  function predictAgain() {
    if (lastInput === "canvas") predictCanvas();
    else if (lastInput) predict(lastInput.blob, lastInput.type);
  }

  // ---- showing the answer ----------------------------------------------------------------

  function buildBars() {
    const rows = [];
    for (let digit = 0; digit < 10; digit++) {
      const row = document.createElement("li");
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = String(digit);
      const track = document.createElement("span");
      track.className = "track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "fill";
      track.append(fill);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = "–";
      row.append(label, track, pct);
      rows.push(row);
    }
    bars.replaceChildren(...rows);
  }

  function showBars(probabilities, top, title) {
    barsTitle.textContent = title;
    probabilities.forEach((p, digit) => {
      const row = bars.children[digit];
      row.classList.toggle("best", digit === top);
      row.querySelector(".fill").style.width = `${100 * p}%`;
      row.querySelector(".pct").textContent = percent(p);
    });
  }

  function showSeen(image) {
    if (image) seen.src = `data:image/png;base64,${image}`;
    seen.parentElement.hidden = !image;
  }

  function showPrediction(p) {
    digitOut.textContent = String(p.digit);
    confidenceOut.textContent = percent(p.confidence);
    verdict.textContent = p.uncertain ? "Uncertain: check by eye" : "Sure";
    verdict.classList.toggle("uncertain", p.uncertain);
    answeredBy.textContent = `${p.model.name} v${p.model.version}`;
    showSeen(p.image);
    showBars(p.probabilities, p.digit, "Probabilities");
    reading.hidden = true;
    ensemble.hidden = true;
    answer.hidden = false;
    const ms = p.timing_ms.total.toFixed(1);
    let text = `Answered in ${ms} ms (batch of ${p.batch_size}).`;
    if (p.digits_seen > 1) {
      text += ` The picture holds ${p.digits_seen} digits: choose “A number” to read them all.`;
    }
    setStatus(text);
  }

  function showReading(r) {
    digitOut.textContent = r.number;
    confidenceOut.textContent = percent(r.confidence);
    verdict.textContent = r.uncertain ? "Uncertain: check by eye" : "Sure";
    verdict.classList.toggle("uncertain", r.uncertain);
    answeredBy.textContent = `${r.model.name} v${r.model.version}`;
    seen.parentElement.hidden = true;
    readingDigits.replaceChildren(...r.digits.map(digitRow));
    reading.hidden = false;
    ensemble.hidden = true;
    answer.hidden = false;
    showBoxes(r.digits);
    const ms = r.timing_ms.total.toFixed(1);
    const n = r.digits.length;
    setStatus(
      `Read ${n} digit${n === 1 ? "" : "s"} in ${ms} ms ` +
        `(${r.candidates} candidate images, batch of ${r.batch_size}).`,
    );
  }

  function digitRow(d, index) {
    const row = document.createElement("li");
    if (d.image) {
      const image = document.createElement("img");
      image.src = `data:image/png;base64,${d.image}`;
      image.width = image.height = 56;
      image.alt = `The 28 by 28 pixel image the model saw for digit ${index + 1}`;
      row.append(image);
    }
    const digit = document.createElement("span");
    digit.className = "reading-digit";
    digit.textContent = String(d.digit);
    const confidence = document.createElement("span");
    confidence.className = "reading-confidence";
    confidence.textContent = percent(d.confidence);
    row.append(digit, confidence);
    return row;
  }

  // One box per digit over the pad. The service's boxes are in pixels of the picture sent;
  // placement maps them to the pad's canvas pixels, and percentages of the canvas then follow
  // the pad's displayed size, whatever it is.
  function showBoxes(digits) {
    if (!placement) {
      clearBoxes();
      return;
    }
    const { x, y, scale } = placement;
    boxes.replaceChildren(
      ...digits.map((d) => {
        const box = document.createElement("div");
        box.className = "box";
        box.style.left = `${(100 * (x + d.box.x * scale)) / canvas.width}%`;
        box.style.top = `${(100 * (y + d.box.y * scale)) / canvas.height}%`;
        box.style.width = `${(100 * d.box.width * scale) / canvas.width}%`;
        box.style.height = `${(100 * d.box.height * scale) / canvas.height}%`;
        // The label sits above its box, or inside it where the box starts near the top.
        box.classList.toggle("label-inside", y + d.box.y * scale < 0.15 * canvas.height);
        // On a narrow pad the labels keep only the digit (style.css); the list has the rest.
        const label = document.createElement("span");
        label.className = "box-label";
        const confidence = document.createElement("span");
        confidence.className = "box-confidence";
        confidence.textContent = ` · ${percent(d.confidence)}`;
        label.append(String(d.digit), confidence);
        box.append(label);
        return box;
      }),
    );
  }

  function clearBoxes() {
    boxes.replaceChildren();
  }

  function showEnsemble(e) {
    reading.hidden = true;
    const predictions = e.predictions;
    const n = predictions.length;
    const mean = Array.from({ length: 10 }, (_, digit) =>
      predictions.reduce((sum, p) => sum + p.probabilities[digit], 0) / n,
    );
    digitOut.textContent = String(e.digit);
    confidenceOut.textContent = percent(mean[e.digit]);
    const doubtful = !e.agree || predictions.some((p) => p.uncertain);
    verdict.textContent = e.agree ? `All ${n} models agree` : "The models disagree";
    verdict.classList.toggle("uncertain", doubtful);
    answeredBy.textContent = predictions.map((p) => p.model.name).join(", ");
    showSeen(predictions[0] && predictions[0].image);
    showBars(mean, e.digit, `Mean probabilities over ${n} models`);
    ensembleRows.replaceChildren(
      ...predictions.map((p) => {
        const row = document.createElement("tr");
        for (const text of [
          `${p.model.name} v${p.model.version}`,
          String(p.digit),
          percent(p.confidence) + (p.uncertain ? " (uncertain)" : ""),
        ]) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }),
    );
    ensemble.hidden = false;
    answer.hidden = false;
    setStatus(`Answered by ${n} models.`);
  }

  // ---- drawing ---------------------------------------------------------------------------

  function resetPad() {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = lineWidth();
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    hasInk = false;
    showingFile = false;
    placement = null;
    clearBoxes();
    pad.classList.remove("inked");
  }

  function padPoint(event) {
    const box = canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * canvas.width) / box.width,
      ((event.clientY - box.top) * canvas.height) / box.height,
    ];
  }

  function dot([x, y]) {
    ctx.beginPath();
    ctx.arc(x, y, lineWidth() / 2, 0, 2 * Math.PI);
    ctx.fill();
  }

  function segment([x0, y0], [x1, y1]) {
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.stroke();
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    clearTimeout(predictTimer);
    if (showingFile) resetPad();
    clearBoxes(); // they would stand over a drawing that is changing; the next answer redraws them
    canvas.setPointerCapture(event.pointerId);
    drawing = true;
    lastPoint = padPoint(event);
    dot(lastPoint);
    hasInk = true;
    pad.classList.add("inked");
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of coalesced.length ? coalesced : [event]) {
      const point = padPoint(e);
      segment(lastPoint, point);
      lastPoint = point;
    }
  });

  function endStroke() {
    if (!drawing) return;
    drawing = false;
    clearTimeout(predictTimer);
    predictTimer = setTimeout(predictCanvas, mode === "number" ? READ_DELAY_MS : PREDICT_DELAY_MS);
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  function clearAll() {
    clearTimeout(predictTimer);
    if (inFlight) inFlight.abort();
    inFlight = null;
    lastInput = null;
    resetPad();
    answer.hidden = true;
    ensemble.hidden = true;
    reading.hidden = true;
    buildBars();
    barsTitle.textContent = "Probabilities";
    setStatus(startHint());
  }

  // ---- files: choose, drop or paste -------------------------------------------------------

  async function showFileOnPad(file) {
    resetPad();
    try {
      const bitmap = await createImageBitmap(file);
      // The bitmap is the picture as the service sees it: EXIF orientation applied.
      const margin = Math.min(canvas.width, canvas.height) * 0.06;
      const scale = Math.min(
        (canvas.width - 2 * margin) / bitmap.width,
        (canvas.height - 2 * margin) / bitmap.height,
      );
      const w = bitmap.width * scale;
      const h = bitmap.height * scale;
      const x = (canvas.width - w) / 2;
      const y = (canvas.height - h) / 2;
      ctx.drawImage(bitmap, x, y, w, h);
      bitmap.close();
      placement = { x, y, scale };
      showingFile = true;
      pad.classList.add("inked");
    } catch {
      // The browser cannot show this format; the service may still read it.
    }
  }

  async function useFile(file) {
    if (!file) return;
    clearTimeout(predictTimer);
    lastInput = { blob: file, type: file.type || "application/octet-stream" };
    await showFileOnPad(file);
    predict(lastInput.blob, lastInput.type);
  }

  const carriesFiles = (event) =>
    event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");

  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    pad.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) pad.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    pad.classList.remove("dragging");
    useFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const items = event.clipboardData ? Array.from(event.clipboardData.items) : [];
    const image = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (image) useFile(image.getAsFile());
  });

  byId("choose").addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    useFile(fileInput.files[0]);
    fileInput.value = ""; // choosing the same file again still fires "change"
  });
  byId("clear").addEventListener("click", clearAll);
  modelSelect.addEventListener("change", predictAgain);
  lengthInput.addEventListener("change", () => {
    if (lengthInput.validity.valid) predictAgain();
  });

  // ---- modes: one digit, or a number -----------------------------------------------------

  function setMode(next) {
    if (next === mode) return;
    mode = next;
    const number = mode === "number";
    layout.classList.toggle("number", number);
    pad.classList.toggle("wide", number);
    lengthField.hidden = !number;
    inputTitle.textContent = number ? "Your number" : "Your digit";
    resultTitle.textContent = number ? "Reading" : "Prediction";
    padHint.textContent = number ? "Write a number here" : "Draw a digit here";
    digitOut.setAttribute("aria-label", number ? "Number read" : "Predicted digit");
    canvas.setAttribute(
      "aria-label",
      number
        ? "Drawing area: write a number, digit by digit from left to right"
        : "Drawing area: draw one digit with a mouse, pen or finger",
    );
    bars.hidden = barsTitle.hidden = number;
    offerAllModels();
    // A new size empties the canvas; a file shown on it is shown again and read the new way.
    const file = lastInput !== "canvas" ? lastInput : null;
    [canvas.width, canvas.height] = PAD_SIZES[mode];
    clearAll();
    if (file) useFile(file.blob);
  }

  for (const input of modeInputs) {
    input.addEventListener("change", () => input.checked && setMode(input.value));
  }

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    loadModels().then(predictAgain);
  });

  // ---- start -----------------------------------------------------------------------------

  resetPad();
  buildBars();
  const chosen = modeInputs.find((input) => input.checked); // a reload keeps the choice
  if (chosen && chosen.value !== mode) setMode(chosen.value);
  if (storedKey()) {
    keyInput.value = storedKey();
    keyForm.hidden = false;
  }
  loadModels();
})();

// The demo page's script: prepare a drawing as the data set's images were made, then run the
// CNN and k-means on it, in plain JavaScript. The stage inlines this file and the models' data
// (the <script id="data"> element) into one page that needs no network.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const FIELD = 28; // the side of the image the models take
  const PIXELS = FIELD * FIELD;
  const TOP = 3; // nearest centroids shown
  const WARM_UP_ROUNDS = 3;
  const SUBJECT = DATA.preparation.subject; // what the pictures show: "digit", "garment"

  function decodeBytes(base64) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  // Float32 arrays written little-endian by the stage: the byte order of every browser in use.
  function decodeFloats(base64) {
    return new Float32Array(decodeBytes(base64).buffer);
  }

  const layers = {}; // the CNN's state_dict: "conv1.weight" -> its values, row-major
  for (const [name, tensor] of Object.entries(DATA.cnn)) layers[name] = decodeFloats(tensor.data);
  const centroids = decodeFloats(DATA.kmeans.centroids);
  const nCentroids = DATA.kmeans.labels.length;
  const testImages = decodeBytes(DATA.test.images);
  const testCount = DATA.test.labels.length;

  // ---- Preparation: mnist_pipeline/digits.py, step for step (see its docstring). ----

  const PAPER = 0.1; // ink weaker than this fraction of the strongest counts as paper
  const MIN_CONTRAST = 0.1; // an image whose ink stands less than this above the paper is blank

  class BlankImage extends Error {}

  function round(x) {
    return Math.floor(x + 0.5);
  }

  // digits.grey_levels: luma in [0, 1], transparent pixels taken as white paper.
  function greyLevels(rgba, count) {
    const grey = new Float64Array(count);
    for (let i = 0; i < count; i++) {
      const luma = (0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]) / 255;
      const alpha = rgba[4 * i + 3] / 255;
      grey[i] = luma * alpha + (1 - alpha);
    }
    return grey;
  }

  function median(values) {
    const sorted = Float64Array.from(values).sort();
    const half = sorted.length >> 1;
    return sorted.length % 2 ? sorted[half] : (sorted[half - 1] + sorted[half]) / 2;
  }

  // digits.ink: the paper 0, the strongest ink 1, for either polarity.
  function ink(grey, width, height) {
    const border = [];
    for (let x = 0; x < width; x++) border.push(grey[x]);
    for (let x = 0; x < width; x++) border.push(grey[(height - 1) * width + x]);
    for (let y = 1; y < height - 1; y++) border.push(grey[y * width]);
    for (let y = 1; y < height - 1; y++) border.push(grey[y * width + width - 1]);
    let paper = median(border);
    let sign = 1;
    if (paper > 0.5) {
      // light paper: the ink is dark
      sign = -1;
      paper = 1 - paper;
    }
    const level = new Float64Array(grey.length);
    let strongest = -Infinity;
    for (let i = 0; i < grey.length; i++) {
      level[i] = sign > 0 ? grey[i] : 1 - grey[i];
      if (level[i] > strongest) strongest = level[i];
    }
    const contrast = strongest - paper;
    if (contrast < MIN_CONTRAST) {
      throw new BlankImage("blank image: no ink stands out from the paper");
    }
    for (let i = 0; i < level.length; i++) {
      const strength = (level[i] - paper) / contrast;
      level[i] = strength < PAPER ? 0 : strength;
    }
    return level;
  }

  // digits.area_weights: output pixel i averages the input over [i, i + 1) * nIn / nOut.
  function areaWeights(nIn, nOut) {
    const step = nIn / nOut;
    const rows = [];
    for (let i = 0; i < nOut; i++) {
      const start = i * step;
      const end = start + step;
      const first = Math.floor(start);
      const row = { first: first, shares: [] };
      for (let k = first; k < Math.min(nIn, Math.ceil(end)); k++) {
        row.shares.push(Math.max(Math.min(end, k + 1) - Math.max(start, k), 0) / step);
      }
      rows.push(row);
    }
    return rows;
  }

  // digits.fit_box: the ink's bounding box scaled to fit boxSide x boxSide, as bytes.
  function fitBox(strength, width, height, boxSide) {
    let top = height, bottom = -1, left = width, right = -1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (strength[y * width + x] > 0) {
          top = Math.min(top, y);
          bottom = Math.max(bottom, y);
          left = Math.min(left, x);
          right = Math.max(right, x);
        }
      }
    }
    const cropH = bottom - top + 1;
    const cropW = right - left + 1;
    const side = Math.max(cropH, cropW);
    const outH = Math.max(1, round((cropH * boxSide) / side));
    const outW = Math.max(1, round((cropW * boxSide) / side));
    const across = areaWeights(cropW, outW);
    const down = areaWeights(cropH, outH);
    // Columns first (crop rows -> outW values each), then rows.
    const narrow = new Float64Array(cropH * outW);
    for (let y = 0; y < cropH; y++) {
      const source = (top + y) * width + left;
      for (let j = 0; j < outW; j++) {
        const { first, shares } = across[j];
        let sum = 0;
        for (let k = 0; k < shares.length; k++) sum += shares[k] * strength[source + first + k];
        narrow[y * outW + j] = sum;
      }
    }
    const box = new Uint8Array(outH * outW);
    for (let i = 0; i < outH; i++) {
      const { first, shares } = down[i];
      for (let j = 0; j < outW; j++) {
        let sum = 0;
        for (let k = 0; k < shares.length; k++) sum += shares[k] * narrow[(first + k) * outW + j];
        box[i * outW + j] = Math.floor(Math.min(Math.max(sum, 0), 1) * 255 + 0.5);
      }
    }
    return { pixels: box, width: outW, height: outH };
  }

  // digits.center: the box in the 28x28 field, its centre of mass (by "mass") or its own
  // centre (by "box") on the field's centre.
  function center(box, by) {
    let total = 0, rowMoment = 0, colMoment = 0;
    for (let y = 0; y < box.height; y++) {
      for (let x = 0; x < box.width; x++) {
        const value = box.pixels[y * box.width + x];
        total += value;
        rowMoment += value * y;
        colMoment += value * x;
      }
    }
    if (total === 0) throw new BlankImage("blank image: too little ink to show at 28x28 pixels");
    const cy = by === "mass" ? rowMoment / total : (box.height - 1) / 2;
    const cx = by === "mass" ? colMoment / total : (box.width - 1) / 2;
    const top = Math.floor(FIELD / 2 - cy);
    const left = Math.floor(FIELD / 2 - cx);
    const field = new Uint8Array(PIXELS);
    for (let y = 0; y < box.height; y++) {
      for (let x = 0; x < box.width; x++) {
        const fy = top + y, fx = left + x;
        if (fy >= 0 && fy < FIELD && fx >= 0 && fx < FIELD) {
          field[fy * FIELD + fx] = box.pixels[y * box.width + x];
        }
      }
    }
    return field;
  }

  // digits.prepare: an ImageData (any size) -> 784 bytes, white ink on black, as `rule`
  // (DATA.preparation: { box, center }) says.
  function prepare(image, rule) {
    const grey = greyLevels(image.data, image.width * image.height);
    const strength = ink(grey, image.width, image.height);
    return center(fitBox(strength, image.width, image.height, rule.box), rule.center);
  }

  // ---- The CNN: mnist_pipeline/cnn.py's Net in eval mode (dropout off). ----

  // A "valid" convolution: (inC, size, size) -> (outC, size - k + 1, size - k + 1).
  function conv(input, inC, size, weight, bias, outC, k) {
    const outSize = size - k + 1;
    const out = new Float64Array(outC * outSize * outSize);
    for (let o = 0; o < outC; o++) {
      for (let y = 0; y < outSize; y++) {
        for (let x = 0; x < outSize; x++) {
          let sum = bias[o];
          for (let c = 0; c < inC; c++) {
            for (let ky = 0; ky < k; ky++) {
              const w = ((o * inC + c) * k + ky) * k;
              const i = (c * size + y + ky) * size + x;
              for (let kx = 0; kx < k; kx++) sum += weight[w + kx] * input[i + kx];
            }
          }
          out[(o * outSize + y) * outSize + x] = sum;
        }
      }
    }
    return out;
  }

  // relu(max_pool2d(x, 2)) on (channels, size, size).
  function poolRelu(input, channels, size) {
    const half = size / 2;
    const out = new Float64Array(channels * half * half);
    for (let c = 0; c < channels; c++) {
      for (let y = 0; y < half; y++) {
        for (let x = 0; x < half; x++) {
          const i = (c * size + 2 * y) * size + 2 * x;
          const most = Math.max(input[i], input[i + 1], input[i + size], input[i + size + 1]);
          out[(c * half + y) * half + x] = Math.max(most, 0);
        }
      }
    }
    return out;
  }

  function linear(input, weight, bias, relu) {
    const out = new Float64Array(bias.length);
    for (let o = 0; o < bias.length; o++) {
      let sum = bias[o];
      for (let i = 0; i < input.length; i++) sum += weight[o * input.length + i] * input[i];
      out[o] = relu ? Math.max(sum, 0) : sum;
    }
    return out;
  }

  function cnnProbabilities(pixels) {
    const x = new Float64Array(PIXELS);
    for (let i = 0; i < PIXELS; i++) x[i] = (pixels[i] / 255 - DATA.mean) / DATA.std;
    const w = layers;
    let h = poolRelu(conv(x, 1, 28, w["conv1.weight"], w["conv1.bias"], 10, 5), 10, 24);
    h = poolRelu(conv(h, 10, 12, w["conv2.weight"], w["conv2.bias"], 20, 5), 20, 8);
    h = linear(h, w["fc1.weight"], w["fc1.bias"], true); // 320 = (20, 4, 4) flattened
    const logits = linear(h, w["fc2.weight"], w["fc2.bias"], false);
    const most = Math.max(...logits);
    const exp = logits.map((v) => Math.exp(v - most));
    const total = exp.reduce((a, b) => a + b, 0);
    return Array.from(exp, (v) => v / total);
  }

  // ---- k-means: the nearest centroids to pixel / 255, by squared distance. ----

  function nearestCentroids(pixels) {
    const found = [];
    for (let c = 0; c < nCentroids; c++) {
      let distance = 0;
      for (let i = 0; i < PIXELS; i++) {
        const d = pixels[i] / 255 - centroids[c * PIXELS + i];
        distance += d * d;
      }
      found.push({ index: c, distance: distance, label: DATA.kmeans.labels[c] });
    }
    found.sort((a, b) => a.distance - b.distance || a.index - b.index);
    return found.slice(0, TOP);
  }

  function predict(pixels) {
    return { probabilities: cnnProbabilities(pixels), nearest: nearestCentroids(pixels) };
  }

  // ---- The page ----

  const canvas = document.getElementById("draw");
  const pen = canvas.getContext("2d", { willReadFrequently: true });
  const status = document.getElementById("status");
  const state = { input: null, prediction: null, latencyMs: null, testIndex: -1 };

  function drawDigit(target, values) {
    // values: 784 numbers in [0, 1], white on black as the models see them.
    const context = target.getContext("2d");
    const image = context.createImageData(FIELD, FIELD);
    for (let i = 0; i < PIXELS; i++) {
      const v = Math.round(values[i] * 255);
      image.data.set([v, v, v, 255], 4 * i);
    }
    context.putImageData(image, 0, 0);
  }

  const bars = document.getElementById("bars");
  const barRows = DATA.classes.map((name) => {
    const label = document.createElement("span");
    label.textContent = name;
    const bar = document.createElement("div");
    bar.className = "bar";
    const value = document.createElement("span");
    value.className = "value";
    bars.append(label, bar, value);
    return { label, bar, value };
  });

  const centroidFigures = [];
  for (let i = 0; i < TOP; i++) {
    const figure = document.createElement("figure");
    const image = document.createElement("canvas");
    image.className = "digit";
    image.width = image.height = FIELD;
    const caption = document.createElement("figcaption");
    figure.append(image, caption);
    document.getElementById("centroids").append(figure);
    centroidFigures.push({ image, caption });
  }

  function show(pixels) {
    const prediction = predict(pixels);
    state.input = pixels;
    state.prediction = prediction;
    drawDigit(document.getElementById("input"), Array.from(pixels, (v) => v / 255));
    const p = prediction.probabilities;
    const best = p.indexOf(Math.max(...p));
    barRows.forEach((row, i) => {
      row.bar.style.width = `${(100 * p[i]).toFixed(1)}%`;
      row.value.textContent = `${(100 * p[i]).toFixed(1)}%`;
      for (const element of [row.label, row.bar, row.value]) {
        element.classList.toggle("best", i === best);
      }
    });
    document.getElementById("answer").textContent =
      `${DATA.classes[best]} (${(100 * p[best]).toFixed(1)}%)`;
    prediction.nearest.forEach((found, i) => {
      const centroid = centroids.subarray(found.index * PIXELS, (found.index + 1) * PIXELS);
      drawDigit(centroidFigures[i].image, centroid);
      centroidFigures[i].caption.textContent =
        `${DATA.kmeans.classes[found.label]} (#${found.index})`;
    });
    return prediction;
  }

  function clearResults() {
    state.input = state.prediction = null;
    document.getElementById("input").getContext("2d").clearRect(0, 0, FIELD, FIELD);
    for (const row of barRows) {
      row.bar.style.width = "0";
      row.value.textContent = "";
      for (const element of [row.label, row.bar, row.value]) element.classList.remove("best");
    }
    document.getElementById("answer").textContent = "";
    for (const figure of centroidFigures) {
      figure.image.getContext("2d").clearRect(0, 0, FIELD, FIELD);
      figure.caption.textContent = "";
    }
  }

  function clearCanvas() {
    pen.fillStyle = "#fff";
    pen.fillRect(0, 0, canvas.width, canvas.height);
    state.testIndex = -1;
    clearResults();
    status.textContent = `Draw a ${SUBJECT}, or step through the test images.`;
  }

  // Called at the end of each stroke: prepare what is on the canvas and answer.
  function answerDrawing(strokeEnded) {
    let pixels;
    try {
      pixels = prepare(pen.getImageData(0, 0, canvas.width, canvas.height), DATA.preparation);
    } catch (error) {
      if (!(error instanceof BlankImage)) throw error;
      clearResults();
      status.textContent = `Nothing to read yet: draw a bigger or darker ${SUBJECT}.`;
      return;
    }
    show(pixels);
    state.latencyMs = performance.now() - strokeEnded;
    status.textContent = `Answered ${state.latencyMs.toFixed(0)} ms after the end of the stroke.`;
  }

  function showTestImage(index) {
    state.testIndex = index;
    const pixels = testImages.subarray(index * PIXELS, (index + 1) * PIXELS);
    // Drawn large and dark on light, so that more strokes can be added on top of it.
    const scale = canvas.width / FIELD;
    for (let i = 0; i < PIXELS; i++) {
      const v = 255 - pixels[i];
      pen.fillStyle = `rgb(${v},${v},${v})`;
      pen.fillRect((i % FIELD) * scale, Math.floor(i / FIELD) * scale, scale, scale);
    }
    show(pixels);
    const truth = DATA.classes[DATA.test.labels[index]];
    status.textContent = `Test image ${index + 1} of ${testCount}: true label ${truth}.`;
  }

  // Drawing: one stroke per pointer press, from mouse, touch or pen alike.
  let stroke = null;

  function position(event) {
    const box = canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * canvas.width) / box.width,
      ((event.clientY - box.top) * canvas.height) / box.height,
    ];
  }

  function setPen() {
    pen.strokeStyle = pen.fillStyle = "#000";
    pen.lineWidth = 20; // about 2 pixels of the 20x20 box for a digit drawn 200 px tall
    pen.lineCap = pen.lineJoin = "round";
  }

  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    try {
      canvas.setPointerCapture(event.pointerId); // keep the stroke when it leaves the canvas
    } catch (error) {
      // a pointer the browser does not track (a scripted event): nothing to capture
    }
    stroke = { id: event.pointerId, last: position(event) };
    setPen();
    pen.beginPath();
    pen.arc(stroke.last[0], stroke.last[1], pen.lineWidth / 2, 0, 2 * Math.PI);
    pen.fill();
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!stroke || event.pointerId !== stroke.id) return;
    // Coalesced events: every point a fast pen reported since the last frame.
    const events = (event.getCoalescedEvents && event.getCoalescedEvents()) || [];
    pen.beginPath();
    pen.moveTo(stroke.last[0], stroke.last[1]);
    for (const point of events.length ? events : [event]) {
      stroke.last = position(point);
      pen.lineTo(stroke.last[0], stroke.last[1]);
    }
    pen.stroke();
  });

  function endStroke(event) {
    if (!stroke || event.pointerId !== stroke.id) return;
    stroke = null;
    answerDrawing(event.timeStamp);
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  document.getElementById("clear").addEventListener("click", clearCanvas);
  document.getElementById("next").addEventListener("click", () => {
    showTestImage((state.testIndex + 1) % testCount);
  });

  // The first calls of prepare and predict run before the JIT has compiled them: 60 ms each
  // in this machine's Chromium, against 4 and 11 ms once warm. Warm them up while the page
  // loads, on a stroke drawn off screen, so that the first real stroke is answered in time.
  function warmUp() {
    const scratch = document.createElement("canvas");
    scratch.width = canvas.width;
    scratch.height = canvas.height;
    const context = scratch.getContext("2d", { willReadFrequently: true });
    context.fillStyle = "#fff";
    context.fillRect(0, 0, scratch.width, scratch.height);
    context.fillStyle = "#000";
    context.fillRect(scratch.width / 3, scratch.height / 4, scratch.width / 10, scratch.height / 2);
    for (let i = 0; i < WARM_UP_ROUNDS; i++) {
      const image = context.getImageData(0, 0, scratch.width, scratch.height);
      predict(prepare(image, DATA.preparation));
    }
  }

  document.title = `Draw a ${SUBJECT}: the pipeline's models`;
  document.getElementById("heading").textContent = `Draw a ${SUBJECT}`;
  document.getElementById("about").textContent =
    `The ${DATA.dataset} models of this pipeline: a CNN and k-means with ${nCentroids} ` +
    `centroids, running in this page. ${testCount} test images are embedded.`;
  clearCanvas();
  warmUp();

  // For the tests and the curious (browser console): the page's own functions and state.
  window.digitDemo = {
    prepare, predict, showTestImage, clearCanvas, state, preparation: DATA.preparation,
    testCount, testImage: (i) => testImages.subarray(i * PIXELS, (i + 1) * PIXELS),
  };
})();

// The demo page's UI: the canvas to draw on, the buttons, the bars. The arithmetic (the
// preparation, the CNN, the nearest centroids) is digitModels, in demo_page_models.js, which
// the stage inlines before this file; the models' data is the <script id="data"> element.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const { FIELD, PIXELS, BlankImage, ShapeMismatch, prepare } = digitModels;
  const TOP = 3; // nearest centroids shown
  const WARM_UP_ROUNDS = 3;
  const SUBJECT = DATA.preparation.subject; // what the pictures show: "digit", "garment"

  const canvas = document.getElementById("draw");
  const pen = canvas.getContext("2d", { willReadFrequently: true });
  const status = document.getElementById("status");
  document.title = `Draw a ${SUBJECT}: the pipeline's models`;
  document.getElementById("heading").textContent = `Draw a ${SUBJECT}`;

  let models;
  try {
    models = digitModels.load(DATA, TOP);
  } catch (error) {
    if (!(error instanceof ShapeMismatch)) throw error;
    // Net in mnist_pipeline/cnn.py changed in a way NET in demo_page_models.js does not
    // follow: say so, rather than answer with garbage.
    const message =
      `This page cannot run the models it was built with: ${error.message}. ` +
      "Make NET in stages/demo_page_models.js match Net in mnist_pipeline/cnn.py, " +
      "then run `dvc repro demo_page`.";
    status.textContent = message;
    for (const id of ["clear", "next"]) document.getElementById(id).disabled = true;
    window.digitDemo = { error: message };
    return;
  }
  const { centroids, testImages } = models;
  const nCentroids = DATA.kmeans.labels.length;
  const testCount = DATA.test.labels.length;

  function predict(pixels) {
    return { probabilities: models.probabilities(pixels), nearest: models.nearest(pixels) };
  }

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
        `${DATA.kmeans.classes[DATA.kmeans.labels[found.index]]} (#${found.index})`;
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

// The demo page's arithmetic, with no DOM: prepare a picture as mnist_pipeline/digits.py
// does, run mnist_pipeline/cnn.py's Net on it (eval mode) and find the nearest k-means
// centroids. The stage inlines this file before the page's UI (demo_page.js); the unit
// tests run this same file in headless Chromium against PyTorch, digits.prepare and
// KmeansModel.nearest_centroids.
//
// The network's layer sizes are read from the weights the page is given (each tensor's
// shape); only the kinds of layers and their order are written here, as in Net.forward.
"use strict";
const digitModels = (function () {
  const FIELD = 28; // the side of the image the models take
  const PIXELS = FIELD * FIELD;

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

  // digits.prepare: an ImageData-like { data (RGBA bytes), width, height } -> 784 bytes,
  // white ink on black, as `rule` ({ box, center }: mnist_pipeline.processed.Preparation) says.
  function prepare(image, rule) {
    const grey = greyLevels(image.data, image.width * image.height);
    const strength = ink(grey, image.width, image.height);
    return center(fitBox(strength, image.width, image.height, rule.box), rule.center);
  }

  // ---- The CNN: mnist_pipeline/cnn.py's Net in eval mode (dropout off). ----

  // Net.forward, layer by layer; dropout is off in eval mode and left out. The sizes come
  // from the weights (loadCnn), so a wider layer or another kernel needs no change here;
  // another kind of layer, or another order, does.
  const NET = [
    { kind: "conv", name: "conv1" },
    { kind: "maxPool", size: 2 },
    { kind: "relu" },
    { kind: "conv", name: "conv2" },
    { kind: "maxPool", size: 2 },
    { kind: "relu" },
    { kind: "flatten" },
    { kind: "linear", name: "fc1" },
    { kind: "relu" },
    { kind: "linear", name: "fc2" },
  ];

  // The weights do not fit NET, or NET does not use all of them: Net changed in cnn.py.
  class ShapeMismatch extends Error {}

  // Whether `shape` is `wanted`, where a null in `wanted` stands for any size.
  function fits(shape, wanted) {
    return shape.length === wanted.length && wanted.every((n, i) => n === null || n === shape[i]);
  }

  function product(shape) {
    return shape.reduce((a, b) => a * b, 1);
  }

  // A "valid" convolution (stride 1, no padding): (inC, h, w) -> (outC, h - kh + 1, w - kw + 1).
  function conv(input, [inC, h, w], weight, bias, [outC, , kh, kw]) {
    const outH = h - kh + 1;
    const outW = w - kw + 1;
    const out = new Float64Array(outC * outH * outW);
    for (let o = 0; o < outC; o++) {
      for (let y = 0; y < outH; y++) {
        for (let x = 0; x < outW; x++) {
          let sum = bias[o];
          for (let c = 0; c < inC; c++) {
            for (let ky = 0; ky < kh; ky++) {
              const wi = ((o * inC + c) * kh + ky) * kw;
              const ii = (c * h + y + ky) * w + x;
              for (let kx = 0; kx < kw; kx++) sum += weight[wi + kx] * input[ii + kx];
            }
          }
          out[(o * outH + y) * outW + x] = sum;
        }
      }
    }
    return out;
  }

  // max_pool2d(x, size): non-overlapping windows; a partial window at the edge is dropped.
  function maxPool(input, [channels, h, w], size) {
    const outH = Math.floor(h / size);
    const outW = Math.floor(w / size);
    const out = new Float64Array(channels * outH * outW);
    for (let c = 0; c < channels; c++) {
      for (let y = 0; y < outH; y++) {
        for (let x = 0; x < outW; x++) {
          let most = -Infinity;
          for (let dy = 0; dy < size; dy++) {
            for (let dx = 0; dx < size; dx++) {
              most = Math.max(most, input[(c * h + y * size + dy) * w + x * size + dx]);
            }
          }
          out[(c * outH + y) * outW + x] = most;
        }
      }
    }
    return out;
  }

  function linear(input, weight, bias) {
    const out = new Float64Array(bias.length);
    for (let o = 0; o < bias.length; o++) {
      let sum = bias[o];
      for (let i = 0; i < input.length; i++) sum += weight[o * input.length + i] * input[i];
      out[o] = sum;
    }
    return out;
  }

  function relu(input) {
    return input.map((v) => Math.max(v, 0));
  }

  function softmax(logits) {
    const most = Math.max(...logits);
    const exp = logits.map((v) => Math.exp(v - most));
    const total = exp.reduce((a, b) => a + b, 0);
    return Array.from(exp, (v) => v / total);
  }

  // The weights of one layer, checked against the shape of what flows into it.
  function layerWeights(tensors, name, expected, used) {
    const weight = tensors[`${name}.weight`];
    const bias = tensors[`${name}.bias`];
    if (!weight || !bias) throw new ShapeMismatch(`the CNN has no ${name}.weight and .bias`);
    const [outC] = weight.shape;
    const wanted = [outC, ...expected];
    const shapes = `${name}.weight is [${weight.shape}] and ${name}.bias [${bias.shape}]`;
    if (!fits(weight.shape, wanted) || !fits(bias.shape, [outC])) {
      const what = wanted.map((n) => (n === null ? "any" : n));
      throw new ShapeMismatch(`${shapes}, where its input needs [${what}]`);
    }
    for (const tensor of [weight, bias]) {
      if (tensor.values.length !== product(tensor.shape)) {
        throw new ShapeMismatch(`${name}: ${tensor.values.length} values for its shape`);
      }
    }
    used.add(`${name}.weight`).add(`${name}.bias`);
    return { weight: weight.values, bias: bias.values, shape: weight.shape };
  }

  // NET with the given weights ({ name: { shape, values } }, as Net.state_dict()): a
  // function from 784 bytes (the prepared image) to the probability of each of nClasses.
  // Throws ShapeMismatch, saying which tensor, when the weights are not NET's.
  function loadCnn(tensors, mean, std, nClasses) {
    const used = new Set();
    let shape = [1, FIELD, FIELD]; // what flows from layer to layer: (channels, h, w) or (n)
    const steps = [];
    for (const layer of NET) {
      const input = shape;
      if (layer.kind === "conv") {
        if (input.length !== 3) throw new ShapeMismatch(`${layer.name} after a flatten`);
        const w = layerWeights(tensors, layer.name, [input[0], null, null], used);
        const [outC, , kh, kw] = w.shape;
        // The partially known shape check above leaves the kernel free; it must fit.
        if (kh > input[1] || kw > input[2]) {
          throw new ShapeMismatch(`${layer.name}'s ${kh}x${kw} kernel is larger than its input`);
        }
        shape = [outC, input[1] - kh + 1, input[2] - kw + 1];
        steps.push((x) => conv(x, input, w.weight, w.bias, w.shape));
      } else if (layer.kind === "maxPool") {
        shape = [input[0], Math.floor(input[1] / layer.size), Math.floor(input[2] / layer.size)];
        if (shape[1] < 1 || shape[2] < 1) {
          throw new ShapeMismatch(`a ${input[1]}x${input[2]} input is too small to pool`);
        }
        steps.push((x) => maxPool(x, input, layer.size));
      } else if (layer.kind === "relu") {
        steps.push(relu);
      } else if (layer.kind === "flatten") {
        shape = [product(input)];
      } else if (layer.kind === "linear") {
        const w = layerWeights(tensors, layer.name, [product(input)], used);
        shape = [w.shape[0]];
        steps.push((x) => linear(x, w.weight, w.bias));
      }
    }
    const unused = Object.keys(tensors).filter((name) => !used.has(name)).sort();
    if (unused.length) throw new ShapeMismatch(`the page does not use ${unused.join(", ")}`);
    if (!fits(shape, [nClasses])) {
      throw new ShapeMismatch(`the CNN gives ${shape} values, for ${nClasses} classes`);
    }
    return function probabilities(pixels) {
      let x = new Float64Array(PIXELS);
      for (let i = 0; i < PIXELS; i++) x[i] = (pixels[i] / 255 - mean) / std;
      for (const step of steps) x = step(x);
      return softmax(x); // Net's log_softmax, exponentiated
    };
  }

  // ---- k-means: the nearest centroids to pixel / 255, by squared distance. ----

  // centroids: k x 784 values, row after row; a function from 784 bytes to the indices and
  // squared distances of the `count` nearest, nearest first (ties: the lower index first).
  function loadKmeans(centroids, count) {
    if (centroids.length % PIXELS !== 0) {
      throw new ShapeMismatch(`${centroids.length} centroid values, not rows of ${PIXELS}`);
    }
    const k = centroids.length / PIXELS;
    return function nearest(pixels) {
      const found = [];
      for (let c = 0; c < k; c++) {
        let distance = 0;
        for (let i = 0; i < PIXELS; i++) {
          const d = pixels[i] / 255 - centroids[c * PIXELS + i];
          distance += d * d;
        }
        found.push({ index: c, distance: distance });
      }
      found.sort((a, b) => a.distance - b.distance || a.index - b.index);
      return found.slice(0, count);
    };
  }

  // The stage's data (stages/demo_page.py page_data) -> what the page computes with.
  function load(data, nearestCount) {
    const tensors = {};
    for (const [name, { shape, data: values }] of Object.entries(data.cnn)) {
      tensors[name] = { shape: shape, values: decodeFloats(values) };
    }
    const centroids = decodeFloats(data.kmeans.centroids);
    const nearest = loadKmeans(centroids, nearestCount);
    if (data.kmeans.labels.length !== centroids.length / PIXELS) {
      throw new ShapeMismatch(`${data.kmeans.labels.length} labels for the centroids`);
    }
    return {
      probabilities: loadCnn(tensors, data.mean, data.std, data.classes.length),
      nearest: nearest,
      centroids: centroids,
      testImages: decodeBytes(data.test.images),
    };
  }

  return { FIELD, PIXELS, BlankImage, ShapeMismatch, prepare, loadCnn, loadKmeans, load };
})();

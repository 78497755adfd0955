// charnn's stepper in JavaScript: one character at a time through an exported model, for every
// cell charnn has (rnn, rnn-relu, lstm, gru, peephole, cifg, mogrifier). The page `charnn export
// --format html` writes embeds this file; Node runs the same file in charnn's tests, which compare
// its probabilities with the NumPy stepper's (charnn/stepper.py).
//
// A model is the JSON that charnn.export.web writes: the cell's gate blocks in row order (as
// PyTorch stacks them), the vocabulary, and every tensor as float32 in one base64 string.
// Arithmetic is in float64; weights stay float32 as trained.
(function (root) {
  "use strict";

  function decodeBase64(text) {
    if (typeof Buffer !== "undefined") {
      const bytes = Buffer.from(text, "base64");
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    }
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  // spec: {cell, layers, hidden, embed, vocab, gates, peepholes, rounds, labels, labelSize,
  // tensors: {name: [offset, shape]}, data: base64 float32}; rounds[k]: the names of layer k's
  // mogrifier matrices Q¹, R², Q³, ... (empty for other cells); a conditioned model's labels (its
  // "label_embed.weight" row 0 is "any", row k + 1 labels[k]) join layer 0's input
  function loadModel(spec) {
    const buffer = decodeBase64(spec.data);
    const tensor = (name) => {
      const [offset, shape] = spec.tensors[name];
      const size = shape.reduce((a, b) => a * b, 1);
      return new Float32Array(buffer, 4 * offset, size);
    };
    const layers = [];
    for (let k = 0; k < spec.layers; k++) {
      layers.push({
        inputs: k === 0 ? spec.embed + (spec.labelSize || 0) : spec.hidden,
        wIh: tensor(`weight_ih_l${k}`), // (G·H, inputs)
        wHh: tensor(`weight_hh_l${k}`), // (G·H, H)
        bIh: tensor(`bias_ih_l${k}`),
        bHh: tensor(`bias_hh_l${k}`),
        peep: spec.peepholes.length ? tensor(`peephole_l${k}`) : null, // (P·H,)
        rounds: (spec.rounds ? spec.rounds[k] : []).map(tensor), // Q^i (inputs, H), R^i (H, inputs)
      });
    }
    return {
      cell: spec.cell,
      hidden: spec.hidden,
      vocab: Array.from(spec.vocab), // by code point, as Python indexes its str
      gates: spec.gates,
      peepholes: spec.peepholes,
      embed: tensor("embed.weight"), // (vocab, E)
      embedSize: spec.embed,
      labels: spec.labels || [],
      labelSize: spec.labelSize || 0,
      labelEmbed: spec.labels && spec.labels.length ? tensor("label_embed.weight") : null,
      decoderW: tensor("decoder.weight"), // (vocab, H)
      decoderB: tensor("decoder.bias"),
      layers,
    };
  }

  function initialState(model) {
    const H = model.hidden;
    const cellState = model.gates.includes("forget"); // the LSTM family keeps C
    return model.layers.map(() => ({ h: new Float64Array(H), c: cellState ? new Float64Array(H) : null }));
  }

  // out = W·x + b for W (rows, n) stored row after row
  function affine(W, x, b, rows) {
    const n = x.length;
    const out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let sum = b[r];
      const base = r * n;
      for (let j = 0; j < n; j++) sum += W[base + j] * x[j];
      out[r] = sum;
    }
    return out;
  }

  const sigmoid = (a) => 1 / (1 + Math.exp(-a));

  // the mogrifier's rounds: x ← 2σ(Q^i·h) ⊙ x for odd i, h ← 2σ(R^i·x) ⊙ h for even i; returns
  // gated copies [x, h], which the LSTM step then reads (x and h as they were for other cells)
  function mogrify(layer, x, h) {
    if (!layer.rounds.length) return [x, h];
    [x, h] = [Float64Array.from(x), Float64Array.from(h)]; // the caller's arrays are states
    layer.rounds.forEach((weight, j) => {
      const [target, by] = j % 2 === 0 ? [x, h] : [h, x]; // round j + 1: odd gates x
      const gate = affine(weight, by, new Float64Array(target.length), target.length);
      target.forEach((v, u) => (target[u] = 2 * sigmoid(gate[u]) * v));
    });
    return [x, h];
  }

  // one layer's step: returns its new {h, c}; x is its input (embedding or the layer below's h)
  function layerStep(model, layer, x, prev) {
    const H = model.hidden;
    const G = model.gates.length;
    const [xIn, hIn] = mogrify(layer, x, prev.h);
    const xw = affine(layer.wIh, xIn, layer.bIh, G * H); // W·x_t + b_ih
    const hw = affine(layer.wHh, hIn, layer.bHh, G * H); // U·h_{t-1} + b_hh
    const at = (gate) => H * model.gates.indexOf(gate); // where a gate's block starts
    const peep = (gate) => H * model.peepholes.indexOf(gate);
    const h = new Float64Array(H);
    const c = prev.c ? new Float64Array(H) : null;
    const cell = model.cell;
    for (let u = 0; u < H; u++) {
      const a = (gate) => xw[at(gate) + u] + hw[at(gate) + u];
      if (cell === "rnn") {
        h[u] = Math.tanh(a("hidden"));
      } else if (cell === "rnn-relu") {
        h[u] = Math.max(a("hidden"), 0);
      } else if (cell === "gru") {
        // n = tanh(W_n·x + b_in + r ⊙ (U_n·h + b_hn)); h = (1 − z) ⊙ n + z ⊙ h_{t-1}
        const r = sigmoid(a("reset"));
        const z = sigmoid(a("update"));
        const n = Math.tanh(xw[at("candidate") + u] + r * hw[at("candidate") + u]);
        h[u] = (1 - z) * n + z * prev.h[u];
      } else if (cell === "lstm" || cell === "cifg" || cell === "mogrifier") {
        const f = sigmoid(a("forget"));
        const i = cell === "cifg" ? 1 - f : sigmoid(a("input")); // cifg: coupled gates
        c[u] = f * prev.c[u] + i * Math.tanh(a("candidate"));
        h[u] = sigmoid(a("output")) * Math.tanh(c[u]);
      } else if (cell === "peephole") {
        // the gates also see C through diagonal weights; the output gate sees the new C
        const p = layer.peep;
        const f = sigmoid(a("forget") + p[peep("forget") + u] * prev.c[u]);
        const i = sigmoid(a("input") + p[peep("input") + u] * prev.c[u]);
        c[u] = f * prev.c[u] + i * Math.tanh(a("candidate"));
        h[u] = sigmoid(a("output") + p[peep("output") + u] * c[u]) * Math.tanh(c[u]);
      } else {
        throw new Error(`unknown cell ${cell}`);
      }
    }
    return { h, c };
  }

  // a conditioned model's label vector from weights over "any" and its labels (a mix)
  function labelVector(model, weights) {
    const L = model.labelSize;
    const vector = new Float64Array(L);
    weights.forEach((w, k) => {
      for (let j = 0; j < L; j++) vector[j] += w * model.labelEmbed[k * L + j];
    });
    return vector;
  }

  // one character id in (in the label `label`, a conditioned model's labelVector; none: "any");
  // the logits for the next one and the new state out
  function step(model, state, id, label) {
    const E = model.embedSize;
    let x = Float64Array.from(model.embed.subarray(id * E, (id + 1) * E));
    if (model.labelEmbed) {
      const vector = label || labelVector(model, [1]);
      const joined = new Float64Array(E + model.labelSize);
      joined.set(x);
      joined.set(vector, E);
      x = joined;
    }
    const next = [];
    model.layers.forEach((layer, k) => {
      const s = layerStep(model, layer, x, state[k]);
      next.push(s);
      x = s.h;
    });
    const logits = affine(model.decoderW, x, model.decoderB, model.vocab.length);
    return { logits, state: next };
  }

  // softmax(logits / temperature); temperature 0: all on the most likely character
  function probabilities(logits, temperature) {
    const n = logits.length;
    const probs = new Float64Array(n);
    if (temperature === 0) {
      let best = 0;
      for (let i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
      probs[best] = 1;
      return probs;
    }
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, logits[i] / temperature);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += probs[i] = Math.exp(logits[i] / temperature - max);
    for (let i = 0; i < n; i++) probs[i] /= sum;
    return probs;
  }

  // an index drawn from probs, with u uniform in [0, 1)
  function draw(probs, u) {
    let total = 0;
    for (let i = 0; i < probs.length; i++) {
      total += probs[i];
      if (u < total) return i;
    }
    return probs.length - 1; // rounding left u above the last sum
  }

  const api = { loadModel, initialState, step, labelVector, probabilities, draw };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.charnnStepper = api;
})(this);

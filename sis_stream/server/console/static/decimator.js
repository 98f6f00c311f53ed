// Rational polyphase resampler for the microphone path: native rate (44.1/48 kHz...) -> 16 kHz.
//
// A Kaiser-windowed sinc low-pass (pass band to 0.4375 x the lower rate, stop band from its
// Nyquist frequency, ~80 dB) applied in polyphase form: up by L, filter, down by M, computing only
// the outputs kept. No box-filter averaging: a box filter lets everything between 8 kHz and the
// input's Nyquist frequency alias back into the speech band.
//
// Output sample n is the filter output at input position floor(n*M/L); it is produced as soon as
// that input has arrived, so n_in input samples give exactly ceil(n_in * L / M) outputs (the
// count the console checks).

function gcd(a, b) {
  while (b) { [a, b] = [b, a % b]; }
  return a;
}

// Zeroth-order modified Bessel function of the first kind (power series).
function besselI0(x) {
  let sum = 1, term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 64; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

// Low-pass prototype at rate inRate * up: `taps` coefficients, gain `up` in the pass band.
export function designLowpass(inRate, outRate, { attenuationDb = 80 } = {}) {
  const g = gcd(inRate, outRate);
  const up = outRate / g, down = inRate / g;
  const low = Math.min(inRate, outRate);
  const stopHz = low / 2;               // nothing above the lower Nyquist frequency survives
  const passHz = low * 0.4375;          // 7 kHz for 16 kHz output
  const cutoffHz = (passHz + stopHz) / 2;
  const fs = inRate * up;
  const beta = attenuationDb > 50 ? 0.1102 * (attenuationDb - 8.7)
    : 0.5842 * Math.pow(attenuationDb - 21, 0.4) + 0.07886 * (attenuationDb - 21);
  const dw = (2 * Math.PI * (stopHz - passHz)) / fs;
  let n = Math.ceil((attenuationDb - 7.95) / (2.285 * dw)) + 1;
  const perPhase = Math.ceil(n / up);
  n = perPhase * up;
  const h = new Float32Array(n);
  const mid = (n - 1) / 2;
  const fc = cutoffHz / fs;             // cycles per sample at the up-sampled rate
  const i0b = besselI0(beta);
  for (let i = 0; i < n; i++) {
    const t = i - mid;
    const sinc = t === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * t) / (Math.PI * t);
    const r = (2 * i) / (n - 1) - 1;
    const w = besselI0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / i0b;
    h[i] = sinc * w * up;
  }
  return { taps: h, up, down, perPhase, passHz, stopHz };
}

export class RationalResampler {
  constructor(inRate, outRate, options = {}) {
    if (!(inRate > 0 && outRate > 0 && Number.isInteger(inRate) && Number.isInteger(outRate))) {
      throw new Error(`sample rates must be positive integers, got ${inRate} -> ${outRate}`);
    }
    this.inRate = inRate;
    this.outRate = outRate;
    this.passthrough = inRate === outRate;
    this.samplesIn = 0;
    this.samplesOut = 0;
    if (this.passthrough) return;
    const d = designLowpass(inRate, outRate, options);
    this.up = d.up;
    this.down = d.down;
    this.k = d.perPhase;
    // phases[p][k] = h[p + k*up]: the coefficients applied to x[i - k].
    this.phases = [];
    for (let p = 0; p < d.up; p++) {
      const ph = new Float32Array(d.perPhase);
      for (let k = 0; k < d.perPhase; k++) ph[k] = d.taps[p + k * d.up];
      this.phases.push(ph);
    }
    // History: the last k-1 inputs before the current chunk (zeros at the start).
    this.hist = new Float32Array(this.k - 1);
    this.nextOut = 0;                   // index n of the next output sample
  }

  // Resample one chunk of float samples; returns the outputs it completes (Float32Array).
  process(x) {
    const n0 = this.samplesIn;
    this.samplesIn += x.length;
    if (this.passthrough) {
      this.samplesOut += x.length;
      return Float32Array.from(x);
    }
    const { up, down, k, phases, hist } = this;
    const hl = hist.length;
    const buf = new Float32Array(hl + x.length);
    buf.set(hist, 0);
    buf.set(x, hl);
    const out = [];
    for (;;) {
      const n = this.nextOut;
      // Input index i = floor(n*down/up), using exact integer arithmetic for the phase.
      const num = n * down;
      const i = Math.floor(num / up);
      if (i >= this.samplesIn) break;
      const p = num - i * up;
      const ph = phases[p];
      const j = i - n0 + hl;            // position of x[i] in buf
      let acc = 0;
      for (let t = 0; t < k; t++) acc += ph[t] * buf[j - t];
      out.push(acc);
      this.nextOut = n + 1;
    }
    if (buf.length >= hl) hist.set(buf.subarray(buf.length - hl));
    this.samplesOut += out.length;
    return Float32Array.from(out);
  }

  // Outputs n_in inputs give (see the file comment).
  static outputCount(nIn, inRate, outRate) {
    if (nIn <= 0) return 0;
    if (inRate === outRate) return nIn;
    const g = gcd(inRate, outRate);
    return Math.ceil((nIn * (outRate / g)) / (inRate / g));
  }
}

// Float [-1, 1] -> 16-bit signed PCM (clipped, rounded).
export function floatToPcm16(x) {
  const out = new Int16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = Math.round(x[i] * 32767);
    out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return out;
}

// Amplitude response of `resampler`-style processing for a sine at `freqHz`: feed `seconds`
// of the tone, measure the RMS of the steady-state output (first and last 20 ms skipped) against
// the input's (for the unit tests and for anyone checking a browser by hand).
export function toneGainDb(inRate, outRate, freqHz, seconds = 0.5) {
  const r = new RationalResampler(inRate, outRate);
  const n = Math.round(inRate * seconds);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = 0.5 * Math.sin((2 * Math.PI * freqHz * i) / inRate);
  const y = r.process(x);
  const skip = Math.round(outRate * 0.02) + Math.ceil((r.k || 0) / 2 * outRate / inRate);
  let s = 0, c = 0;
  for (let i = skip; i < y.length - skip; i++) { s += y[i] * y[i]; c++; }
  const rms = Math.sqrt(s / Math.max(1, c));
  return 20 * Math.log10(rms / (0.5 / Math.SQRT2) + 1e-12);
}

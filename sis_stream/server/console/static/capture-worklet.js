// AudioWorklet processor: microphone (any rate, any channel count) -> 16 kHz 16-bit mono PCM
// frames of `frameSamples` samples (default 1600 = 100 ms), posted to the page in order.
//
// Messages to the page: {type: "frame", pcm: ArrayBuffer, captured} for every full frame;
// after {type: "flush"} from the page, the last partial frame (if any) and
// {type: "flushed", captured, produced}. `captured` counts input samples (per channel) seen so
// far, so the page can check that every captured sample was sent.
import { RationalResampler, floatToPcm16 } from "./decimator.js";

class Pcm16kCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.outRate = o.outRate || 16000;
    this.frameSamples = o.frameSamples || 1600;
    this.resampler = new RationalResampler(sampleRate, this.outRate);
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
    this.captured = 0;
    this.produced = 0;
    this.done = false;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === "flush") this.flush();
    };
  }

  emit(samples) {
    let pos = 0;
    while (pos < samples.length) {
      const n = Math.min(this.frameSamples - this.fill, samples.length - pos);
      this.frame.set(samples.subarray(pos, pos + n), this.fill);
      this.fill += n;
      pos += n;
      if (this.fill === this.frameSamples) {
        const buf = this.frame.buffer;
        this.port.postMessage({ type: "frame", pcm: buf, captured: this.captured }, [buf]);
        this.frame = new Int16Array(this.frameSamples);
        this.fill = 0;
      }
    }
  }

  flush() {
    if (this.done) return;
    this.done = true;
    if (this.fill > 0) {
      const last = this.frame.slice(0, this.fill);
      this.port.postMessage({ type: "frame", pcm: last.buffer, captured: this.captured }, [last.buffer]);
      this.fill = 0;
    }
    this.port.postMessage({ type: "flushed", captured: this.captured, produced: this.produced });
  }

  process(inputs) {
    if (this.done) return false;
    const chans = inputs[0];
    if (!chans || chans.length === 0) return true;
    const n = chans[0].length;
    let mono = chans[0];
    if (chans.length > 1) {
      mono = new Float32Array(n);
      for (const c of chans) for (let i = 0; i < n; i++) mono[i] += c[i] / chans.length;
    }
    this.captured += n;
    const y = floatToPcm16(this.resampler.process(mono));
    this.produced += y.length;
    this.emit(y);
    return true;
  }
}

registerProcessor("pcm16k-capture", Pcm16kCapture);

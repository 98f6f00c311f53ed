"""Moonshine base (folded, ONNX Runtime) against Whisper tiny.en on real recorded speech, one run.

Same clips, same process, one thread each (the engines as the server loads them):

- ``wer``: word error rate on the Asterisk telephone prompts (8 kHz, upsampled to 16 kHz by our
  resampler) and the five LibriVox utterances of pocketsphinx-testdata (16 kHz);
- ``cpu``: CPU seconds of one decode of 1 / 3 / 8 / 15 s of speech (prompts joined with 0.2 s
  gaps), median of three, per engine, and the ratio whisper / moonshine;
- ``rss``: resident memory after loading, and its growth over 1,000 Moonshine decodes (after 50
  warm-up decodes).

The ``int8`` benchmarks compare the engine's two precisions (``precision="int8"``, the default,
against the float32 fold): WER on every real prompt with the changed transcripts, CPU one by one
and batched, session load time, and the cost by length against Whisper (the routing crossover).

Run: ``python -m pytest benchmarks/bench_moonshine.py -q -s`` (about 3 minutes on a quiet box;
add ``-k int8`` for the precision comparison only, about 10 minutes).
``BENCH_MOONSHINE_DECODES`` changes the 1,000. Needs the ``engines`` extra and the Debian packages
``asterisk-core-sounds-en-wav`` and ``pocketsphinx-testdata``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from realspeech import asterisk_prompts, librivox  # noqa: E402

from sis_stream.audio.resample import resample  # noqa: E402
from sis_stream.text import word_errors  # noqa: E402

pytestmark = pytest.mark.engine

DECODES = int(os.environ.get("BENCH_MOONSHINE_DECODES", "1000"))
BUCKETS_S = (1, 3, 8, 15)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from sis_stream.engines.moonshine import MoonshineEngine
    from sis_stream.engines.whisper import WhisperEngine

    rss0 = _rss_mb()
    whisper = WhisperEngine(num_workers=1)
    rss1 = _rss_mb()
    moonshine = MoonshineEngine(cache_dir=os.environ.get("SIS_STREAM_CACHE_DIR") or tmp_path_factory.mktemp("c"))
    rss2 = _rss_mb()
    print(f"\nRSS: start {rss0:.0f} MB, +tiny.en {rss1 - rss0:.0f} MB, +Moonshine folded {rss2 - rss1:.0f} MB "
          f"(load {moonshine.load_seconds:.1f} s, fold included on a cold cache)")
    return {"moonshine": moonshine, "whisper": whisper}


def _decode(engines, name, pcm):
    if name == "moonshine":
        return engines[name].decode(pcm)[0]
    return engines[name].decode(pcm, language="en", word_timestamps=False, hotwords=None, final=True)[0]


def _clips():
    clips = [("8 kHz prompts", u.text, resample(u.pcm, 8000, 16000)) for u in asterisk_prompts()[:60]]
    clips += [("LibriVox", u.text, u.pcm) for u in librivox()]
    return clips


def bench_wer(engines):
    clips = _clips()
    rows = []
    for name in ("moonshine", "whisper"):
        by_set: dict[str, list] = {}
        for label, ref, pcm in clips:
            by_set.setdefault(label, []).append(word_errors(ref, _decode(engines, name, pcm)))
        total = [e for errs in by_set.values() for e in errs]
        agg = sum(total[1:], total[0])
        parts = " / ".join(f"{sum(v[1:], v[0]).rate:.1%}" for v in by_set.values())
        rows.append((name, agg.rate))
        print(f"WER {name:9s}: all {agg.rate:.1%} of {agg.reference_length} words "
              f"({' / '.join(by_set)}: {parts})")
    gap = rows[0][1] - rows[1][1]
    print(f"WER moonshine - whisper: {gap * 100:+.1f} points (target: within 0.5)")


def _speech_of(seconds: float) -> np.ndarray:
    parts, n = [], 0
    gap = np.zeros(3200, np.int16)
    for u in asterisk_prompts():
        pcm = resample(u.pcm, 8000, 16000)
        parts += [pcm, gap]
        n += len(pcm) + len(gap)
        if n >= seconds * 16000:
            break
    return np.concatenate(parts)[: int(seconds * 16000)]


def bench_cpu_per_utterance(engines):
    print("CPU-s per decode (median of 3, one thread; process CPU time, so CTranslate2 worker threads count):")
    for s in BUCKETS_S:
        pcm = _speech_of(s)
        cost = {}
        for name in ("moonshine", "whisper"):
            times = []
            for _ in range(3):
                t0 = time.process_time()
                _decode(engines, name, pcm)
                times.append(time.process_time() - t0)
            cost[name] = statistics.median(times)
        print(f"  {s:>2} s: moonshine {cost['moonshine']:.3f}  whisper {cost['whisper']:.3f}  "
              f"whisper/moonshine {cost['whisper'] / cost['moonshine']:.1f}x")


def bench_rss_over_decodes(engines):
    clips = [resample(u.pcm, 8000, 16000) for u in asterisk_prompts()[:20]]
    m = engines["moonshine"]
    for i in range(50):
        m.decode(clips[i % len(clips)])
    before = _rss_mb()
    t0 = time.process_time()
    for i in range(DECODES):
        m.decode(clips[i % len(clips)])
    cpu = time.process_time() - t0
    after = _rss_mb()
    audio = sum(len(clips[i % len(clips)]) for i in range(DECODES)) / 16000
    print(f"RSS over {DECODES} Moonshine decodes: {before:.0f} -> {after:.0f} MB ({after - before:+.1f} MB); "
          f"RTF {cpu / audio:.3f} ({cpu:.1f} CPU-s for {audio:.0f} s of audio)")
    assert after - before < 50, "Moonshine decodes leak memory"


# --- Batched decoding (MoonshineEngine.decode_batch) -------------------------------------------
# Run: ``python -m pytest benchmarks/bench_moonshine.py -s -k batch`` (Moonshine only, no Whisper).

PAD_LEVELS = tuple(float(p) for p in os.environ.get(
    "BENCH_MOONSHINE_PAD_LEVELS", "0,0.05,0.10,0.15,0.20,0.30,0.50,1.00").split(","))
BATCH_SIZES = (1, 2, 4, 8, 16)
PAD_SECONDS_EDGES = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, float("inf"))


@pytest.fixture(scope="module")
def moonshine():
    from sis_stream.engines.moonshine import MoonshineEngine

    return MoonshineEngine(cache_dir=os.environ.get("SIS_STREAM_CACHE_DIR") or None)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} core(s)"


def _short_clips(lo_s: float, hi_s: float) -> list[tuple[str, np.ndarray]]:
    clips = [(u.text, resample(u.pcm, 8000, 16000)) for u in asterisk_prompts()]
    clips += [(u.text, u.pcm) for u in librivox()]
    return [(t, pcm) for t, pcm in clips if lo_s * 16000 <= len(pcm) <= hi_s * 16000]


@pytest.mark.parametrize("tail_s", [0.0, 0.5], ids=["trimmed", "tail0.5"])
def bench_batch_padding_tolerance(moonshine, tail_s):
    """How often padding an item with p % of silence (in a batch beside a longer item) changes its
    transcript, against the item decoded alone: the data behind ``batch_compatible``.

    ``trimmed``: the prompts as recorded (cut tight at the last word); ``tail0.5``: with 0.5 s of
    silence after the speech, as the server's segments end (the ``vad_tail`` that closed them).
    """
    tail = np.zeros(int(tail_s * 16000), np.int16)
    clips = [(t, np.concatenate([pcm, tail])) for t, pcm in _short_clips(1.0, 8.0)]
    alone = [moonshine.decode(pcm)[0] for _, pcm in clips]
    print(f"\nPadding tolerance over {len(clips)} real clips of 1-8 s + {tail_s} s of silence ({_load()}):")
    print("  pad %  | text changed | words changed (normalised) | WER alone -> padded | max pad s")
    by_seconds: dict[float, list[bool]] = {}
    for p in PAD_LEVELS:
        changed = words_changed = 0
        errs_alone, errs_padded = [], []
        max_pad = 0.0
        for (ref, pcm), base in zip(clips, alone):
            n = len(pcm)
            filler = np.zeros(n + round(n * p), np.int16)
            text = moonshine.decode_batch([pcm, filler])[0][0]
            max_pad = max(max_pad, (len(filler) - n) / 16000)
            changed += text != base
            words_changed += word_errors(base, text).errors > 0
            if p > 0:
                edge = next(b for b in PAD_SECONDS_EDGES if (len(filler) - n) / 16000 <= b)
                by_seconds.setdefault(edge, []).append(word_errors(base, text).errors > 0)
            errs_alone.append(word_errors(ref, base))
            errs_padded.append(word_errors(ref, text))
        wa = sum(errs_alone[1:], errs_alone[0]).rate
        wp = sum(errs_padded[1:], errs_padded[0]).rate
        print(f"  {p:6.0%} | {changed:3d} ({changed / len(clips):5.1%}) | {words_changed:3d} "
              f"({words_changed / len(clips):5.1%})              | {wa:5.1%} -> {wp:5.1%}      | {max_pad:.2f}")
    print("  by seconds of padding (all levels above 0 % pooled): words changed")
    lo = 0.0
    for edge in PAD_SECONDS_EDGES:
        v = by_seconds.get(edge, [])
        if v:
            print(f"    ({lo:.2f}, {edge:.2f}] s: {sum(v):3d} of {len(v):3d} ({sum(v) / len(v):5.1%})")
        lo = edge


def bench_batch_cpu(moonshine):
    """CPU seconds per audio second of ``decode_batch`` of B real 1-4 s prompts against the same
    prompts decoded one by one, side by side (per group: one by one, then the batch)."""
    clips = sorted((pcm for _, pcm in _short_clips(1.0, 4.0)), key=len)
    step = max(1, len(clips) // 48)
    clips = clips[::step][:48]  # 48 prompts spread over 1-4 s, by length
    for pcm in clips[:4]:
        moonshine.decode(pcm)  # warm-up
    audio_s = sum(len(c) for c in clips) / 16000
    print(f"\nBatched Moonshine, {len(clips)} prompts of 1-4 s ({audio_s:.0f} s of audio), groups of B "
          f"consecutive by length; process CPU time ({_load()}):")
    print("   B | one by one CPU-s/audio-s | batch CPU-s/audio-s | batch / one-by-one | padding | "
          "words differ")
    for b in BATCH_SIZES:
        single = batch = 0.0
        padded = differ = 0
        for i in range(0, len(clips), b):
            group = clips[i:i + b]
            t0 = time.process_time()
            alone = [moonshine.decode(pcm)[0] for pcm in group]
            t1 = time.process_time()
            together = [t for t, _ in moonshine.decode_batch(group)]
            t2 = time.process_time()
            single += t1 - t0
            batch += t2 - t1
            padded += sum(len(group[-1]) - len(c) for c in group)
            differ += sum(word_errors(a, t).errors > 0 for a, t in zip(alone, together))
        print(f"  {b:2d} | {single / audio_s:24.4f} | {batch / audio_s:19.4f} | {batch / single:18.2f} | "
              f"{padded / 16000 / audio_s:6.1%} | {differ:2d} of {len(clips)}")
    print(f"  ({_load()} at the end)")


def bench_batched_finals_vs_whisper(engines):
    """CPU per 1-4 s final as the server decodes them: Moonshine in batches of 8 (lengths grouped
    as the decode batcher groups them) against tiny.en in batches of 4 (the batcher's cap for a
    30 s-window model), and both one by one, on the same real prompts in the same run."""
    m, w = engines["moonshine"], engines["whisper"]
    print(f"\nCPU-s per final by length, same prompts, same run; process CPU time ({_load()}):")
    print("  length | n | moonshine 1x1 | moonshine B=8 | whisper 1x1 | whisper B=4 | "
          "whisper/moonshine 1x1 | batched")
    for lo, hi in ((1.0, 2.0), (2.0, 3.0), (3.0, 4.0)):
        clips = sorted((pcm for _, pcm in _short_clips(lo, hi)), key=len)[:24]
        if not clips:
            continue
        cost = dict.fromkeys(("m1", "mb", "w1", "wb"), 0.0)
        for label, fn in (
            ("m1", lambda cs=clips: [m.decode(c) for c in cs]),
            ("mb", lambda cs=clips: [m.decode_batch(cs[i:i + 8]) for i in range(0, len(cs), 8)]),
            ("w1", lambda cs=clips: [w.decode(c, language="en", word_timestamps=False, hotwords=None, final=True)
                                     for c in cs]),
            ("wb", lambda cs=clips: [w.decode_batch(cs[i:i + 4], language="en", final=True)
                                     for i in range(0, len(cs), 4)]),
        ):
            t0 = time.process_time()
            fn()
            cost[label] = (time.process_time() - t0) / len(clips)
        print(f"  {lo:.0f}-{hi:.0f} s | {len(clips)} | {cost['m1']:.3f} | {cost['mb']:.3f} | {cost['w1']:.3f} | "
              f"{cost['wb']:.3f} | {cost['w1'] / cost['m1']:.1f}x | {cost['wb'] / cost['mb']:.1f}x")
    print(f"  ({_load()} at the end)")


# --- Int8 weights (precision="int8", engines/moonshine_quant.py) against the float32 fold ----------
# Run: ``python -m pytest benchmarks/bench_moonshine.py -s -k int8`` (Moonshine only, plus Whisper
# for ``bench_int8_crossover``). Every comparison alternates float32 and int8 rounds in one process
# and counts process CPU time. ``BENCH_MOONSHINE_BLOCKS`` (default "32") adds int8 models of other
# block sizes (built into the cache on first use).

INT8_BLOCKS = tuple(int(b) for b in os.environ.get("BENCH_MOONSHINE_BLOCKS", "32").split(","))


@pytest.fixture(scope="module")
def precisions():
    """name -> MoonshineModel: "float32" (the fold), "int8/<block size>" (int8 decoder) for each
    block size, and "int8+enc" (the encoder int8 too) where the CPU has int8 dot products."""
    from sis_stream.engines.moonshine_fold import folded_model
    from sis_stream.engines.moonshine_model import MoonshineModel, shipped_model_dir
    from sis_stream.engines.moonshine_quant import int8_encoder_supported, quantized_model

    src = shipped_model_dir()
    cache = os.environ.get("SIS_STREAM_CACHE_DIR") or None
    models = {"float32": MoonshineModel(*folded_model(src, cache_dir=cache), src / "tokenizer.bin")}
    for b in INT8_BLOCKS:
        models[f"int8/{b}"] = MoonshineModel(*quantized_model(src, cache_dir=cache, block_size=b),
                                             src / "tokenizer.bin")
    if int8_encoder_supported():
        models["int8+enc"] = MoonshineModel(*quantized_model(src, cache_dir=cache, int8_encoder=True),
                                            src / "tokenizer.bin")
    print(f"\nint8 encoder on this CPU: {int8_encoder_supported()}")
    return models


def _all_prompts() -> list[tuple[str, str, np.ndarray]]:
    """Every real prompt: the Asterisk prompts of any length (8 kHz, upsampled) and LibriVox."""
    clips = [("8 kHz prompts", u.text, resample(u.pcm, 8000, 16000)) for u in asterisk_prompts(min_words=1)]
    clips += [("LibriVox", u.text, u.pcm) for u in librivox()]
    return clips


def bench_int8_wer(precisions):
    """WER of float32 and int8 on every real prompt, decoded alternately; the changed transcripts."""
    clips = _all_prompts()
    names = list(precisions)
    texts: dict[str, list[str]] = {n: [] for n in names}
    cpu = dict.fromkeys(names, 0.0)
    for i, (_, _, pcm) in enumerate(clips):
        for n in (names if i % 2 == 0 else names[::-1]):
            t0 = time.process_time()
            texts[n].append(precisions[n].transcribe(pcm)[0])
            cpu[n] += time.process_time() - t0
    audio_s = sum(len(c[2]) for c in clips) / 16000
    print(f"\nWER on {len(clips)} real prompts ({audio_s:.0f} s of audio), alternating ({_load()}):")
    for n in names:
        errs = [word_errors(ref, t) for (_, ref, _), t in zip(clips, texts[n])]
        by_set: dict[str, list] = {}
        for (label, _, _), e in zip(clips, errs):
            by_set.setdefault(label, []).append(e)
        parts = ", ".join(f"{k} {sum(v[1:], v[0]).rate:.2%}" for k, v in by_set.items())
        agg = sum(errs[1:], errs[0])
        print(f"  {n:9s}: WER {agg.rate:.2%} of {agg.reference_length} words ({parts}); "
              f"CPU {cpu[n]:.1f} s, RTF {cpu[n] / audio_s:.4f}")
    for n in names[1:]:
        changed = [(ref, a, b) for (_, ref, _), a, b in zip(clips, texts["float32"], texts[n]) if a != b]
        print(f"  {n}: {len(changed)} of {len(clips)} transcripts differ from float32:")
        for ref, a, b in changed:
            print(f"    ref    : {ref}\n    float32: {a}\n    {n:7s}: {b}  "
                  f"(errors {word_errors(ref, a).errors} -> {word_errors(ref, b).errors})")
    print(f"  ({_load()} at the end)")


def bench_int8_cpu(precisions):
    """CPU seconds per audio second, one by one and in batches of 4 and 8, on 48 real 1-4 s
    prompts; float32 and int8 alternate group by group."""
    clips = sorted((pcm for _, pcm in _short_clips(1.0, 4.0)), key=len)
    clips = clips[::max(1, len(clips) // 48)][:48]
    names = list(precisions)
    for m in precisions.values():
        for pcm in clips[:4]:
            m.decode(pcm)  # warm-up
    audio_s = sum(len(c) for c in clips) / 16000
    print(f"\nMoonshine CPU-s per audio-s, {len(clips)} prompts of 1-4 s ({audio_s:.0f} s of audio), "
          f"alternating; process CPU time ({_load()}):")
    print("  B | " + " | ".join(f"{n:>9s}" for n in names) + " | " +
          " | ".join(f"{n}/float32" for n in names[1:]))
    for b in (1, 4, 8):
        cost = dict.fromkeys(names, 0.0)
        for rnd in range(2):
            for i in range(0, len(clips), b):
                group = clips[i:i + b]
                for n in (names if (i // b + rnd) % 2 == 0 else names[::-1]):
                    m = precisions[n]
                    t0 = time.process_time()
                    if b == 1:
                        m.decode(group[0])
                    else:
                        m.decode_batch(group)
                    cost[n] += time.process_time() - t0
        per = {n: cost[n] / (2 * audio_s) for n in names}
        print(f"  {b} | " + " | ".join(f"{per[n]:9.4f}" for n in names) + " | " +
              " | ".join(f"{per[n] / per['float32']:.2f}" for n in names[1:]))
    print(f"  ({_load()} at the end)")


def bench_int8_load():
    """Session creation (wall and process CPU) of the float32 fold and the int8 model, with and
    without ``session.disable_prepacking``; rounds alternate, median of 5. Also the CPU of one
    decode of 3 s of speech with each setting (pre-packing lays weights out for the kernels)."""
    import onnxruntime as ort

    from sis_stream.engines.moonshine_fold import folded_model
    from sis_stream.engines.moonshine_model import MoonshineModel, shipped_model_dir
    from sis_stream.engines.moonshine_quant import int8_encoder_supported, quantized_model

    src = shipped_model_dir()
    cache = os.environ.get("SIS_STREAM_CACHE_DIR") or None
    files = {"float32": folded_model(src, cache_dir=cache), "int8": quantized_model(src, cache_dir=cache)}
    if int8_encoder_supported():
        files["int8+enc"] = quantized_model(src, cache_dir=cache, int8_encoder=True)

    def load(paths, prepack):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if not prepack:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        return [ort.InferenceSession(os.fspath(p), opts, providers=["CPUExecutionProvider"]) for p in paths]

    combos = [(n, p) for n in files for p in (True, False)]
    wall: dict = {c: [] for c in combos}
    cpu: dict = {c: [] for c in combos}
    for rnd in range(5):
        for c in (combos if rnd % 2 == 0 else combos[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            sessions = load(files[c[0]], c[1])
            wall[c].append(time.perf_counter() - t0)
            cpu[c].append(time.process_time() - c0)
            del sessions
    pcm = _speech_of(3)
    print(f"\nMoonshine session load (encoder + decoder), median of 5 alternating rounds ({_load()}):")
    print("  model    | prepacking | load wall s | load CPU s | CPU s per decode of 3 s")
    for c in combos:
        model = MoonshineModel(*files[c[0]], src / "tokenizer.bin")
        if not c[1]:
            model._encoder, model._decoder = load(files[c[0]], False)
        model.decode(pcm)
        t0 = time.process_time()
        for _ in range(5):
            model.decode(pcm)
        per = (time.process_time() - t0) / 5
        print(f"  {c[0]:8s} | {'on' if c[1] else 'off':10s} | {statistics.median(wall[c]):11.2f} | "
              f"{statistics.median(cpu[c]):10.2f} | {per:.3f}")
    print(f"  ({_load()} at the end)")


def bench_int8_crossover(precisions):
    """CPU per decode of 2-20 s of speech: float32 and int8 Moonshine against Whisper tiny.en (one
    worker), alternating, median of 3: where Moonshine stops being the cheaper engine."""
    from sis_stream.engines.whisper import WhisperEngine

    whisper = WhisperEngine(num_workers=1)
    names = list(precisions)
    print(f"\nCPU-s per decode by length, median of 3 alternating rounds ({_load()}):")
    print("  length | " + " | ".join(f"{n:>9s}" for n in names) + " | whisper | " +
          " | ".join(f"whisper/{n}" for n in names))
    for s in (2, 4, 6, 8, 10, 12, 15, 20):
        pcm = _speech_of(s)
        times: dict = {n: [] for n in [*names, "whisper"]}
        for rnd in range(3):
            order = [*names, "whisper"]
            for n in (order if rnd % 2 == 0 else order[::-1]):
                t0 = time.process_time()
                if n == "whisper":
                    whisper.decode(pcm, language="en", word_timestamps=False, hotwords=None, final=True)
                else:
                    precisions[n].decode(pcm)
                times[n].append(time.process_time() - t0)
        med = {n: statistics.median(v) for n, v in times.items()}
        print(f"  {s:4d} s | " + " | ".join(f"{med[n]:9.3f}" for n in names) + f" | {med['whisper']:7.3f} | " +
              " | ".join(f"{med['whisper'] / med[n]:.2f}" for n in names))
    print(f"  ({_load()} at the end)")

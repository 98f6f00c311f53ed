"""The ``pocketsphinx`` engine: CMU pocketsphinx 5 with its bundled en-us model, truly incremental.

Cepstral mean normalisation (CMN) and cold starts. pocketsphinx normalises its features with a
live estimate of the cepstral mean that it updates as audio arrives. A decoder that has not
heard the channel yet starts from a generic mean and gets its first utterance largely wrong
(measured on real telephone prompts: most words of the first prompt are lost), and a pooled
decoder otherwise carries the mean of whatever audio its previous stream heard, so a result
would depend on the streams before it. Hence, per stream:

* the decoder's mean is reset to the engine's prior (``cmn_prior``) when the stream opens, so a
  stream's results never depend on earlier streams;
* the first utterance of a stream is decoded twice: live as usual (its partials), and once
  more at ``finalize()`` from its buffered audio, starting from the mean the first pass left,
  which is adapted to this channel and speaker. Later utterances start warm. The cost is one
  extra decode of the first segment of each stream.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import numpy as np

from ..errors import EngineConfigError, EngineOverloadedError, EngineUnavailableError
from .base import (
    DEFAULT_MAX_SEGMENT_S,
    SAMPLE_RATE_HZ,
    Engine,
    EngineStream,
    HotWordStatus,
    Hypothesis,
    Word,
    normalize_hot_words,
)

__all__ = ["DEFAULT_CMN_PRIOR", "DEFAULT_MAX_DECODERS", "SphinxEngine", "SphinxStream"]

logger = logging.getLogger(__name__)

#: Decoders one engine may load. Each holds its own acoustic model, LM and search (~90 MB RSS
#: measured with the bundled en-us model), and a stream holds one from new_stream() to close().
DEFAULT_MAX_DECODERS: Final = 8
#: The CMN prior every stream starts from: pocketsphinx's own ``cmninit`` for the en-us model.
DEFAULT_CMN_PRIOR: Final = "40,3,-1"
#: Words added to the dictionary (from hot words) over the engine's life; more are skipped.
DEFAULT_MAX_ADDED_WORDS: Final = 10_000
# Tokens pocketsphinx puts into segmentations that are not words: sentence markers, silence,
# fillers ([NOISE], ++BREATH++ ...).
_NON_WORDS: Final = frozenset({"<s>", "</s>", "<sil>"})
_ALT_PRON: Final = re.compile(r"\(\d+\)$")  # "word(2)": second pronunciation of "word"
_WORD_RE: Final = re.compile(r"^[a-z][a-z'.\-]*$")


def _is_filler(token: str) -> bool:
    return token in _NON_WORDS or token.startswith(("[", "+"))


def _clean(token: str) -> str:
    return _ALT_PRON.sub("", token)


class _Pooled:
    """One pocketsphinx Decoder plus how many of the engine's added words it has applied."""

    __slots__ = ("applied", "decoder")

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.applied = 0


class SphinxEngine(Engine):
    """pocketsphinx 5 (bundled US English acoustic model, LM and CMU dictionary).

    A pocketsphinx ``Decoder`` holds its model and search state together and is not thread-safe, so
    the engine keeps a bounded pool of decoders: created on demand up to `max_decoders` (one is
    loaded at construction), reused for later streams, never reloaded. Each stream holds one decoder
    from :meth:`new_stream` until ``close()``.

    Parameters
    ----------
    model_dir : str or os.PathLike, optional
        A pocketsphinx model directory holding ``en-us/`` (acoustic model), ``en-us.lm.bin`` and
        ``cmudict-en-us.dict``. Default: the model bundled with the ``pocketsphinx`` wheel.
    max_decoders : int
        Decoder pool size = maximum concurrent streams.
    acquire_timeout_s : float
        Overflow policy when every decoder is taken: wait up to this long for one to be released,
        then raise :class:`~sis_stream.errors.EngineOverloadedError` ("reject"; 0 = at once).
    dither : bool
        pocketsphinx's 1-LSB dither (seeded, so deterministic). Digitally silent input (exact
        zeros, as synthesised speech has) otherwise derails its log-energy features and CMN.
    max_segment_s : float
        Cap on one open segment.
    max_added_words : int
        Bound on words the engine adds to its dictionary from hot words (they persist engine-wide).
    config : mapping, optional
        Extra ``pocketsphinx.Config`` settings (e.g. ``{"beam": 1e-60}``).
    cmn_prior : str, optional
        Cepstral mean every stream starts from (comma-separated numbers, as pocketsphinx's
        ``cmninit``). Default: the ``cmninit`` of the configuration (:data:`DEFAULT_CMN_PRIOR`
        for the bundled model).
    first_pass_redecode : bool
        Decode the first utterance of each stream a second time, warm (see the module docstring).

    Raises
    ------
    EngineUnavailableError
        If pocketsphinx is not installed or the model cannot be loaded.
    EngineConfigError
        For a bad `model_dir` or numeric setting.
    """

    name = "pocketsphinx"
    languages = ("en",)
    punctuates = False

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *,
                 max_decoders: int = DEFAULT_MAX_DECODERS, acquire_timeout_s: float = 0.0,
                 dither: bool = True, max_segment_s: float = DEFAULT_MAX_SEGMENT_S,
                 max_added_words: int = DEFAULT_MAX_ADDED_WORDS,
                 config: Mapping[str, Any] | None = None, cmn_prior: str | None = None,
                 first_pass_redecode: bool = True) -> None:
        try:
            import pocketsphinx
        except ImportError as exc:
            raise EngineUnavailableError(
                "pocketsphinx is not installed: `pip install 'sis-stream[engines]'`"
            ) from exc
        if not isinstance(max_decoders, int) or max_decoders < 1:
            raise EngineConfigError(f"max_decoders must be an int >= 1, got {max_decoders!r}")
        if not acquire_timeout_s >= 0:
            raise EngineConfigError(f"acquire_timeout_s must be >= 0, got {acquire_timeout_s!r}")
        if not max_segment_s > 0:
            raise EngineConfigError(f"max_segment_s must be > 0, got {max_segment_s!r}")
        if not isinstance(max_added_words, int) or max_added_words < 0:
            raise EngineConfigError(f"max_added_words must be an int >= 0, got {max_added_words!r}")
        base = os.fspath(model_dir) if model_dir is not None else pocketsphinx.get_model_path()
        hmm = os.path.join(base, "en-us", "en-us")
        if model_dir is not None and not os.path.isdir(os.path.join(base, "en-us")):
            raise EngineConfigError(
                f"pocketsphinx model_dir {base!r} must hold en-us/ (acoustic model), "
                "en-us/en-us.lm.bin and en-us/cmudict-en-us.dict"
            )
        self._ps = pocketsphinx
        self._settings: dict[str, Any] = {
            "hmm": hmm,
            "lm": os.path.join(base, "en-us", "en-us.lm.bin"),
            "dict": os.path.join(base, "en-us", "cmudict-en-us.dict"),
            "samprate": SAMPLE_RATE_HZ,
            "loglevel": "FATAL",
            "dither": bool(dither),
            "seed": 1,  # dither noise is seeded: same input, same output
        }
        self._settings.update(dict(config or {}))
        self.max_decoders = max_decoders
        self.acquire_timeout_s = float(acquire_timeout_s)
        self.max_segment_s = float(max_segment_s)
        self.max_added_words = max_added_words
        self.description = f"pocketsphinx {base}/en-us (max {max_decoders} decoders)"
        self._cond = threading.Condition()
        self._free: list[_Pooled] = []
        self._n_loaded = 0
        self._added: list[tuple[str, str]] = []  # (word, phones) added from hot words, in order
        self._added_set: set[str] = set()
        t0 = time.perf_counter()
        self._free.append(self._load())  # fail at construction, not at the first stream
        self.frame_rate = int(self._free[0].decoder.config["frate"])
        prior = cmn_prior if cmn_prior is not None else str(self._free[0].decoder.config["cmninit"])
        try:
            self._free[0].decoder.set_cmn(prior)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise EngineConfigError(f"cmn_prior must be comma-separated numbers, got {prior!r}: {exc}") from exc
        self.cmn_prior = prior
        self.first_pass_redecode = bool(first_pass_redecode)
        logger.info("pocketsphinx decoder loaded in %.2f s", time.perf_counter() - t0)

    # -- decoder pool -----------------------------------------------------------------------------
    def _load(self) -> _Pooled:
        try:
            config = self._ps.Config(**self._settings)
            decoder = self._ps.Decoder(config)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise EngineUnavailableError(f"pocketsphinx could not load its model: {exc}") from exc
        self._n_loaded += 1
        return _Pooled(decoder)

    @property
    def decoders_loaded(self) -> int:
        """Decoders created so far (<= ``max_decoders``)."""
        return self._n_loaded

    @property
    def decoders_free(self) -> int:
        """Loaded decoders not held by a stream."""
        with self._cond:
            return len(self._free)

    def _acquire(self) -> _Pooled:
        deadline = time.monotonic() + self.acquire_timeout_s
        with self._cond:
            while True:
                if self._free:
                    pooled = self._free.pop()
                    break
                if self._n_loaded < self.max_decoders:
                    self._n_loaded += 1  # reserve the slot; load outside the lock
                    try:
                        pooled = self._load_unlocked()
                    finally:
                        self._n_loaded -= 1  # _load counted it again on success
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EngineOverloadedError(
                        f"all {self.max_decoders} pocketsphinx decoders are in use (overflow policy "
                        f"'reject' after {self.acquire_timeout_s:g} s); close streams or raise max_decoders"
                    )
                self._cond.wait(remaining)
            pending = self._added[pooled.applied:]
        # Bring this decoder's dictionary up to date with words other streams added.
        for word, phones in pending:
            if pooled.decoder.lookup_word(word) is None:  # it may have added the word itself
                pooled.decoder.add_word(word, phones, True)
        pooled.applied += len(pending)
        return pooled

    def _load_unlocked(self) -> _Pooled:
        self._cond.release()
        try:
            return self._load()
        finally:
            self._cond.acquire()

    def _release(self, pooled: _Pooled) -> None:
        with self._cond:
            self._free.append(pooled)
            self._cond.notify()

    # -- hot words ----------------------------------------------------------------------------------
    def _apply_hot_words(self, pooled: _Pooled, entries: tuple[str | tuple[str, str], ...]
                         ) -> tuple[HotWordStatus, ...]:
        decoder = pooled.decoder
        statuses = []
        for entry in entries:
            text, pron = (entry, None) if isinstance(entry, str) else entry
            words = text.lower().split()
            if pron is not None and len(words) != 1:
                statuses.append(HotWordStatus(text, False, "a pronunciation pair must name a single word"))
                continue
            notes, ok = [], True
            for word in words:
                if not _WORD_RE.match(word):
                    notes.append(f"{word!r}: skipped, not a word of letters")
                    ok = False
                    continue
                known = decoder.lookup_word(word)
                if known is not None:
                    notes.append(f"{word!r}: in the dictionary ({known}); pocketsphinx has no per-word boost")
                    continue
                if pron is None:
                    notes.append(
                        f"{word!r}: skipped, not in the pocketsphinx dictionary and pocketsphinx 5 has no "
                        "grapheme-to-phoneme converter; pass (word, 'ARPABET PHONES') to add it"
                    )
                    ok = False
                    continue
                phones = " ".join(pron.upper().split())
                with self._cond:
                    full = len(self._added) >= self.max_added_words and word not in self._added_set
                if full:
                    notes.append(f"{word!r}: skipped, the engine already added {self.max_added_words} words")
                    ok = False
                    continue
                try:
                    decoder.add_word(word, phones, True)
                except RuntimeError:
                    notes.append(f"{word!r}: skipped, pocketsphinx rejected the pronunciation {phones!r} "
                                 "(phones must be ARPAbet symbols of the en-us model, e.g. 'HH AH L OW')")
                    ok = False
                    continue
                with self._cond:
                    if word not in self._added_set:
                        self._added.append((word, phones))
                        self._added_set.add(word)
                notes.append(f"{word!r}: added to the dictionary as {phones!r} (kept engine-wide)")
            statuses.append(HotWordStatus(text, ok, "; ".join(notes)))
        return tuple(statuses)

    # -- streams -------------------------------------------------------------------------------------
    def new_stream(self, *, language: str, hot_words: Iterable[str | tuple[str, str]] = (),
                   word_info: bool = False) -> SphinxStream:
        """Open a stream holding one pooled decoder; see :meth:`Engine.new_stream`.

        Hot words found in the dictionary are reported as known (pocketsphinx cannot boost them);
        ``(word, "ARPABET PHONES")`` pairs add new words to the dictionary and language model (they
        stay for every later stream of this engine); other unknown words are skipped with a reason.

        Raises
        ------
        EngineOverloadedError
            If all ``max_decoders`` decoders are held by open streams.
        """
        language = self._check_language(language)
        entries = normalize_hot_words(hot_words)
        if not isinstance(word_info, bool):
            raise TypeError(f"word_info must be bool, got {type(word_info).__name__}")
        pooled = self._acquire()
        try:
            statuses = self._apply_hot_words(pooled, entries)
            return SphinxStream(self, pooled, language=language, word_info=word_info, hot_words=statuses,
                                max_segment_s=self.max_segment_s)
        except BaseException:
            self._release(pooled)
            raise


class SphinxStream(EngineStream):
    """A pocketsphinx utterance per segment: ``process_raw`` on every accept, ``hyp()`` for partials.

    Partials have score 0.0 (word posteriors exist only after the end of an utterance); finals
    score the mean posterior probability of their words. Word times come from ``seg()`` at the
    decoder's frame rate (100 frames/s), clipped to the segment.
    """

    def __init__(self, engine: SphinxEngine, pooled: _Pooled, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._engine: SphinxEngine = engine
        self._pooled: _Pooled | None = pooled
        self._decoder = pooled.decoder
        self._in_utt = False
        self._ms_per_frame = 1000 // engine.frame_rate
        self._decoder.set_cmn(engine.cmn_prior)  # never inherit the previous stream's channel
        # audio of the stream's first utterance, decoded again warm at its finalize()
        self._first: list[bytes] | None = [] if engine.first_pass_redecode else None

    def _accept(self, pcm: np.ndarray) -> None:
        if not self._in_utt:
            self._decoder.start_utt()
            self._in_utt = True
        raw = pcm.tobytes()
        if self._first is not None:
            self._first.append(raw)
        self._decoder.process_raw(raw, False, False)

    def _words(self, start_ms: int, end_ms: int) -> tuple[list[str], list[Word], list[float]]:
        texts: list[str] = []
        words: list[Word] = []
        probs: list[float] = []
        for seg in self._decoder.seg() or ():
            token = seg.word
            if _is_filler(token):
                continue
            word = _clean(token)
            texts.append(word)
            probs.append(float(seg.prob))
            # seg frames are inclusive at frate frames/s from the utterance start.
            w_start = min(start_ms + seg.start_frame * self._ms_per_frame, end_ms)
            w_end = min(start_ms + (seg.end_frame + 1) * self._ms_per_frame, end_ms)
            words.append(Word(word, w_start, w_end))
        return texts, words, probs

    def _partial(self) -> Hypothesis:
        start, end = self._span()
        if not self._in_utt:
            return Hypothesis("", 0.0, (), start, end, False)
        hyp = self._decoder.hyp()
        text = " ".join(_clean(t) for t in hyp.hypstr.split() if not _is_filler(t)) if hyp else ""
        words: tuple[Word, ...] = ()
        if self.word_info and text:
            words = tuple(self._words(start, end)[1])
        return Hypothesis(text, 0.0, words, start, end, False)

    def _finalize(self) -> Hypothesis:
        start, end = self._span()
        if not self._in_utt:
            return Hypothesis("", 0.0, (), start, end, True)
        self._decoder.end_utt()
        self._in_utt = False
        first, self._first = self._first, None
        if first:
            # The live pass adapted the cepstral mean to this channel: decode the utterance
            # again from there (the first pass's own result started cold).
            self._decoder.start_utt()
            for raw in first:
                self._decoder.process_raw(raw, False, False)
            self._decoder.end_utt()
        texts, words, probs = self._words(start, end)
        score = float(min(1.0, max(0.0, sum(probs) / len(probs)))) if probs else 0.0
        return Hypothesis(" ".join(texts), score, tuple(words) if self.word_info else (), start, end, True)

    def _reset(self) -> None:
        if self._in_utt:
            self._decoder.end_utt()
            self._in_utt = False
        if self._first:
            self._first = []  # the dropped utterance does not count as the first one

    def _close(self) -> None:
        self._reset()
        if self._pooled is not None:
            pooled, self._pooled = self._pooled, None
            self._engine._release(pooled)

"""The ``moonshine`` engine: Moonshine base (English) on ONNX Runtime, weights folded once.

Where the model comes from
--------------------------
The PyPI wheel ``moonshine-cpp`` (MIT licence, Moonshine AI) ships Moonshine base-en as two ONNX
Runtime files, ``models/base-en/encoder_model.ort`` and ``decoder_model_merged.ort``, and its
tokenizer ``tokenizer.bin``. Only those files are used: the wheel's own C library is never loaded
(it leaks memory on every call). The wheel is located with :func:`importlib.util.find_spec`, so
importing it runs nothing.

Folding (:mod:`.moonshine_fold`)
--------------------------------
The shipped weights are int8 with a scale and an offset, re-expanded to float32 by Cast/Mul/Add
nodes on every session run, which for the decoder means on every token. The first start folds
those chains into float32 constants once and keeps the result in a per-user cache; this costs a
few seconds and about 250 MB of disk, and cuts the CPU per decode by 3-6x. A fold is used only
after it produced the same transcripts as the shipped model on the wheel's test clip.

Int8 weights (:mod:`.moonshine_quant`)
--------------------------------------
With ``precision="int8"`` (the default) every constant matrix product of the fold's decoder is
rewritten to ONNX Runtime's ``MatMulNBits`` with 8-bit weights and int8 arithmetic, once, into the
same cache (about 120 MB more); the result is used only after it gave the float32 fold's text on
the three verification clips, else the engine logs a warning and runs the float32 fold.
``precision="float32"`` runs the fold as it is. ``int8_encoder=True`` makes the encoder int8 too
(``DynamicQuantizeMatMul``, only on CPUs with VNNI): another 17 % less CPU per decode, but it
changed more transcripts on real speech (WER 8.17 % -> 8.39 %), so it is off by default.

Moonshine's cost grows with the audio (unlike Whisper, which pads every window to 30 s): use
it for short segments. It gives neither word timings nor hot-word biasing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np

from ..errors import EngineConfigError, EngineUnavailableError
from .base import (
    DEFAULT_MAX_SEGMENT_S,
    Engine,
    HotWordStatus,
    Hypothesis,
    available_cores,
    hot_word_text,
    normalize_hot_words,
)
from .buffered import BufferedStream
from .moonshine_fold import folded_model
from .moonshine_model import MIN_SAMPLES, MoonshineModel, shipped_model_dir
from .moonshine_quant import check_precision, int8_encoder_supported, quantized_model

__all__ = ["BATCH_PAD_RATIO", "BATCH_PAD_SECONDS", "MoonshineEngine", "MoonshineStream", "batch_compatible",
           "prepare_moonshine"]

logger = logging.getLogger(__name__)

#: Items batch together (:meth:`MoonshineEngine.decode_batch`) when the shorter one would get at
#: most this fraction of its own length as silence padding ...
BATCH_PAD_RATIO: Final = 0.25
#: ... and at most this many seconds of it. See :func:`batch_compatible` for the measurement.
BATCH_PAD_SECONDS: Final = 1.0


def batch_compatible(len_a: int, len_b: int) -> bool:
    """Whether two items of `len_a` and `len_b` samples (16 kHz) may share one Moonshine batch.

    A batch is padded with silence to its longest item, and Moonshine's transcript of an item
    can change when much silence follows it. Two items are compatible when the shorter would get
    at most :data:`BATCH_PAD_RATIO` of its own length and at most :data:`BATCH_PAD_SECONDS` of
    padding. A group of items is compatible when its shortest and longest items are.

    Measured (``benchmarks/bench_moonshine.py``, ``bench_batch_padding_tolerance``) on 190 real
    clips of 1-8 s ending in 0.5 s of silence, as the server's segments do: padding an item by
    10 / 25 / 50 / 100 % of its length changed the words of 1.6 / 2.1 / 3.2 / 3.2 % of the items
    and moved the word error rate from 3.3 % to 3.5 / 3.7 / 3.5 / 4.0 %; a batch without padding
    changed nothing. On clips cut tight at the last word, padding changes more items (8-11 %) but
    lowers the error rate (3.9 % to 3.1-3.6 %): the silence acts as the missing tail.

    Parameters
    ----------
    len_a, len_b : int
        Item lengths in samples (>= 0). Items shorter than 0.1 s count as 0.1 s (the model pads
        them to that anyway).

    Returns
    -------
    bool

    Raises
    ------
    TypeError
        If a length is not an int.
    ValueError
        If a length is negative.
    """
    for name, n in (("len_a", len_a), ("len_b", len_b)):
        if not isinstance(n, int | np.integer) or isinstance(n, bool):
            raise TypeError(f"{name} must be an int (samples), got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"{name} must be >= 0 samples, got {n}")
    short, long = sorted((max(int(len_a), MIN_SAMPLES), max(int(len_b), MIN_SAMPLES)))
    pad = long - short
    return pad <= BATCH_PAD_RATIO * short and pad <= BATCH_PAD_SECONDS * 16000


def _check_int8_encoder(value: Any) -> bool:
    """The ``int8_encoder`` option checked, and False (with a warning) on a CPU without VNNI."""
    if not isinstance(value, bool):
        raise EngineConfigError(f"int8_encoder must be a bool (true or false), got {value!r}")
    if value and not int8_encoder_supported():
        logger.warning("int8_encoder: this CPU has no int8 dot-product instructions (VNNI); the "
                       "Moonshine encoder stays float32")
        return False
    return value


def prepare_moonshine(*, cache_dir: str | os.PathLike[str] | None = None, fold: bool = True,
                      precision: str = "int8", int8_encoder: bool = False, **_options: Any) -> None:
    """Build the model cache entries that :class:`MoonshineEngine` with these options loads (the
    fold, and for ``precision="int8"`` the int8 decoder), without loading the model for serving.

    Other engine options are accepted and ignored. An int8 decoder that cannot be built or fails
    its verification is logged as a warning (the engine will run float32), as the engine does.

    Raises
    ------
    EngineUnavailableError
        If moonshine-cpp, onnxruntime or onnx are missing, or the fold failed.
    EngineConfigError
        For a `precision` not in ``("int8", "float32")``.
    """
    precision = check_precision(precision)
    int8_encoder = _check_int8_encoder(int8_encoder)
    src = shipped_model_dir()
    if not fold:
        return
    if precision == "int8":
        try:
            quantized_model(src, cache_dir=cache_dir, int8_encoder=int8_encoder)
            return
        except EngineUnavailableError as exc:
            logger.warning("Moonshine int8 weights unavailable, the engine will use float32: %s", exc)
    folded_model(src, cache_dir=cache_dir)


class MoonshineEngine(Engine):
    """Moonshine base-en, folded, on ONNX Runtime (English only; no word timings, no hot words).

    Parameters
    ----------
    cache_dir : path, optional
        Where the folded and int8 models are kept (default: :func:`sis_stream.engines.cache.cache_root`).
    fold : bool
        False runs the shipped (int8, unfolded) files: 3-6x more CPU, no cache written
        (`precision` is then ignored).
    precision : {"int8", "float32"}
        Weights of the folded decoder: ``"int8"`` (``MatMulNBits``, int8 arithmetic; falls back
        to float32 with a warning when the int8 model fails its verification) or ``"float32"``.
    int8_encoder : bool
        With ``precision="int8"``, make the encoder int8 too (17 % less CPU, WER +0.2 points on
        real speech); ignored with a warning on a CPU without int8 dot-product instructions.
    cpu_threads : int
        ONNX Runtime threads per decode.
    max_segment_s : float
        Cap on one open segment.

    Raises
    ------
    EngineUnavailableError
        If moonshine-cpp, onnxruntime or onnx (needed to fold) are missing, or the fold failed.
    EngineConfigError
        For bad numbers or a `precision` not in ``("int8", "float32")``.
    """

    name = "moonshine"
    punctuates = True
    languages = ("en",)
    #: Which item lengths may share a batch (the silence-padding tolerance), for the decode batcher.
    batch_compatible = staticmethod(batch_compatible)

    def __init__(self, *, cache_dir: str | os.PathLike[str] | None = None, fold: bool = True,
                 precision: str = "int8", int8_encoder: bool = False, cpu_threads: int = 1,
                 max_segment_s: float = DEFAULT_MAX_SEGMENT_S) -> None:
        if not isinstance(cpu_threads, int) or cpu_threads < 1:
            raise EngineConfigError(f"cpu_threads must be an int >= 1, got {cpu_threads!r}")
        if not max_segment_s > 0:
            raise EngineConfigError(f"max_segment_s must be > 0, got {max_segment_s!r}")
        if not isinstance(fold, bool):
            raise EngineConfigError(f"fold must be a bool, got {fold!r}")
        precision = check_precision(precision)
        int8_encoder = _check_int8_encoder(int8_encoder) and precision == "int8" and fold
        src = shipped_model_dir()
        t0 = time.perf_counter()
        if not fold:
            enc, dec = src / "encoder_model.ort", src / "decoder_model_merged.ort"
            kind = "int8 as shipped"
        elif precision == "int8":
            try:
                enc, dec = quantized_model(src, cache_dir=cache_dir, int8_encoder=int8_encoder)
                kind = "folded, int8 encoder and decoder" if int8_encoder else "folded, int8 decoder weights"
            except EngineUnavailableError as exc:
                logger.warning("Moonshine int8 weights unavailable, using float32: %s", exc)
                precision, int8_encoder = "float32", False
        if fold and precision == "float32":
            enc, dec = folded_model(src, cache_dir=cache_dir)
            kind = "folded float32"
        self.model = MoonshineModel(enc, dec, src / "tokenizer.bin", threads=cpu_threads)
        self.load_seconds = time.perf_counter() - t0
        self.max_segment_s = float(max_segment_s)
        self.folded = fold
        #: The precision in use: ``"int8"`` or ``"float32"`` (after a fallback), or ``"shipped"``.
        self.precision = precision if fold else "shipped"
        #: Whether the encoder is int8 too.
        self.int8_encoder = int8_encoder
        self.description = (f"Moonshine base-en ({kind}, onnxruntime, {cpu_threads} thread(s); "
                            f"{available_cores()} core(s))")
        logger.info("Moonshine model loaded in %.2f s (%s)", self.load_seconds, enc)

    def new_stream(self, *, language: str, hot_words: Iterable[str | tuple[str, str]] = (),
                   word_info: bool = False) -> MoonshineStream:
        """Open a stream; see :meth:`Engine.new_stream`.

        Raises
        ------
        EngineConfigError
            For ``word_info=True``: Moonshine gives no word timings (route such requests to the
            ``whisper`` engine).
        """
        language = self._check_language(language)
        if word_info:
            raise EngineConfigError("the moonshine engine gives no word timings (need_word_info); "
                                    "route such requests to the whisper engine")
        statuses = tuple(HotWordStatus(hot_word_text(e), False, "skipped: the moonshine engine has no "
                                       "hot-word biasing") for e in normalize_hot_words(hot_words))
        return MoonshineStream(self, language=language, word_info=False, hot_words=statuses,
                               max_segment_s=self.max_segment_s)

    def decode(self, audio: np.ndarray) -> tuple[str, float]:
        """Text of int16 16 kHz `audio` and its confidence in [0, 1] (thread-safe)."""
        return self.model.transcribe(audio)

    def decode_batch(self, audios: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Text and confidence of each of several int16 16 kHz items, decoded as one batch.

        One encoder run and one decoder run per token step for all items (see
        :meth:`MoonshineModel.decode_batch`); a batch of one gives exactly :meth:`decode`'s
        result. Group items with :func:`batch_compatible` lengths: silence padding up to the
        longest item can change a much shorter item's transcript. Thread-safe.

        Parameters
        ----------
        audios : sequence of numpy.ndarray
            1-D int16 (or float in [-1, 1)) 16 kHz mono arrays, at most
            :data:`~sis_stream.engines.moonshine_model.MAX_BATCH` of them.

        Returns
        -------
        list of (str, float)
            Per item, in input order: text and confidence in [0, 1].

        Raises
        ------
        TypeError, ValueError
            For input that is not a sequence of 1-D int16/float numpy arrays, or too many items.
        """
        model = self.model
        return [(model.text(ids), score) for ids, score in model.decode_batch(audios)]


class MoonshineStream(BufferedStream):
    """Buffers the open segment (int16) and decodes it on demand; partials re-decode it."""

    def __init__(self, engine: MoonshineEngine, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._engine: MoonshineEngine = engine

    def decode_segment(self, audio: np.ndarray, start_ms: int, end_ms: int, final: bool) -> Hypothesis:
        text, score = self._engine.decode(audio)
        return Hypothesis(text, score if text else 0.0, (), start_ms, end_ms, final)

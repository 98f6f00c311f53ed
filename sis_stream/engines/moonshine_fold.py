"""Fold Moonshine's int8 weights into float32 constants once, verify, and cache the result.

The shipped ``.ort`` files re-expand every weight (int8 -> Cast -> Mul by the scale -> Add the
offset) on every run. Folding takes three steps, all with ONNX Runtime's own machinery:

1. load the ``.ort`` file with basic graph optimisations and let ONNX Runtime write the graph back
   as an ONNX file (ORT-format models are not constant-folded when loaded);
2. name the anonymous subgraphs of the merged decoder's ``If`` node (the ONNX checker requires
   names, the ORT format does not keep them), with the ``onnx`` package;
3. load that ONNX file with basic optimisations again: constant folding now turns every
   dequantisation chain into a float32 initializer, and ONNX Runtime writes the folded graph.

The fold is then checked: on three clips cut from the wheel's test recording, the folded model must
give exactly the tokens of the shipped one. Only then is the cache entry kept
(:func:`sis_stream.engines.cache.cached_build`).
"""

from __future__ import annotations

import functools
import logging
import os
import wave
from pathlib import Path
from typing import Final

import numpy as np

from ..errors import EngineUnavailableError
from .cache import cache_root, cached_build, file_sha256
from .moonshine_model import MoonshineModel

__all__ = ["DECODER", "ENCODER", "FOLD_VERSION", "fold", "fold_key", "folded_model", "verification_clips"]

logger = logging.getLogger(__name__)

#: Bump when the fold procedure changes (a new cache entry is built).
FOLD_VERSION: Final = 1
ENCODER: Final = "encoder.onnx"
DECODER: Final = "decoder.onnx"


def _session_writing(src: Path, dst: Path) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = os.fspath(dst)
    opts.add_session_config_entry("session.save_model_format", "ONNX")
    ort.InferenceSession(os.fspath(src), opts, providers=["CPUExecutionProvider"])


def _name_subgraphs(path: Path) -> None:
    import onnx

    model = onnx.load(os.fspath(path))
    if not model.graph.name:
        model.graph.name = "main"
    for i, node in enumerate(model.graph.node):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH and not attr.g.name:
                attr.g.name = f"{node.name or node.op_type}_{i}_{attr.name}"
    onnx.save(model, os.fspath(path))


def fold(src: Path, dst: Path) -> None:
    """Fold the ORT-format model `src` into the float32 ONNX model `dst` (see the module notes)."""
    try:
        import onnx  # noqa: F401  (checked here for a clear error)
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailableError(
            f"folding the Moonshine model needs the onnx and onnxruntime packages ({exc.name} is "
            "missing): `pip install 'sis-stream[engines]'`") from exc
    plain = dst.with_name(dst.name + ".plain.onnx")
    try:
        _session_writing(src, plain)
        _name_subgraphs(plain)
        _session_writing(plain, dst)
    finally:
        plain.unlink(missing_ok=True)


def verification_clips(model_dir: Path) -> list[np.ndarray]:
    """Three clips (float32, 16 kHz) of the wheel's test recording: its first 3 s, the 3 s after
    that, and all of it."""
    path = model_dir.parent.parent / "test-data" / "beckett.wav"
    try:
        with wave.open(os.fspath(path), "rb") as w:
            if w.getframerate() != 16000 or w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise EngineUnavailableError(f"{path}: expected 16 kHz 16-bit mono")
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    except (OSError, wave.Error) as exc:
        raise EngineUnavailableError(f"cannot read the Moonshine verification clip {path}: {exc}") from exc
    return [x[:48000], x[48000:96000], x]


def _digest(path: Path) -> str:
    """SHA-256 of a shipped model file, hashed once per process and file version (``prepare``
    before listening and the engine's load both need it)."""
    st = path.stat()
    return _digest_of(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def fold_key(model_dir: Path) -> str:
    """The cache key of the fold of the shipped model in `model_dir`: it changes with the shipped
    files' checksums and with :data:`FOLD_VERSION`."""
    tag = _digest(model_dir / "decoder_model_merged.ort")[:12] + _digest(model_dir / "encoder_model.ort")[:12]
    return f"moonshine-base-en-{tag}-fold{FOLD_VERSION}"


def folded_model(model_dir: Path, *, cache_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """The folded encoder and decoder for the shipped model in `model_dir`, built on first use.

    Returns
    -------
    (encoder, decoder) : (Path, Path)

    Raises
    ------
    EngineUnavailableError
        If folding is impossible (packages missing, cache not writable) or the folded model does
        not reproduce the shipped one's tokens.
    """
    enc_src = model_dir / "encoder_model.ort"
    dec_src = model_dir / "decoder_model_merged.ort"
    key = fold_key(model_dir)

    def build(folder: Path) -> None:
        fold(enc_src, folder / ENCODER)
        fold(dec_src, folder / DECODER)
        shipped = MoonshineModel(enc_src, dec_src, model_dir / "tokenizer.bin")
        folded = MoonshineModel(folder / ENCODER, folder / DECODER, model_dir / "tokenizer.bin")
        for i, clip in enumerate(verification_clips(model_dir)):
            want, got = shipped.token_ids(clip), folded.token_ids(clip)
            if want != got:
                raise EngineUnavailableError(
                    f"the folded Moonshine model differs from the shipped one on verification clip "
                    f"{i} ({shipped.text(want)!r} vs {folded.text(got)!r}); not using it")
        logger.info("folded Moonshine model verified on %d clips", i + 1)

    entry = cached_build(key, build, root=cache_root(cache_dir) / "models",
                         what="the folded Moonshine model", needs_bytes=300 << 20)
    return entry / ENCODER, entry / DECODER

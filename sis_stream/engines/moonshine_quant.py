"""Int8 weights for the folded Moonshine model: constant MatMuls made int8 products, verified, cached.

Most of a Moonshine decode is matrix products with constant weights (the decoder's per-token
steps above all, with its 416 x 32768 vocabulary projection). ONNX Runtime's contrib operator
``com.microsoft.MatMulNBits`` with 8-bit weights and ``accuracy_level=4`` multiplies in int8
(the activations quantised per block on the fly), which for these shapes costs a third to a
seventh of the float32 product. :func:`quantize_matmuls` rewrites, in the main graph and in
every subgraph (the merged decoder's ``If`` branches, whose weights mostly live in the main
graph as outer-scope initializers), each ``MatMul`` whose second input is a 2-D float32
initializer:

* the weight ``W`` (``K x N``) is split along ``K`` into blocks of :data:`BLOCK_SIZE` (the last
  one padded with zeros); each block of each output column gets the scale ``max|w| / 127``, and
  its weights are stored as ``round(w / scale) + 128`` in uint8 (symmetric: no zero-point input,
  the operator's default zero point is 128);
* the quantised weight and scales are placed in the graph that held ``W`` (so an outer-scope
  weight stays shared by both branches), and ``W`` is removed once nothing uses it any more.

:func:`quantized_model` builds the int8 copy of the folded decoder once, beside the fold in the
per-user cache (:func:`sis_stream.engines.cache.cached_build`, its key derived from the fold's),
and keeps it only if it gives, with the fold's encoder, the same text as the float32 model on the
three verification clips (:func:`sis_stream.engines.moonshine_fold.verification_clips`).

By default only the decoder is rewritten, and its words are unchanged: on 489 real prompts
(Asterisk and LibriVox, 2,229 words) the WER stayed 8.17 %, 6 transcripts changed (punctuation
but for one word each way), for 0.6x the CPU. The encoder runs each product once per utterance
over all its frames (a tall activation matrix): there ``MatMulNBits`` took 1.13x the float32
CPU, but ``DynamicQuantizeMatMul`` (weights int8 per column, activations per tensor, uint8 x int8
dot products) takes 0.55x on a CPU with VNNI. Its coarser activation quantisation costs words:
with it the WER on the same prompts was 8.39 % (23 transcripts changed, one with an invented
number), for 0.5x the float32 CPU in all. It is therefore opt-in (``int8_encoder=True``), and only
on CPUs with int8 dot-product instructions (:func:`int8_encoder_supported`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ..errors import EngineConfigError, EngineUnavailableError
from .cache import cache_root, cached_build
from .moonshine_fold import DECODER, ENCODER, fold_key, folded_model, verification_clips
from .moonshine_model import MoonshineModel

if TYPE_CHECKING:
    import onnx

__all__ = ["ACCURACY_LEVEL", "BLOCK_SIZE", "INT8_DOT_FLAGS", "PRECISIONS", "QUANT_VERSION",
           "check_precision", "int8_encoder_supported", "quantize_columns", "quantize_matmuls",
           "quantize_weight", "quantized_key", "quantized_model"]

logger = logging.getLogger(__name__)

#: Bump when the rewrite changes (a new cache entry is built).
QUANT_VERSION: Final = 2
#: Weights per quantisation block along K (a power of two >= 16). Measured on 489 real prompts
#: (``benchmarks/bench_moonshine.py``, ``BENCH_MOONSHINE_BLOCKS=32,64,128``): WER 8.17 / 8.30 /
#: 8.25 % (float32: 8.17 %) for 0.61 / 0.60 / 0.59x the float32 CPU; 32 keeps the words.
BLOCK_SIZE: Final = 32
#: ``accuracy_level`` of the ``MatMulNBits`` nodes: 4 multiplies in int8. Level 0 (float compute)
#: is several times slower than the float32 MatMul it replaces.
ACCURACY_LEVEL: Final = 4
#: CPU flags (Linux ``/proc/cpuinfo``) of int8 dot-product instructions: the encoder is made int8
#: (on request) only with one of them (:func:`int8_encoder_supported`).
INT8_DOT_FLAGS: Final = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: The values of the engine option ``precision``.
PRECISIONS: Final = ("int8", "float32")
_MS_DOMAIN: Final = "com.microsoft"


def quantize_weight(w: np.ndarray, block_size: int = BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Blockwise symmetric 8-bit quantisation of a ``K x N`` weight, laid out for ``MatMulNBits``.

    Parameters
    ----------
    w : numpy.ndarray
        2-D float weight, ``K`` rows (the product's inner dimension) by ``N`` columns.
    block_size : int
        Weights per block along ``K``: a power of two >= 16.

    Returns
    -------
    q : numpy.ndarray
        uint8, shape ``(N, ceil(K / block_size), block_size)``: ``round(w / scale) + 128``.
    scales : numpy.ndarray
        float32, shape ``(N * ceil(K / block_size),)``, column-major by block.

    Raises
    ------
    ValueError
        If `w` is not 2-D or `block_size` is not a power of two >= 16.
    """
    if w.ndim != 2:
        raise ValueError(f"the weight must be 2-D (K x N), got shape {w.shape}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), np.float32)
    padded[:k] = w
    cols = padded.T.reshape(n, blocks, block_size)
    scales = np.abs(cols).max(axis=-1) / 127.0
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(cols / scales[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scales.reshape(-1).astype(np.float32)


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column symmetric 8-bit quantisation of a ``K x N`` weight, for ``DynamicQuantizeMatMul``.

    Returns
    -------
    q : numpy.ndarray
        int8, shape ``(K, N)``: ``round(w / scale)`` in [-127, 127].
    scales : numpy.ndarray
        float32, shape ``(N,)``: ``max|w| / 127`` of each column (1 for an all-zero column).

    Raises
    ------
    ValueError
        If `w` is not 2-D.
    """
    if w.ndim != 2:
        raise ValueError(f"the weight must be 2-D (K x N), got shape {w.shape}")
    scales = np.abs(w).max(axis=0) / 127.0
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(w / scales), -127, 127).astype(np.int8)
    return q, scales.astype(np.float32)


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """`graph` and all its subgraphs, depth first (a parent before its children)."""
    import onnx

    out = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out += _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    out += _graphs(g)
    return out


def quantize_matmuls(model: onnx.ModelProto, *, block_size: int = BLOCK_SIZE,
                     accuracy_level: int = ACCURACY_LEVEL, op: str = "MatMulNBits") -> int:
    """Rewrite, in place, every MatMul with a 2-D float32 initializer as B into an int8 product.

    With ``op="MatMulNBits"`` (the default) the weight is quantised in blocks
    (:func:`quantize_weight`) and the activations per block inside the operator; with
    ``op="DynamicQuantizeMatMul"`` the weight is quantised per column (:func:`quantize_columns`)
    and the activations per tensor, on each run.

    Looks in the main graph and every subgraph; an initializer of an enclosing graph (outer scope)
    counts, unless a nearer graph input or node output has the same name. The quantised weight and
    scales go into the graph that holds the float weight, once per weight however many nodes use
    it; the float weight is removed when no node of any graph uses it any more. Other nodes
    (MatMul of two activations, a weight that is not 2-D float32) are left as they are.

    Parameters
    ----------
    model : onnx.ModelProto
        Changed in place.
    block_size : int
        See :func:`quantize_weight`.
    accuracy_level : int
        The nodes' ``accuracy_level`` (4: int8 compute); ``MatMulNBits`` only.
    op : {"MatMulNBits", "DynamicQuantizeMatMul"}
        The ONNX Runtime contrib operator to use.

    Returns
    -------
    int
        Number of MatMul nodes rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    if op not in ("MatMulNBits", "DynamicQuantizeMatMul"):
        raise ValueError(f"op must be 'MatMulNBits' or 'DynamicQuantizeMatMul', got {op!r}")
    tag = f"q8b{block_size}" if op == "MatMulNBits" else "q8col"
    done: dict[tuple[int, str], tuple[str, str, int, int]] = {}  # (graph id, weight) -> names, K, N
    owners: dict[int, onnx.GraphProto] = {}
    added: dict[int, list[onnx.TensorProto]] = {}  # added to each graph at the end, in one go
    count = 0

    def visit(graph: onnx.GraphProto, scope: dict[str, tuple[onnx.GraphProto, onnx.TensorProto]]) -> None:
        nonlocal count
        scope = dict(scope)
        local_names = {i.name for i in graph.input} | {o for n in graph.node for o in n.output}
        for name in local_names:
            scope.pop(name, None)  # shadowed
        for init in graph.initializer:
            scope[init.name] = (graph, init)
        for idx, node in enumerate(graph.node):
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g, scope)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        visit(g, scope)
            if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
                continue
            hit = scope.get(node.input[1])
            if hit is None:
                continue
            owner, init = hit
            if len(init.dims) != 2 or init.data_type != onnx.TensorProto.FLOAT:
                continue
            key = (id(owner), init.name)
            if key not in done:
                w = numpy_helper.to_array(init)
                qname, sname = f"{init.name}_{tag}", f"{init.name}_{tag}_scales"
                if op == "MatMulNBits":
                    q, scales = quantize_weight(w, block_size)
                    extra = []
                else:
                    q, scales = quantize_columns(w)
                    extra = [numpy_helper.from_array(np.zeros(scales.shape, np.int8), f"{init.name}_{tag}_zero")]
                added.setdefault(id(owner), []).extend([numpy_helper.from_array(q, qname),
                                                        numpy_helper.from_array(scales, sname), *extra])
                owners[id(owner)] = owner
                done[key] = (qname, sname, int(init.dims[0]), int(init.dims[1]))
            qname, sname, k, n = done[key]
            if op == "MatMulNBits":
                new = helper.make_node(op, [node.input[0], qname, sname], list(node.output),
                                       name=node.name or f"{op}_{count}", domain=_MS_DOMAIN,
                                       K=k, N=n, bits=8, block_size=block_size, accuracy_level=accuracy_level)
            else:
                new = helper.make_node(op, [node.input[0], qname, sname, f"{init.name}_{tag}_zero"],
                                       list(node.output), name=node.name or f"{op}_{count}", domain=_MS_DOMAIN)
            graph.node[idx].CopyFrom(new)
            count += 1

    visit(model.graph, {})
    graphs = _graphs(model.graph)
    used = {i for g in graphs for n in g.node for i in n.input} | {o.name for g in graphs for o in g.output}
    unused = {(gid, name) for gid, name in done if name not in used}
    for gid, owner in owners.items():
        # One rebuild per graph: protobuf copies the whole list on every extend.
        keep = [i for i in owner.initializer if (gid, i.name) not in unused] + added[gid]
        del owner.initializer[:]
        owner.initializer.extend(keep)
    if count and not any(op.domain == _MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
    return count


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineUnavailableError(
            "the moonshine engine needs onnxruntime: `pip install 'sis-stream[engines]'`") from exc
    return ".".join(onnxruntime.__version__.split(".")[:2])


def int8_encoder_supported(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies int8 with dot-product instructions (one of :data:`INT8_DOT_FLAGS`).

    Without them ONNX Runtime's uint8 x int8 kernels use an instruction that can saturate, so the
    encoder is kept in float32 there. False when `cpuinfo` cannot be read (not Linux).
    """
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(INT8_DOT_FLAGS & set(line.partition(":")[2].split()))
    except OSError:
        pass
    return False


def quantized_key(fold: str, *, block_size: int = BLOCK_SIZE, int8_encoder: bool = False,
                  ort_version: str | None = None) -> str:
    """The cache key of the int8 model made from the fold whose key is `fold`.

    It changes with the fold (and so with the shipped model's checksums), with the rewrite
    (:data:`QUANT_VERSION`, the block size, whether the encoder is int8 too) and with ONNX
    Runtime's minor version, whose int8 kernels the verification ran on.
    """
    ort = ort_version if ort_version is not None else _ort_version()
    return f"{fold}-q8b{block_size}{'e' if int8_encoder else ''}v{QUANT_VERSION}-ort{ort}"


def _quantize_file(src: Path, dst: Path, **options: Any) -> int:
    import onnx

    model = onnx.load(os.fspath(src))
    n = quantize_matmuls(model, **options)
    onnx.save(model, os.fspath(dst))
    return n


def quantized_model(model_dir: Path, *, cache_dir: str | os.PathLike[str] | None = None,
                    block_size: int = BLOCK_SIZE, int8_encoder: bool = False) -> tuple[Path, Path]:
    """The int8 encoder and decoder for the shipped model in `model_dir`, built on first use.

    Builds (or takes from the cache) the float32 fold first, rewrites its decoder (``MatMulNBits``)
    and, with `int8_encoder`, its encoder (``DynamicQuantizeMatMul``) with
    :func:`quantize_matmuls`, and keeps the result only when it gives the fold's text on every
    verification clip.

    Parameters
    ----------
    model_dir : Path
        The shipped model (:func:`~sis_stream.engines.moonshine_model.shipped_model_dir`).
    cache_dir : path, optional
        The cache folder (:func:`~sis_stream.engines.cache.cache_root`).
    block_size : int
        The decoder's quantisation block (:func:`quantize_weight`).
    int8_encoder : bool
        Make the encoder int8 too (check :func:`int8_encoder_supported` first).

    Returns
    -------
    (encoder, decoder) : (Path, Path)
        The int8 encoder (or the fold's float32 one) and the int8 decoder.

    Raises
    ------
    EngineUnavailableError
        If the fold or the rewrite is impossible (packages missing, cache not writable) or the int8
        model's text differs from the float32 model's on a verification clip.
    """
    enc_f, dec_f = folded_model(model_dir, cache_dir=cache_dir)
    key = quantized_key(fold_key(model_dir), block_size=block_size, int8_encoder=int8_encoder)
    tokenizer = model_dir / "tokenizer.bin"

    def build(folder: Path) -> None:
        n = _quantize_file(dec_f, folder / DECODER, block_size=block_size)
        if int8_encoder:
            n += _quantize_file(enc_f, folder / ENCODER, op="DynamicQuantizeMatMul")
        ref = MoonshineModel(enc_f, dec_f, tokenizer)
        q8 = MoonshineModel(folder / ENCODER if int8_encoder else enc_f, folder / DECODER, tokenizer)
        for i, clip in enumerate(verification_clips(model_dir)):
            want, got = ref.transcribe(clip)[0], q8.transcribe(clip)[0]
            if want != got:
                raise EngineUnavailableError(
                    f"the int8 Moonshine model's text differs from the float32 model's on verification "
                    f"clip {i} ({want!r} vs {got!r}); not using it (use precision=float32)")
        logger.info("int8 Moonshine model (%d int8 products, %s encoder, decoder block %d) verified "
                    "on %d clips", n, "int8" if int8_encoder else "float32", block_size, i + 1)

    entry = cached_build(key, build, root=cache_root(cache_dir) / "models",
                         what="the int8 Moonshine model", needs_bytes=160 << 20)
    return (entry / ENCODER if int8_encoder else enc_f), entry / DECODER


def check_precision(value: Any) -> str:
    """`value` if it is one of :data:`PRECISIONS`, else :class:`~sis_stream.errors.EngineConfigError`."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise EngineConfigError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {value!r}")
    return str(value)


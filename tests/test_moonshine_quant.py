"""Int8 Moonshine weights: the MatMul -> MatMulNBits rewrite (``engines/moonshine_quant.py``), the
engine's ``precision`` option, and the cache key.

The rewrite is checked on a small hand-built ONNX graph with an ``If`` node (a weight in the main
graph used inside a branch, a weight local to a branch, a product of two activations), run on ONNX
Runtime against the float graph. The test on the real model skips when moonshine-cpp is missing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from sis_stream.engines.moonshine_quant import (
    BLOCK_SIZE,
    PRECISIONS,
    check_precision,
    int8_encoder_supported,
    quantize_columns,
    quantize_matmuls,
    quantize_weight,
    quantized_key,
)
from sis_stream.errors import EngineConfigError, EngineUnavailableError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

K, N, M = 96, 40, 24  # K is not a multiple of the block size: the last block is padded


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W_main": rng.normal(0, 0.1, (K, N)).astype(np.float32),  # main graph, used in main and then-branch
        "W_outer": rng.normal(0, 0.1, (N, M)).astype(np.float32),  # main graph, used only in the else-branch
        "W_local": rng.normal(0, 0.1, (N, M)).astype(np.float32),  # the then-branch's own
        "W_3d": rng.normal(0, 0.1, (1, N, N)).astype(np.float32),  # not 2-D: left alone
    }


def _model() -> onnx.ModelProto:
    """x [2, K]; main graph: h = x @ W_main, h3 = h @ W_3d, y = If(cond).

    then-branch: (h @ W_local) * sum(u @ transpose(u)) with u = x @ W_main (the main graph's weight
    again, from the outer scope); else-branch: h @ W_outer (an outer-scope weight used only there).
    """
    w = _weights()
    f = TensorProto.FLOAT
    then = helper.make_graph(
        [helper.make_node("MatMul", ["h", "W_local"], ["t"]),
         helper.make_node("MatMul", ["x", "W_main"], ["u"]),
         helper.make_node("Transpose", ["u"], ["uT"]),
         helper.make_node("MatMul", ["u", "uT"], ["gram"]),  # two activations: untouched
         helper.make_node("ReduceSum", ["gram"], ["g"], keepdims=0),
         helper.make_node("Mul", ["t", "g"], ["out_then"])],
        "then", [], [helper.make_tensor_value_info("out_then", f, [2, M])],
        [numpy_helper.from_array(w["W_local"], "W_local")])
    other = helper.make_graph(
        [helper.make_node("MatMul", ["h", "W_outer"], ["out_else"])],
        "else", [], [helper.make_tensor_value_info("out_else", f, [2, M])])
    main = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W_main"], ["h"]),
         helper.make_node("MatMul", ["h", "W_3d"], ["h3"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
        "main",
        [helper.make_tensor_value_info("x", f, [2, K]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", f, [2, M]), helper.make_tensor_value_info("h3", f, [1, 2, N])],
        [numpy_helper.from_array(w[n], n) for n in ("W_main", "W_outer", "W_3d")])
    return helper.make_model(main, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray, cond: bool) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x, "cond": np.array(cond)})


def _ops(graph: onnx.GraphProto) -> list[str]:
    return [n.op_type for n in graph.node]


def test_rewrite_main_graph_and_if_branches():
    model = _model()
    count = quantize_matmuls(model)
    # x@W_main twice (main graph and then-branch), h@W_local, h@W_outer; not u@uT, not h@W_3d.
    assert count == 4
    main = model.graph
    branches = {a.name: a.g for a in main.node[2].attribute}
    then, other = branches["then_branch"], branches["else_branch"]
    assert _ops(main)[:2] == ["MatMulNBits", "MatMul"]
    assert _ops(then)[:4] == ["MatMulNBits", "MatMulNBits", "Transpose", "MatMul"]
    assert _ops(other) == ["MatMulNBits"]
    for node in (main.node[0], then.node[0], then.node[1], other.node[0]):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == "com.microsoft"
        assert attrs["bits"] == 8 and attrs["block_size"] == BLOCK_SIZE and attrs["accuracy_level"] == 4
    # Outer-scope weights stay in the main graph (once, shared by both uses), the local one in its
    # branch; the float weights are gone, the 3-D one (still used) is kept.
    names = {i.name for i in main.initializer}
    assert "W_main" not in names and "W_outer" not in names and "W_3d" in names
    assert sum(n.startswith("W_main_q8") for n in names) == 2  # weight + scales
    assert then.node[1].input[1] == main.node[0].input[1]
    assert {i.name for i in then.initializer} == {f"W_local_q8b{BLOCK_SIZE}", f"W_local_q8b{BLOCK_SIZE}_scales"}
    assert any(op.domain == "com.microsoft" for op in model.opset_import)
    onnx.checker.check_model(model)


@pytest.mark.parametrize("cond", [True, False])
def test_rewritten_graph_computes_what_the_float_graph_does(cond):
    x = np.random.default_rng(1).normal(0, 1, (2, K)).astype(np.float32)
    want = _run(_model(), x, cond)
    model = _model()
    quantize_matmuls(model)
    got = _run(model, x, cond)
    for a, b in zip(want, got):
        assert a.shape == b.shape
        rel = float(np.abs(a - b).max() / np.abs(a).max())
        assert 0 < rel < 0.03, rel  # int8 weights and activations (about 1 % measured), not float


@pytest.mark.parametrize("cond", [True, False])
def test_dynamic_quantize_matmul_rewrite(cond):
    x = np.random.default_rng(3).normal(0, 1, (2, K)).astype(np.float32)
    want = _run(_model(), x, cond)
    model = _model()
    assert quantize_matmuls(model, op="DynamicQuantizeMatMul") == 4
    ops = [n.op_type for g in (model.graph, *(a.g for a in model.graph.node[2].attribute)) for n in g.node]
    assert ops.count("DynamicQuantizeMatMul") == 4 and ops.count("MatMul") == 2
    got = _run(model, x, cond)
    for a, b in zip(want, got):
        rel = float(np.abs(a - b).max() / np.abs(a).max())
        assert 0 < rel < 0.05, rel  # activations quantised per tensor: coarser than per block
    with pytest.raises(ValueError, match="op must be 'MatMulNBits' or 'DynamicQuantizeMatMul'"):
        quantize_matmuls(_model(), op="MatMulInteger")


def test_quantize_columns():
    w = _weights()["W_main"]
    q, scales = quantize_columns(w)
    assert q.dtype == np.int8 and q.shape == w.shape and scales.shape == (N,)
    assert np.all(np.abs(q.astype(np.float32) * scales - w) <= scales / 2 + 1e-7)
    assert np.all(np.abs(q).max(axis=0) == 127)


def test_int8_encoder_needs_int8_dot_products(tmp_path):
    for flags, want in (("fpu sse2 avx2 fma", False), ("fpu avx2 avx512f avx512_vnni", True),
                        ("fpu avx2 avx_vnni", True)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert int8_encoder_supported(info) is want
    assert int8_encoder_supported(tmp_path / "missing") is False


def test_graph_without_constant_weights_is_unchanged():
    f = TensorProto.FLOAT
    g = helper.make_graph([helper.make_node("MatMul", ["x", "xT"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", f, [2, K]), helper.make_tensor_value_info("xT", f, [K, 2])],
                          [helper.make_tensor_value_info("y", f, [2, 2])])
    plain = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    before = plain.SerializeToString()
    assert quantize_matmuls(plain) == 0
    assert plain.SerializeToString() == before


def test_quantize_weight_layout_and_error():
    w = _weights()["W_main"]
    q, scales = quantize_weight(w, 32)
    blocks = -(-K // 32)
    assert q.dtype == np.uint8 and q.shape == (N, blocks, 32)
    assert scales.dtype == np.float32 and scales.shape == (N * blocks,)
    back = (q.astype(np.float32) - 128) * scales.reshape(N, blocks, 1)
    back = back.reshape(N, blocks * 32).T[:K]
    step = np.repeat(scales.reshape(N, blocks), 32, axis=1).T[:K]
    assert np.all(np.abs(back - w) <= step / 2 + 1e-7)
    assert np.all(q.reshape(N, -1)[:, K:] == 128)  # the padding is zero
    zq, zs = quantize_weight(np.zeros((16, 3), np.float32), 16)
    assert np.all(zq == 128) and np.all(zs == 1)
    with pytest.raises(ValueError, match="power of two >= 16"):
        quantize_weight(w, 48)
    with pytest.raises(ValueError, match="must be 2-D"):
        quantize_weight(w[None], 32)


def test_precision_option_is_validated():
    assert check_precision("int8") == "int8" and check_precision("float32") == "float32"
    for bad in ("fp16", "INT8", 8, None):
        with pytest.raises(EngineConfigError, match="'int8', 'float32'") as err:
            check_precision(bad)
        assert repr(bad) in str(err.value)
    assert PRECISIONS == ("int8", "float32")
    from sis_stream.engines.moonshine import MoonshineEngine, prepare_moonshine

    with pytest.raises(EngineConfigError, match="precision must be one of 'int8', 'float32', got 'fp16'"):
        MoonshineEngine(precision="fp16")
    with pytest.raises(EngineConfigError, match="precision must be one of"):
        prepare_moonshine(precision="bf16")
    with pytest.raises(EngineConfigError, match="int8_encoder must be a bool .* got 'yes'"):
        MoonshineEngine(int8_encoder="yes")


def test_cache_key_follows_the_fold_key(tmp_path):
    from sis_stream.engines.moonshine_fold import fold_key

    keys = []
    for i in range(2):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "encoder_model.ort").write_bytes(b"encoder")
        (d / "decoder_model_merged.ort").write_bytes(b"decoder %d" % i)
        keys.append(fold_key(d))
    assert keys[0] != keys[1]
    q = [quantized_key(k, ort_version="1.32") for k in keys]
    assert q[0] != q[1] and q[0].startswith(keys[0] + "-") and "/" not in q[0]
    assert quantized_key(keys[0], block_size=64, ort_version="1.32") != q[0]
    assert quantized_key(keys[0], ort_version="1.33") != q[0]
    assert quantized_key(keys[0], int8_encoder=True, ort_version="1.32") != q[0]


# --- The real model -------------------------------------------------------------------------

_HAVE_MODEL = importlib.util.find_spec("moonshine_cpp") is not None


@pytest.mark.skipif(not _HAVE_MODEL, reason="needs moonshine-cpp (engines extra)")
def test_int8_gives_the_float_words_on_the_verification_clips():
    from sis_stream.engines.moonshine_fold import folded_model, verification_clips
    from sis_stream.engines.moonshine_model import MoonshineModel, shipped_model_dir
    from sis_stream.engines.moonshine_quant import quantized_model
    from sis_stream.text import word_errors

    src = shipped_model_dir()
    try:
        f32 = MoonshineModel(*folded_model(src), src / "tokenizer.bin")
        q8_paths = quantized_model(src)
    except EngineUnavailableError as exc:
        pytest.skip(f"Moonshine unavailable: {exc}")
    assert q8_paths[1] != folded_model(src)[1]
    q8 = MoonshineModel(*q8_paths, src / "tokenizer.bin")
    for clip in verification_clips(src):
        want, got = f32.transcribe(clip)[0], q8.transcribe(clip)[0]
        assert want and word_errors(want, got).errors == 0, (want, got)


@pytest.mark.skipif(not _HAVE_MODEL, reason="needs moonshine-cpp (engines extra)")
def test_an_int8_model_that_differs_is_refused(tmp_path, monkeypatch):
    from sis_stream.engines import moonshine_quant
    from sis_stream.engines.moonshine_fold import folded_model
    from sis_stream.engines.moonshine_model import MoonshineModel, shipped_model_dir

    src = shipped_model_dir()
    try:
        fold = folded_model(src)  # the session's fold; the int8 entry goes to tmp_path
    except EngineUnavailableError as exc:
        pytest.skip(f"Moonshine unavailable: {exc}")
    monkeypatch.setattr(moonshine_quant, "folded_model", lambda *_a, **_k: fold)
    int8_models = []
    real_init, real_transcribe = MoonshineModel.__init__, MoonshineModel.transcribe

    def init(self, encoder, decoder, *args, **kwargs):
        real_init(self, encoder, decoder, *args, **kwargs)
        if decoder != fold[1]:
            int8_models.append(self)

    def skewed(self, audio):
        text, score = real_transcribe(self, audio)
        return (text + " extra" if self in int8_models else text), score

    monkeypatch.setattr(MoonshineModel, "__init__", init)
    monkeypatch.setattr(MoonshineModel, "transcribe", skewed)
    with pytest.raises(EngineUnavailableError, match="int8 Moonshine model's text differs .* precision=float32"):
        moonshine_quant.quantized_model(src, cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")] == []


@pytest.mark.skipif(not _HAVE_MODEL, reason="needs moonshine-cpp (engines extra)")
def test_engine_falls_back_to_float32_with_a_warning(monkeypatch, caplog):
    from sis_stream.engines import moonshine

    def refuse(*_a, **_k):
        raise EngineUnavailableError("the int8 Moonshine model's text differs (test)")

    monkeypatch.setattr(moonshine, "quantized_model", refuse)
    try:
        with caplog.at_level("WARNING", logger="sis_stream.engines.moonshine"):
            eng = moonshine.MoonshineEngine(precision="int8")
    except EngineUnavailableError as exc:
        pytest.skip(f"Moonshine unavailable: {exc}")
    assert eng.precision == "float32" and "float32" in eng.description
    assert any("int8 weights unavailable, using float32" in r.getMessage() for r in caplog.records)
    assert moonshine.MoonshineEngine(precision="float32").precision == "float32"

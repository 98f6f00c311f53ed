"""Pure-numpy twin of native/resample.pyx: the polyphase resampling kernel, written from the maths."""

from __future__ import annotations

import numpy as np

__all__ = ["ISA", "polyphase_process", "scratch_length"]

#: The reference has no native inner loop.
ISA = "numpy"

# Outputs per einsum block: bounds the temporary (block x taps_per_phase float64 values).
_BLOCK = 4096


def scratch_length(n_in: int, taps_per_phase: int, down: int, n_out: int) -> int:
    """Minimum length of the float32 ``scratch`` buffer polyphase_process needs for one call.

    The reference does not use the scratch buffer, but it asks for the same size as the native
    kernel so that both reject the same calls.
    """
    if n_in < 0 or taps_per_phase < 1 or down < 1 or n_out < 0:
        raise ValueError(
            "scratch_length expects n_in >= 0, taps_per_phase >= 1, down >= 1, n_out >= 0, got "
            f"{n_in}, {taps_per_phase}, {down}, {n_out}"
        )
    nb = taps_per_phase - 1 + n_in
    return nb + n_out + (down * -(-nb // down) if down > 1 else 0)


def polyphase_process(
    x: np.ndarray,
    taps: np.ndarray,
    history: np.ndarray,
    scratch: np.ndarray,
    phase: int,
    up: int,
    down: int,
    out: np.ndarray,
) -> tuple[int, int, int]:
    """Resample chunk ``x`` into all of ``out``; update ``history``; return (n_out, phase, clips).

    With the prototype low-pass ``h`` (length ``up * K``) and the input ``x_all`` seen so far,
    the rational resampler is ``y[m] = sum_k h[k] * x_up[m * down + c - k]`` where ``x_up`` is
    ``x_all`` with ``up - 1`` zeros after each sample. Only every ``up``-th tap meets a non-zero
    sample, so output ``m`` at up-sampled position ``u`` uses phase ``p = u mod up`` and the
    ``K`` input samples ending at ``u // up``. ``taps[p]`` holds that phase's taps reversed, so
    the sum is a plain dot product with a contiguous window of ``history + x``. ``phase`` is
    ``u`` of the next output relative to ``up *`` (first sample of ``x``), and the window of
    the first sample starts ``K - 1`` samples earlier, in ``history``.

    ``x`` and ``out`` are each int16 or float32 (a multi-stage cascade passes float32 between
    stages). Accumulation is float64 (the native kernel uses float32); int16 output is rounded
    half to even and saturated, and ``clips`` counts the saturated samples.
    """
    arrays = (x, taps, history, scratch, out)
    if not all(isinstance(a, np.ndarray) for a in arrays):
        bad = next(type(a).__name__ for a in arrays if not isinstance(a, np.ndarray))
        raise TypeError(f"x, taps, history, scratch and out must be numpy arrays, got {bad}")
    if x.ndim != 1 or out.ndim != 1 or history.ndim != 1 or scratch.ndim != 1 or taps.ndim != 2:
        raise ValueError(
            "x, history, scratch and out must be 1-D and taps 2-D, got ndim "
            f"{x.ndim}, {history.ndim}, {scratch.ndim}, {out.ndim} and {taps.ndim}"
        )
    if x.dtype not in (np.int16, np.float32) or out.dtype not in (np.int16, np.float32):
        raise TypeError(
            f"x and out must each be int16 or float32, got {x.dtype} and {out.dtype}"
        )
    if taps.dtype != np.float32 or history.dtype != np.float32 or scratch.dtype != np.float32:
        raise TypeError("taps, history and scratch must be float32")
    n_in, (n_phases, k_taps), n_hist, n_out = len(x), taps.shape, len(history), len(out)
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if n_phases != up or k_taps < 1:
        raise ValueError(
            f"taps must have shape (up, taps_per_phase) = ({up}, >= 1), "
            f"got ({n_phases}, {k_taps})"
        )
    if n_hist != k_taps - 1:
        raise ValueError(f"history must hold taps_per_phase - 1 = {k_taps - 1} samples, got {n_hist}")
    if phase < 0:
        raise ValueError(f"phase must be >= 0, got {phase}")
    if n_out > 0 and (phase + (n_out - 1) * down) // up > n_in - 1:
        raise ValueError(
            f"out asks for {n_out} outputs but the chunk of {n_in} samples at phase {phase} "
            f"holds fewer (up={up}, down={down})"
        )
    need = scratch_length(n_in, k_taps, down, n_out)
    if len(scratch) < need:
        raise ValueError(f"scratch must hold at least {need} samples, got {len(scratch)}")

    buf = np.concatenate([history.astype(np.float64), x.astype(np.float64)])
    y = np.empty(n_out, dtype=np.float64)
    if n_out > 0:  # (an empty chunk leaves buf shorter than one window)
        windows = np.lib.stride_tricks.sliding_window_view(buf, k_taps)  # buf[s : s + K]
        taps64 = taps.astype(np.float64)
    for lo in range(0, n_out, _BLOCK):
        u = phase + np.arange(lo, min(lo + _BLOCK, n_out), dtype=np.int64) * down
        y[lo : lo + len(u)] = np.einsum("ij,ij->i", taps64[u % up], windows[u // up])
    clips = 0
    if out.dtype == np.int16:
        r = np.rint(y)
        clips = int(np.count_nonzero((r > 32767) | (r < -32768)))
        out[:] = np.clip(r, -32768, 32767).astype(np.int16)
    else:
        out[:] = y.astype(np.float32)
    history[:] = buf[n_in:]  # the last K - 1 samples
    return n_out, phase + n_out * down - n_in * up, clips

"""Pure-numpy twin of native/vad.pyx: per-frame VAD features and the energy detector's decisions."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np

__all__ = [
    "DBFS_FLOOR",
    "DECIMATIONS",
    "DECISION_LOOKBACK_SHIFT",
    "DECISION_SPEECH",
    "FEATURE_BAND",
    "FEATURE_ENERGY",
    "FEATURE_ZCR",
    "MAX_FRAME_LEN",
    "MAX_LOOKBACK",
    "MAX_SECTIONS",
    "N_FEATURES",
    "N_PARAMS",
    "N_STATE",
    "P_DEV_BETA",
    "P_DEV_FACTOR",
    "P_DEV_INIT",
    "P_FALL",
    "P_HANGOVER",
    "P_HANG_EXTRA",
    "P_HANG_QUIET",
    "P_LEVEL_BETA",
    "P_LOOKBACK_DB",
    "P_LOOKBACK_MAX",
    "P_MARGIN_HI_DB",
    "P_MARGIN_LO_DB",
    "P_MIN_DBFS",
    "P_OFF_DB",
    "P_ONSET",
    "P_ON_DB",
    "P_ON_MAX_DB",
    "P_QUIET_HI_DBFS",
    "P_QUIET_LO_DBFS",
    "P_RISE",
    "P_RISE_MAX_DB",
    "S_ACTIVE",
    "S_DEV",
    "S_FLOOR",
    "S_HANG",
    "S_LEVEL",
    "S_NFRAMES",
    "S_RUN",
    "S_UP",
    "band_decide",
    "band_energy",
    "energy_decide",
    "frame_features",
]

# Column layout of the feature matrix (n_frames, N_FEATURES); shared with native/vad.pyx.
FEATURE_ENERGY: Final = 0  #: frame energy, dBFS (0 dBFS = full-scale square wave)
FEATURE_BAND: Final = 1  #: energy of the band-pass-filtered frame, dBFS
FEATURE_ZCR: Final = 2  #: zero-crossing rate: sign changes per adjacent sample pair, 0..1
N_FEATURES: Final = 3

#: Energies are clamped here: mean square 1e-10 of full scale (digital silence).
DBFS_FLOOR: Final = -100.0
#: Longest frame the kernels take (30 ms at 16 kHz) and most biquad sections in the band filter.
MAX_FRAME_LEN: Final = 480
MAX_SECTIONS: Final = 4
#: Band-filter decimation factors the kernel takes (1: the filter runs at the input rate; 2: on the
#: means of sample pairs, i.e. at half the rate).
DECIMATIONS: Final = (1, 2)

# Detector parameter vector (float64, N_PARAMS); shared with native/vad.pyx.
P_ON_DB: Final = 0  #: entry threshold above the floor, lower bound (dB; see P_DEV_FACTOR)
P_OFF_DB: Final = 1  #: stay in speech above floor + this + (threshold - P_ON_DB) (dB)
P_MIN_DBFS: Final = 2  #: absolute gate: never speech below this band energy (dBFS)
P_FALL: Final = 3  #: floor smoothing factor when the frame is below the floor (0..1]
P_RISE: Final = 4  #: floor smoothing factor when above the floor and not speech (0..1]
P_RISE_MAX_DB: Final = 5  #: largest floor rise per frame while in speech (dB)
P_HANGOVER: Final = 6  #: frames kept as speech after the detector falls silent
P_ONSET: Final = 7  #: consecutive above-threshold frames needed to enter speech (>= 1)
P_LOOKBACK_DB: Final = 8  #: onset look-back: frames above floor + this (dB) before the onset ...
P_LOOKBACK_MAX: Final = 9  #: ... are counted back from it, at most this many (<= MAX_LOOKBACK)
P_ON_MAX_DB: Final = 10  #: entry threshold above the floor, upper bound (dB, >= P_ON_DB)
P_DEV_FACTOR: Final = 11  #: entry threshold = this x noise deviation, within [P_ON_DB, P_ON_MAX_DB]
P_DEV_BETA: Final = 12  #: smoothing factor of the noise deviation (per frame, 0..1]
P_DEV_INIT: Final = 13  #: noise deviation at the first frame (dB)
P_HANG_QUIET: Final = 14  #: hangover frames on a quiet line (floor <= P_QUIET_LO_DBFS)
P_QUIET_LO_DBFS: Final = 15  #: floor at or below which the hangover is P_HANG_QUIET ...
P_QUIET_HI_DBFS: Final = 16  #: ... and at or above which it is P_HANGOVER (linear between)
P_HANG_EXTRA: Final = 17  #: extra hangover frames at low SNR (speech level - floor <= P_MARGIN_LO)
P_MARGIN_LO_DB: Final = 18  #: speech-to-floor margin at or below which all P_HANG_EXTRA is added
P_MARGIN_HI_DB: Final = 19  #: ... and at or above which none (linear between)
P_LEVEL_BETA: Final = 20  #: smoothing factor of the speech level over speech frames (0..1]
N_PARAMS: Final = 21

# Detector state vector (float64, N_STATE); shared with native/vad.pyx.
S_FLOOR: Final = 0  #: noise-floor estimate, dBFS
S_ACTIVE: Final = 1  #: hysteresis state, 0 or 1
S_HANG: Final = 2  #: hangover frames left
S_NFRAMES: Final = 3  #: frames seen so far (the first one initialises the floor)
S_RUN: Final = 4  #: consecutive frames above the entry threshold while not active
S_UP: Final = 5  #: consecutive frames (up to the previous one) above floor + lookback dB
S_DEV: Final = 6  #: noise deviation: smoothed |band - floor| over non-speech frames (dB)
S_LEVEL: Final = 7  #: speech level: smoothed band energy of speech frames, dBFS
N_STATE: Final = 8

# Decision codes written by energy_decide (uint8): bit 0 is speech; on the frame where the
# detector enters speech, the bits above hold how many frames before it already rose above the
# floor by P_LOOKBACK_DB (the onset look-back, 0..MAX_LOOKBACK).
DECISION_SPEECH: Final = 1
DECISION_LOOKBACK_SHIFT: Final = 1
MAX_LOOKBACK: Final = 127

_MS_FLOOR: Final = 1e-10 * 32768.0 * 32768.0  # mean square at DBFS_FLOOR, int16 units


def _dbfs(mean_square: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(mean_square, _MS_FLOOR) / (32768.0 * 32768.0))


def _state_space(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(A, B, C, D) of the biquad cascade in the transposed-direct-form-II state coordinates.

    Section i with input u and state (z1, z2) computes ``y = b0 u + z1``,
    ``z1' = (b1 - a1 b0) u - a1 z1 + z2``, ``z2' = (b2 - a2 b0) u - a2 z1``; the next section's
    input is ``y``. The state vector is ``[z1_0, z2_0, z1_1, z2_1, ...]`` (scipy ``sosfilt`` zi).
    """
    n_sec = sos.shape[0]
    n = 2 * n_sec
    A = np.zeros((n, n))
    B = np.zeros(n)
    # u = cu @ s + du * x is the current section's input as a linear function of (state, x).
    cu = np.zeros(n)
    du = 1.0
    for i in range(n_sec):
        b0, b1, b2, _a0, a1, a2 = sos[i]
        e1 = np.zeros(n)
        e1[2 * i] = 1.0
        cy = b0 * cu + e1  # y = cy @ s + dy * x
        dy = b0 * du
        A[2 * i] = b1 * cu - a1 * cy
        A[2 * i, 2 * i + 1] += 1.0
        B[2 * i] = b1 * du - a1 * dy
        A[2 * i + 1] = b2 * cu - a2 * cy
        B[2 * i + 1] = b2 * du - a2 * dy
        cu, du = cy, dy
    return A, B, cu, du


def _decay_length(A: np.ndarray) -> int:
    """Samples after which the zero-input response is below 1e-15 of its start (capped)."""
    P = np.eye(A.shape[0])
    for m in range(1, 1 << 14):
        P = P @ A
        if np.abs(P).max() < 1e-15:
            return m
    return 1 << 14


@lru_cache(maxsize=16)
def _system(sos_bytes: bytes, n_sec: int) -> tuple:
    """State space, the powers A^t (t < m) and the impulse response of one filter (cached)."""
    A, B, C, D = _state_space(np.frombuffer(sos_bytes).reshape(n_sec, 6))
    m = _decay_length(A)
    powers = np.empty((m, *A.shape))
    powers[0] = np.eye(A.shape[0])
    for t in range(1, m):
        powers[t] = powers[t - 1] @ A
    h = np.empty(m + 1)
    h[0] = D
    h[1:] = np.einsum("i,tij,j->t", C, powers, B)  # h[t + 1] = C A^t B
    return A, B, C, D, powers, h


def _band_filter(x: np.ndarray, sos: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IIR cascade output and final state, computed as linear-system maths.

    The output is the convolution of the input with the impulse response ``h = [D, CB, CAB, ...]``
    plus the zero-input response ``C A^t zi``; the final state is ``A^N zi + sum_k A^k B
    x[N-1-k]``. Both sums are truncated where ``A^k`` has decayed below 1e-15 (a stable filter).
    """
    A, B, C, _D, powers, h = _system(sos.tobytes(), sos.shape[0])
    n_x = len(x)
    m = len(powers)
    n_fft = 1 << int(np.ceil(np.log2(n_x + m + 1)))
    y = np.fft.irfft(np.fft.rfft(x, n_fft) * np.fft.rfft(h, n_fft), n_fft)[:n_x]
    k = min(n_x, m)
    y[:k] += np.einsum("i,tij,j->t", C, powers[:k], zi)
    # Final state: only the last m samples and (if n_x < m) the initial state still matter.
    g = np.einsum("tij,j->ti", powers[:k], B)  # A^t B
    zf = g.T @ x[::-1][:k]
    if n_x < m:
        zf += np.linalg.matrix_power(A, n_x) @ zi
    return y, zf


def _check_filter_args(frame_len: int, decim: int, sos: np.ndarray, zi: np.ndarray) -> int:
    if frame_len < 2 or frame_len > MAX_FRAME_LEN:
        raise ValueError(f"frame_len must be in 2..{MAX_FRAME_LEN}, got {frame_len}")
    if decim not in DECIMATIONS or frame_len % decim:
        raise ValueError(
            f"decim must be one of {DECIMATIONS} and divide frame_len, got {decim} for {frame_len}"
        )
    n_sec = len(sos) // 6
    if len(sos) != 6 * n_sec or not 1 <= n_sec <= MAX_SECTIONS or len(zi) != 2 * n_sec:
        raise ValueError(
            f"sos must hold 6 * n (1 <= n <= {MAX_SECTIONS}) coefficients and zi 2 * n states, "
            f"got {len(sos)} and {len(zi)}"
        )
    return n_sec


def _band_dbfs(frames: np.ndarray, decim: int, sos: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """Band energy of float64 ``frames`` (n, frame_len): decimate, filter, mean square; zi updated."""
    n, frame_len = frames.shape
    d = frames.reshape(n, frame_len // decim, decim).mean(axis=2)
    y, zf = _band_filter(d.ravel(), np.asarray(sos, np.float64).reshape(-1, 6),
                         np.asarray(zi, np.float64))
    zi[:] = zf
    return _dbfs(np.mean((y * y).reshape(n, -1), axis=1))


def frame_features(x: np.ndarray, frame_len: int, decim: int, sos: np.ndarray, zi: np.ndarray,
                   out: np.ndarray) -> int:
    """Features of each complete frame of int16 ``x`` into ``out[:n]``; update ``zi``; return n.

    The band feature is the mean square of the IIR cascade ``sos`` applied to the input
    decimated by ``decim``: with ``decim == 2`` the filter sees ``(x[2m] + x[2m + 1]) / 2`` (a
    two-tap mean, zero at the input Nyquist, as anti-alias filter) and runs at half the rate.
    ``sos`` is a flat float64 array of ``6 * n_sections`` biquad coefficients
    ``[b0, b1, b2, 1, a1, a2]`` per section, ``zi`` its float64 state (``2 * n_sections``,
    updated in place to the state after the last complete frame). ``out`` is float64
    ``(>= n, N_FEATURES)``; ``frame_len`` must be a multiple of ``decim``.
    """
    _check_filter_args(frame_len, decim, sos, zi)
    n = len(x) // frame_len
    if out.shape[0] < n or out.shape[1] != N_FEATURES:
        raise ValueError(f"out must have shape (>= {n}, {N_FEATURES}), got {out.shape}")
    if n == 0:
        return 0
    frames = np.asarray(x[: n * frame_len], dtype=np.float64).reshape(n, frame_len)
    out[:n, FEATURE_ENERGY] = _dbfs(np.mean(frames * frames, axis=1))
    out[:n, FEATURE_BAND] = _band_dbfs(frames, decim, sos, zi)
    # A sign change between neighbours: one is < 0 and the other >= 0.
    neg = frames < 0
    out[:n, FEATURE_ZCR] = np.count_nonzero(neg[:, 1:] != neg[:, :-1], axis=1) / (frame_len - 1)
    return n


def band_energy(x: np.ndarray, frame_len: int, decim: int, sos: np.ndarray, zi: np.ndarray,
                out: np.ndarray) -> int:
    """Band energy (dBFS) of each complete frame of ``x`` into ``out[:n]``; update ``zi``; return n.

    The :data:`FEATURE_BAND` column of :func:`frame_features` alone (what the detector uses).
    """
    _check_filter_args(frame_len, decim, sos, zi)
    n = len(x) // frame_len
    if out.shape[0] < n:
        raise ValueError(f"out must have shape (>= {n},), got ({out.shape[0]},)")
    if n == 0:
        return 0
    frames = np.asarray(x[: n * frame_len], dtype=np.float64).reshape(n, frame_len)
    out[:n] = _band_dbfs(frames, decim, sos, zi)
    return n


def _ramp(v: float, lo: float, hi: float) -> float:
    """0 at or below `lo`, 1 at or above `hi`, linear between (a step at `hi` if hi <= lo)."""
    if v >= hi:
        return 1.0
    if v <= lo:
        return 0.0
    return (v - lo) / (hi - lo)


def energy_decide(band: np.ndarray, params: np.ndarray, state: np.ndarray,
                  out: np.ndarray) -> int:
    """Decision code for each band energy (dBFS) into ``out`` (uint8); update ``state``; return n.

    The detector is a recursion over frames (noise floor, noise deviation, hysteresis, onset
    count, hangover), so this twin is a plain loop over frames, written from the rules in
    ``sis_stream.audio.vad``:

    - the first frame initialises the floor to its band energy and the deviation to dev_init;
    - the entry threshold above the floor is ``dev_factor * deviation`` clamped to
      ``[on, on_max]``; speech starts above ``max(floor + threshold, min_dbfs)`` (after ``onset``
      consecutive frames above it) and continues above
      ``max(floor + off + (threshold - on), min_dbfs)``;
    - a speech frame moves the speech level by ``level_beta`` toward its band energy and
      re-arms the hangover; after the detector falls silent, that many more frames are still
      reported as speech. The hangover adapts to the line: ``floor(base + extra * e + 0.5)``
      frames, where ``base`` goes linearly from ``hang_quiet`` (floor at or below ``quiet_lo``
      dBFS: a quiet line, where the detector itself follows speech down to the gate) to
      ``hangover`` (floor at or above ``quiet_hi``), and ``e`` from 1 (speech level - floor at
      or below ``margin_lo`` dB: low SNR, weak speech tails lost in the noise) to 0 (at or
      above ``margin_hi``);
    - onset look-back: ``up`` counts the consecutive frames before the current one whose band
      energy was above ``max(floor + lookback_db, min_dbfs)`` (each judged against the floor of
      its own time); the frame that enters speech reports ``min(up, lookback_max)``;
    - on frames that are neither speech nor hangover, the deviation moves by ``dev_beta`` toward
      ``min(|band - floor|, threshold)``;
    - the floor then moves toward the frame: by ``fall * d`` when below it, by ``rise * d`` when
      above and not active, by ``min(rise * d, rise_max_db)`` when active (``d`` = band - floor).

    ``out[i]`` is ``DECISION_SPEECH`` (1) or 0, plus ``lookback << DECISION_LOOKBACK_SHIFT`` on
    the frame where the detector enters speech.
    """
    n = band.shape[0]
    if len(params) != N_PARAMS or len(state) != N_STATE or len(out) < n:
        raise ValueError(
            f"params must hold {N_PARAMS} values, state {N_STATE}, out >= {n}; "
            f"got {len(params)}, {len(state)}, {len(out)}"
        )
    (on, off, gate, fall, rise, rise_max, hang_max, onset, lb_db, lb_max, on_max, dev_k, dev_beta,
     dev_init, hang_quiet, quiet_lo, quiet_hi, hang_extra, margin_lo, margin_hi,
     level_beta) = (float(v) for v in params)
    lb_max = min(lb_max, float(MAX_LOOKBACK))
    floor, active, hang, seen, run, up, dev, level = (float(v) for v in state)
    for i in range(n):
        b = float(band[i])
        if seen == 0.0:
            floor, dev, level = b, dev_init, b
        thr_on = min(max(dev_k * dev, on), on_max)
        code = 0
        if active:
            active = 1.0 if b > max(floor + off + (thr_on - on), gate) else 0.0
        else:
            run = run + 1.0 if b > max(floor + thr_on, gate) else 0.0
            if run >= onset:
                active, run = 1.0, 0.0
                code = int(min(up, lb_max)) << DECISION_LOOKBACK_SHIFT
        if active:
            level += level_beta * (b - level)
            q = _ramp(floor, quiet_lo, quiet_hi)
            e = 1.0 - _ramp(level - floor, margin_lo, margin_hi)
            hang = float(math.floor(hang_quiet + (hang_max - hang_quiet) * q + hang_extra * e + 0.5))
            code |= DECISION_SPEECH
        elif hang > 0.0:
            hang -= 1.0
            code |= DECISION_SPEECH
        out[i] = code
        up = up + 1.0 if b > max(floor + lb_db, gate) else 0.0
        d = b - floor
        if not active and hang == 0.0:
            dev += dev_beta * (min(abs(d), thr_on) - dev)
        if d < 0.0:
            floor += fall * d
        elif active:
            floor += min(rise * d, rise_max)
        else:
            floor += rise * d
        seen += 1.0
    state[:] = (floor, active, hang, seen, run, up, dev, level)
    return n


def band_decide(x: np.ndarray, frame_len: int, decim: int, sos: np.ndarray, zi: np.ndarray,
                params: np.ndarray, state: np.ndarray, band: np.ndarray, out: np.ndarray) -> int:
    """:func:`band_energy` into ``band`` then :func:`energy_decide` into ``out``; return n."""
    _check_filter_args(frame_len, decim, sos, zi)
    n = len(x) // frame_len
    if band.shape[0] < n or out.shape[0] < n:
        raise ValueError(
            f"band and out must hold >= {n} values, got {band.shape[0]} and {out.shape[0]}"
        )
    if len(params) != N_PARAMS or len(state) != N_STATE:
        raise ValueError(
            f"params must hold {N_PARAMS} values, state {N_STATE}; "
            f"got {len(params)}, {len(state)}"
        )
    if n == 0:
        return 0
    band_energy(x, frame_len, decim, sos, zi, band)
    return energy_decide(band[:n], params, state, out)

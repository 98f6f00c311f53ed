"""Equiripple (minimax) linear-phase FIR design by the Parks-McClellan / Remez exchange, numpy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["remez_type1"]


def _bary_weights(x: np.ndarray) -> np.ndarray:
    # w_i = 1 / prod_{j != i} (x_i - x_j), scaled by a common factor (barycentric formulas are
    # invariant under it). The products of ~100 factors in [-2, 2] over/underflow, so they are
    # summed as logarithms with the sign kept apart.
    d = x[:, None] - x[None, :]
    np.fill_diagonal(d, 1.0)
    log_abs = np.log(np.abs(d)).sum(axis=1)
    sign = np.prod(np.sign(d), axis=1)
    return sign * np.exp(-(log_abs - log_abs.min()))


def _interp(xk: np.ndarray, ck: np.ndarray, wk: np.ndarray, x: np.ndarray) -> np.ndarray:
    # Barycentric Lagrange interpolation (second form) through (xk, ck), evaluated at x; exact at
    # the nodes.
    d = x[:, None] - xk[None, :]
    hit = d == 0.0
    d[hit] = 1.0
    t = wk / d
    # einsum's own loop, not BLAS: a BLAS call here wakes OpenBLAS's thread pool, whose
    # threads then spin on the other core for a while after every design
    y = np.einsum("ij,j->i", t, ck) / t.sum(axis=1)
    rows, cols = np.nonzero(hit)
    y[rows] = ck[cols]
    return y


def _extrema(e: np.ndarray, band_of: np.ndarray, r: int) -> np.ndarray:
    # The r extremal points for the next exchange: local extrema of the weighted error e (band
    # edges included, no comparison across a band boundary), made to alternate in sign (of two
    # neighbours with the same sign the larger stays), then thinned to r keeping alternation: a
    # surplus of one drops the smaller end, a larger surplus drops the smallest point together
    # with its smaller neighbour (the two have opposite signs, so the rest still alternates).
    same_left = np.r_[False, band_of[1:] == band_of[:-1]]
    same_right = np.r_[band_of[1:] == band_of[:-1], False]
    prev = np.r_[e[0], e[:-1]]
    nxt = np.r_[e[1:], e[-1]]
    up = e >= 0
    left = ~same_left | np.where(up, e >= prev, e <= prev)
    right = ~same_right | np.where(up, e >= nxt, e <= nxt)
    keep: list[int] = []
    for i in np.nonzero(left & right)[0]:
        if keep and (e[i] >= 0) == (e[keep[-1]] >= 0):
            if abs(e[i]) > abs(e[keep[-1]]):
                keep[-1] = i
        else:
            keep.append(int(i))
    while len(keep) > r:
        mag = np.abs(e[keep])
        if len(keep) - r == 1:
            keep.pop(0 if mag[0] < mag[-1] else -1)
            continue
        k = int(np.argmin(mag))
        if k == 0 or k == len(keep) - 1:
            keep.pop(k)  # an end alone: alternation is kept
            continue
        j = k - 1 if mag[k - 1] < mag[k + 1] else k + 1
        for idx in sorted((k, j), reverse=True):
            keep.pop(idx)
    return np.asarray(keep, dtype=np.intp)


def remez_type1(
    numtaps: int,
    bands: Sequence[tuple[float, float]],
    desired: Sequence[float],
    weight: Sequence[float],
    *,
    grid_density: int = 16,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> np.ndarray:
    """Minimax (equiripple) symmetric FIR filter of odd length with piecewise-constant bands.

    Parameters
    ----------
    numtaps : int
        Odd filter length ``N = 2 n + 1`` (type I linear phase).
    bands : sequence of (lo, hi)
        Band edges as fractions of the Nyquist frequency, increasing, inside [0, 1], not
        overlapping; the gaps between bands are don't-care transition bands.
    desired : sequence of float
        Gain wanted in each band.
    weight : sequence of float
        Positive weight of each band's error (the design makes ``weight * |error|`` equal and
        minimal in every band).

    Returns
    -------
    numpy.ndarray
        float64 taps, symmetric, length `numtaps`.

    Raises
    ------
    ValueError
        Bad arguments, or the exchange found too few extremal frequencies (bands too narrow
        for the grid: raise `grid_density`).
    """
    if numtaps < 3 or numtaps % 2 == 0:
        raise ValueError(f"numtaps must be odd and >= 3, got {numtaps}")
    if not (len(bands) == len(desired) == len(weight)) or not bands:
        raise ValueError("bands, desired and weight must have the same non-zero length")
    edges = np.asarray(bands, dtype=np.float64)
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"bands must be (lo, hi) pairs, got {bands!r}")
    flat = edges.ravel()
    if np.any(flat < 0) or np.any(flat > 1) or np.any(np.diff(flat) < 0) or np.any(
        edges[:, 1] <= edges[:, 0]
    ):
        raise ValueError(f"band edges must increase within [0, 1], got {bands!r}")
    if any(w <= 0 for w in weight):
        raise ValueError(f"weights must be > 0, got {list(weight)!r}")
    n = (numtaps - 1) // 2
    r = n + 2  # extremal frequencies of the best approximation by n + 1 cosines
    # Dense grid over the bands only, about grid_density points per extremal.
    span = float(np.sum(edges[:, 1] - edges[:, 0]))
    grid_parts, d_parts, w_parts, b_parts = [], [], [], []
    for k, ((lo, hi), dk, wk) in enumerate(zip(edges, desired, weight)):
        m = max(int(np.ceil(grid_density * r * (hi - lo) / span)), 8)
        g = np.linspace(lo, hi, m)
        grid_parts.append(g)
        d_parts.append(np.full(m, float(dk)))
        w_parts.append(np.full(m, float(wk)))
        b_parts.append(np.full(m, k))
    omega = np.pi * np.concatenate(grid_parts)
    d_grid = np.concatenate(d_parts)
    w_grid = np.concatenate(w_parts)
    band_of = np.concatenate(b_parts)
    x = np.cos(omega)
    if len(x) < 2 * r:
        raise ValueError(f"grid of {len(x)} points too coarse for {numtaps} taps")
    ext = np.round(np.linspace(0, len(x) - 1, r)).astype(np.intp)
    alt = (-1.0) ** np.arange(r)
    for _ in range(max_iter):
        xe = x[ext]
        b = _bary_weights(xe)
        delta = float(np.sum(b * d_grid[ext]) / np.sum(b * alt / w_grid[ext]))
        ce = d_grid[ext] - alt * delta / w_grid[ext]
        wk = _bary_weights(xe[:-1])
        a = _interp(xe[:-1], ce[:-1], wk, x)
        e = w_grid * (d_grid - a)
        new = _extrema(e, band_of, r)
        if len(new) < r:
            raise ValueError(
                f"Remez exchange lost alternation ({len(new)} of {r} extrema); "
                "raise grid_density or change the bands"
            )
        converged = (np.max(np.abs(e)) - abs(delta)) <= tol * abs(delta)
        ext = new
        if converged:
            break
    # Frequency response A(w) = sum_k a_k cos(k w) sampled at w_m = pi m / n, m = 0..n, then
    # the cosine coefficients by the inverse DCT-I (endpoints half-weighted on both sides);
    # h is the symmetric impulse response.
    m = np.arange(n + 1)
    a_s = _interp(xe[:-1], ce[:-1], wk, np.cos(np.pi * m / n))
    half = np.ones(n + 1)
    half[0] = half[-1] = 0.5
    coef = (2.0 / n) * (np.cos(np.pi * np.outer(m, m) / n) * (half * a_s)).sum(axis=1) * half
    h = np.empty(numtaps)
    h[n] = coef[0]
    h[n + 1 :] = coef[1:] / 2
    h[:n] = h[n + 1 :][::-1]
    return h

# cython: language_level=3
"""VAD kernels: per-frame features of int16 PCM and the energy detector's decision loop."""

from libc.math cimport log10
from libc.stdint cimport int16_t, uint8_t

# Shared layout constants (the same numbers as sis_stream/_reference/vad.py; a test pins them).
FEATURE_ENERGY = 0
FEATURE_BAND = 1
FEATURE_ZCR = 2
N_FEATURES = 3
DBFS_FLOOR = -100.0
MAX_FRAME_LEN = 480
MAX_SECTIONS = 4
P_ON_DB, P_OFF_DB, P_MIN_DBFS, P_FALL, P_RISE, P_RISE_MAX_DB, P_HANGOVER, P_ONSET = range(8)
N_PARAMS = 8
S_FLOOR, S_ACTIVE, S_HANG, S_NFRAMES, S_RUN = range(5)
N_STATE = 5

cdef enum:
    _MAX_FRAME = 480
    _MAX_SEC = 4
    _MAX_N = 8  # state dimension 2 * _MAX_SEC
    _LANES = 16  # frames filtered side by side in the frame-parallel path (hides FP latency)
    _PARALLEL_MIN_FRAMES = 24  # below this the per-call set-up costs more than it saves

# Mean square of int16 full scale, and the clamp that makes digital silence DBFS_FLOOR.
cdef double _FS2 = 32768.0 * 32768.0
cdef double _MS_FLOOR = 1e-10 * 32768.0 * 32768.0


cdef inline double _dbfs(double mean_square) noexcept nogil:
    if mean_square < _MS_FLOOR:
        mean_square = _MS_FLOOR
    return 10.0 * log10(mean_square / _FS2)


cdef int _frame_features_impl(const int16_t[::1] x, Py_ssize_t frame_len, Py_ssize_t n_frames,
                              const double[::1] sos, Py_ssize_t n_sec, double[::1] zi,
                              double[:, ::1] out) except -1 nogil:
    cdef Py_ssize_t f, t, i, base
    cdef double acc_e, acc_b, u, y, z1, z2
    cdef int zc
    cdef const int16_t* xf
    cdef double inv_len = 1.0 / <double>frame_len
    cdef bint parallel = n_frames >= _PARALLEL_MIN_FRAMES
    if parallel:
        # Band energy of all frames at once; column 1 receives the mean squares.
        _band_energy_parallel(&x[0], frame_len, n_frames, &sos[0], n_sec, &zi[0], &out[0, 1],
                              &out[0, 0], out.shape[1])
    for f in range(n_frames):
        base = f * frame_len  # f < n_frames = len(x) // frame_len, so base + frame_len <= len(x)
        xf = &x[base]
        # Sign bit of the XOR is set when exactly one of the neighbours is negative.
        zc = sis_vad_zero_crossings(xf, frame_len)
        if parallel:
            acc_e = out[f, 0] * <double>frame_len
            acc_b = out[f, 1] * <double>frame_len
        else:
            acc_e = 0.0
            for t in range(frame_len):
                u = <double>x[base + t]
                acc_e += u * u
            # Transposed direct form II, sample by sample (sos row i at 6 * i, zi at 2 * i).
            acc_b = 0.0
            for t in range(frame_len):
                u = <double>x[base + t]
                for i in range(n_sec):
                    z1 = zi[2 * i]
                    z2 = zi[2 * i + 1]
                    y = sos[6 * i] * u + z1
                    zi[2 * i] = sos[6 * i + 1] * u - sos[6 * i + 4] * y + z2
                    zi[2 * i + 1] = sos[6 * i + 2] * u - sos[6 * i + 5] * y
                    u = y
                acc_b += u * u
        out[f, 0] = _dbfs(acc_e * inv_len)
        out[f, 1] = _dbfs(acc_b * inv_len)
        out[f, 2] = <double>zc / <double>(frame_len - 1)  # same rounding as the twin
    return 0

# The frame-parallel inner loop is plain C: Cython keeps Python loop variables alive after the
# loop, which stops GCC from vectorising the lane loops. The same body is compiled twice, for
# the baseline ISA and (GCC/Clang on x86) for AVX2+FMA, chosen once at run time.
cdef extern from *:
    """
    #include <stdint.h>
    #define SIS_VAD_LANES 16
    #define SIS_VAD_MAX_SEC 4
    #define SIS_VAD_MAX_N 8

    /* One group of SIS_VAD_LANES frames: zero-state filter of every lane over t = 0..L-1,
       accumulating e0 (filtered energy), er (raw energy), w[j] (sum y0_t R_t[j]) and leaving
       the zero-state final states in z1/z2. off[g] is the first sample of lane g's frame. */
    typedef float sis_v8 __attribute__((vector_size(32)));  /* 8 float lanes (2 SSE / 1 AVX) */
    #define SIS_VAD_NV (SIS_VAD_LANES / 8)

    static inline __attribute__((always_inline)) void sis_vad_lanes_body(
            const int16_t *x, Py_ssize_t L, const Py_ssize_t *off, Py_ssize_t n_sec,
            const float *coef, const float *R, Py_ssize_t n, float *e0, float *er, float *w,
            float *z1, float *z2) {
        sis_v8 u[SIS_VAD_NV], e0v[SIS_VAD_NV], erv[SIS_VAD_NV];
        sis_v8 wv[SIS_VAD_MAX_N][SIS_VAD_NV], z1v[SIS_VAD_MAX_SEC][SIS_VAD_NV];
        sis_v8 z2v[SIS_VAD_MAX_SEC][SIS_VAD_NV];
        const sis_v8 zero = {0};
        for (int v = 0; v < SIS_VAD_NV; v++) {
            e0v[v] = zero; erv[v] = zero;
            for (int j = 0; j < SIS_VAD_MAX_N; j++) wv[j][v] = zero;
            for (int i = 0; i < SIS_VAD_MAX_SEC; i++) { z1v[i][v] = zero; z2v[i][v] = zero; }
        }
        for (Py_ssize_t t = 0; t < L; t++) {
            for (int v = 0; v < SIS_VAD_NV; v++) {
                const Py_ssize_t *o = off + 8 * v;
                sis_v8 a = {(float)x[o[0] + t], (float)x[o[1] + t], (float)x[o[2] + t],
                            (float)x[o[3] + t], (float)x[o[4] + t], (float)x[o[5] + t],
                            (float)x[o[6] + t], (float)x[o[7] + t]};
                u[v] = a;
                erv[v] += a * a;
            }
            for (Py_ssize_t i = 0; i < n_sec; i++) {
                const float c0 = coef[5 * i], c1 = coef[5 * i + 1], c2 = coef[5 * i + 2];
                const float c4 = coef[5 * i + 3], c5 = coef[5 * i + 4];
                for (int v = 0; v < SIS_VAD_NV; v++) {
                    const sis_v8 y = c0 * u[v] + z1v[i][v];
                    z1v[i][v] = c1 * u[v] - c4 * y + z2v[i][v];
                    z2v[i][v] = c2 * u[v] - c5 * y;
                    u[v] = y;
                }
            }
            for (int v = 0; v < SIS_VAD_NV; v++) e0v[v] += u[v] * u[v];
            for (Py_ssize_t j = 0; j < n; j++) {
                const float r = R[t * n + j];
                for (int v = 0; v < SIS_VAD_NV; v++) wv[j][v] += u[v] * r;
            }
        }
        for (int v = 0; v < SIS_VAD_NV; v++) {
            for (int k = 0; k < 8; k++) {
                e0[8 * v + k] = e0v[v][k];
                er[8 * v + k] = erv[v][k];
                for (Py_ssize_t j = 0; j < n; j++) w[j * SIS_VAD_LANES + 8 * v + k] = wv[j][v][k];
                for (Py_ssize_t i = 0; i < n_sec; i++) {
                    z1[i * SIS_VAD_LANES + 8 * v + k] = z1v[i][v][k];
                    z2[i * SIS_VAD_LANES + 8 * v + k] = z2v[i][v][k];
                }
            }
        }
    }

    /* Sign changes between neighbours of x[0..L-1] (sign bit of the XOR); vectorisable. */
    static inline int32_t sis_vad_zero_crossings(const int16_t *x, Py_ssize_t L) {
        int32_t c = 0;
        for (Py_ssize_t t = 1; t < L; t++) c += (int32_t)((uint16_t)(x[t] ^ x[t - 1]) >> 15);
        return c;
    }

    static void sis_vad_lanes_generic(const int16_t *x, Py_ssize_t L, const Py_ssize_t *off,
            Py_ssize_t n_sec, const float *coef, const float *R, Py_ssize_t n, float *e0,
            float *er, float *w, float *z1, float *z2) {
        sis_vad_lanes_body(x, L, off, n_sec, coef, R, n, e0, er, w, z1, z2);
    }

    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __attribute__((target("avx2,fma")))
    static void sis_vad_lanes_avx2(const int16_t *x, Py_ssize_t L, const Py_ssize_t *off,
            Py_ssize_t n_sec, const float *coef, const float *R, Py_ssize_t n, float *e0,
            float *er, float *w, float *z1, float *z2) {
        sis_vad_lanes_body(x, L, off, n_sec, coef, R, n, e0, er, w, z1, z2);
    }
    static int sis_vad_have_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    #define sis_vad_lanes_avx2 sis_vad_lanes_generic
    static int sis_vad_have_avx2(void) { return 0; }
    #endif
    """
    void sis_vad_lanes_generic(const int16_t* x, Py_ssize_t L, const Py_ssize_t* off,
                               Py_ssize_t n_sec, const float* coef, const float* R, Py_ssize_t n,
                               float* e0, float* er, float* w, float* z1, float* z2) noexcept nogil
    void sis_vad_lanes_avx2(const int16_t* x, Py_ssize_t L, const Py_ssize_t* off,
                            Py_ssize_t n_sec, const float* coef, const float* R, Py_ssize_t n,
                            float* e0, float* er, float* w, float* z1, float* z2) noexcept nogil
    int sis_vad_have_avx2() noexcept nogil
    int sis_vad_zero_crossings(const int16_t* x, Py_ssize_t L) noexcept nogil

ctypedef void (*_lanes_fn)(const int16_t*, Py_ssize_t, const Py_ssize_t*, Py_ssize_t,
                           const float*, const float*, Py_ssize_t, float*, float*, float*,
                           float*, float*) noexcept nogil

cdef _lanes_fn _lanes = sis_vad_lanes_avx2 if sis_vad_have_avx2() else sis_vad_lanes_generic
#: "avx2+fma" or "baseline": which build of the frame-parallel loop runs on this CPU.
LANES_ISA = "avx2+fma" if sis_vad_have_avx2() else "baseline"


cdef int _state_space(const double* sos, Py_ssize_t n_sec, double* A, double* B, double* C,
                      double* D) except -1 nogil:
    # (A, B, C, D) of the cascade in transposed-direct-form-II state coordinates, state
    # [z1_0, z2_0, z1_1, ...]: section i with input u computes y = b0 u + z1,
    # z1' = (b1 - a1 b0) u - a1 z1 + z2, z2' = (b2 - a2 b0) u - a2 z1; u_{i+1} = y.
    # cu/du express the current section's input as cu . s + du * x. A is row-major n x n.
    cdef Py_ssize_t n = 2 * n_sec, i, j
    cdef double cu[_MAX_N]
    cdef double cy[_MAX_N]
    cdef double du = 1.0, dy, b0, b1, b2, a1, a2
    for j in range(n * n):
        A[j] = 0.0
    for j in range(n):
        cu[j] = 0.0
    for i in range(n_sec):
        b0 = sos[6 * i]
        b1 = sos[6 * i + 1]
        b2 = sos[6 * i + 2]
        a1 = sos[6 * i + 4]
        a2 = sos[6 * i + 5]
        for j in range(n):
            cy[j] = b0 * cu[j]
        cy[2 * i] += 1.0
        dy = b0 * du
        for j in range(n):
            A[(2 * i) * n + j] = b1 * cu[j] - a1 * cy[j]
            A[(2 * i + 1) * n + j] = b2 * cu[j] - a2 * cy[j]
        A[(2 * i) * n + 2 * i + 1] += 1.0
        B[2 * i] = b1 * du - a1 * dy
        B[2 * i + 1] = b2 * du - a2 * dy
        for j in range(n):
            cu[j] = cy[j]
        du = dy
    for j in range(n):
        C[j] = cu[j]
    D[0] = du
    return 0


cdef void _matmul(const double* a, const double* b, double* out, Py_ssize_t n) noexcept nogil:
    # out = a @ b for row-major n x n matrices (n <= _MAX_N; the caller's arrays hold n * n).
    cdef Py_ssize_t i, j, k
    cdef double acc
    for i in range(n):
        for j in range(n):
            acc = 0.0
            for k in range(n):
                acc += a[i * n + k] * b[k * n + j]
            out[i * n + j] = acc


cdef int _band_energy_parallel(const int16_t* x, Py_ssize_t L, Py_ssize_t n_frames,
                               const double* sos, Py_ssize_t n_sec, double* zi,
                               double* band_ms, double* raw_ms, Py_ssize_t out_stride) except -1 nogil:
    # Exact IIR band energy with the frames filtered side by side (no recursion across lanes):
    # for frame k with initial state s_k, y_t = y0_t + R_t . s_k where y0 is the frame's
    # zero-state response and R_t = C A^t its zero-input response rows. Hence
    #   sum y_t^2 = E0 + 2 W . s_k + s_k^T Q s_k,  W = sum_t y0_t R_t,  Q = sum_t R_t R_t^T,
    #   s_{k+1} = A^L s_k + s0_k   (s0_k: the zero-state final state).
    # E0, W and s0 come from _LANES frames at a time in float32 (vectorisable), the short
    # recursion over s_k runs in float64.
    cdef Py_ssize_t n = 2 * n_sec, i, j, k, t, g, f0, G
    cdef double A[_MAX_N * _MAX_N]
    cdef double AL[_MAX_N * _MAX_N]
    cdef double tmp[_MAX_N * _MAX_N]
    cdef double P[_MAX_N * _MAX_N]
    cdef double Q[_MAX_N * _MAX_N]
    cdef double B[_MAX_N]
    cdef double C[_MAX_N]
    cdef double D
    cdef double s[_MAX_N]
    cdef double s_new[_MAX_N]
    cdef double r_d[_MAX_N]
    cdef double r_next[_MAX_N]
    cdef float R[_MAX_FRAME * _MAX_N]
    cdef float coef[_MAX_SEC * 5]
    cdef float z1[_MAX_SEC * _LANES]
    cdef float z2[_MAX_SEC * _LANES]
    cdef float e0[_LANES]
    cdef float er[_LANES]
    cdef float w[_MAX_N * _LANES]
    cdef Py_ssize_t off[_LANES]
    cdef double e, acc
    _state_space(sos, n_sec, A, B, C, &D)
    # R_t = C A^t for t < L, Q = sum R_t R_t^T, AL = A^L.
    for j in range(n):
        r_d[j] = C[j]
    for j in range(n * n):
        Q[j] = 0.0
    for t in range(L):
        for j in range(n):
            R[t * n + j] = <float>r_d[j]  # t < L <= _MAX_FRAME, j < n <= _MAX_N
            for k in range(n):
                Q[j * n + k] += r_d[j] * r_d[k]
        for j in range(n):
            acc = 0.0
            for k in range(n):
                acc += r_d[k] * A[k * n + j]
            r_next[j] = acc
        for j in range(n):
            r_d[j] = r_next[j]
    # AL = A^L by repeated squaring (P holds A^(2^bit)).
    for i in range(n):
        for j in range(n):
            AL[i * n + j] = 1.0 if i == j else 0.0
    for j in range(n * n):
        P[j] = A[j]
    t = L
    while t > 0:
        if t & 1:
            _matmul(AL, P, tmp, n)
            for j in range(n * n):
                AL[j] = tmp[j]
        _matmul(P, P, tmp, n)
        for j in range(n * n):
            P[j] = tmp[j]
        t >>= 1
    for i in range(n_sec):
        for j in range(5):
            coef[5 * i + j] = <float>sos[6 * i + (j if j < 3 else j + 1)]  # b0 b1 b2 a1 a2
    for j in range(n):
        s[j] = zi[j]
    f0 = 0
    while f0 < n_frames:
        G = n_frames - f0
        if G > _LANES:
            G = _LANES
        for g in range(_LANES):
            # Lanes past the last frame (G < _LANES) re-read frame f0 + G - 1; they are unused.
            off[g] = (f0 + (g if g < G else G - 1)) * L  # < n_frames * L: in bounds
        _lanes(x, L, off, n_sec, coef, R, n, e0, er, w, z1, z2)
        for g in range(G):
            e = e0[g]
            for j in range(n):
                acc = 0.0
                for k in range(n):
                    acc += Q[j * n + k] * s[k]
                e += (2.0 * w[j * _LANES + g] + acc) * s[j]
            band_ms[(f0 + g) * out_stride] = e / <double>L
            raw_ms[(f0 + g) * out_stride] = er[g] / <double>L
            for i in range(n):
                acc = 0.0
                for k in range(n):
                    acc += AL[i * n + k] * s[k]
                s_new[i] = acc
            for i in range(n_sec):
                s_new[2 * i] += z1[i * _LANES + g]
                s_new[2 * i + 1] += z2[i * _LANES + g]
            for j in range(n):
                s[j] = s_new[j]
        f0 += G
    for j in range(n):
        zi[j] = s[j]
    return 0


def frame_features(const int16_t[::1] x, Py_ssize_t frame_len, const double[::1] sos,
                   double[::1] zi, double[:, ::1] out):
    """Features of each complete frame of ``x`` into ``out[:n]``; update ``zi``; return n."""
    if frame_len < 2 or frame_len > _MAX_FRAME:
        raise ValueError(f"frame_len must be in 2..{MAX_FRAME_LEN}, got {frame_len}")
    cdef Py_ssize_t n_sec = sos.shape[0] // 6
    if sos.shape[0] != 6 * n_sec or n_sec < 1 or n_sec > _MAX_SEC or zi.shape[0] != 2 * n_sec:
        raise ValueError(
            f"sos must hold 6 * n (1 <= n <= {MAX_SECTIONS}) coefficients and zi 2 * n states, "
            f"got {sos.shape[0]} and {zi.shape[0]}"
        )
    cdef Py_ssize_t n = x.shape[0] // frame_len
    if out.shape[0] < n or out.shape[1] != N_FEATURES:
        raise ValueError(f"out must have shape (>= {n}, {N_FEATURES}), got {tuple(out.shape)[:2]}")
    if n == 0:
        return 0
    with nogil:
        _frame_features_impl(x, frame_len, n, sos, n_sec, zi, out)
    return n


cdef int _energy_decide_impl(const double[:, ::1] feat, Py_ssize_t n, const double[::1] p,
                             double[::1] state, uint8_t[::1] out) except -1 nogil:
    cdef double on = p[0], off = p[1], gate = p[2], fall = p[3], rise = p[4]
    cdef double rise_max = p[5], hang_max = p[6], onset = p[7]
    cdef double floor = state[0], active = state[1], hang = state[2], seen = state[3]
    cdef double run = state[4]
    cdef double b, d, thr, r
    cdef Py_ssize_t i
    for i in range(n):
        b = feat[i, 1]
        if seen == 0.0:
            floor = b
        if active != 0.0:
            thr = floor + off
            if thr < gate:
                thr = gate
            active = 1.0 if b > thr else 0.0
        else:
            thr = floor + on
            if thr < gate:
                thr = gate
            run = run + 1.0 if b > thr else 0.0
            if run >= onset:
                active = 1.0
                run = 0.0
        if active != 0.0:
            hang = hang_max
            out[i] = 1
        elif hang > 0.0:
            hang -= 1.0
            out[i] = 1
        else:
            out[i] = 0
        d = b - floor
        if d < 0.0:
            floor += fall * d
        elif active != 0.0:
            r = rise * d
            floor += r if r < rise_max else rise_max
        else:
            floor += rise * d
        seen += 1.0
    state[0] = floor
    state[1] = active
    state[2] = hang
    state[3] = seen
    state[4] = run
    return 0


def energy_decide(const double[:, ::1] feat, const double[::1] params, double[::1] state,
                  uint8_t[::1] out):
    """Speech (1) / non-speech (0) for each row of ``feat`` into ``out``; update ``state``."""
    cdef Py_ssize_t n = feat.shape[0]
    if params.shape[0] != N_PARAMS or state.shape[0] != N_STATE or out.shape[0] < n:
        raise ValueError(
            f"params must hold {N_PARAMS} values, state {N_STATE}, out >= {n}; "
            f"got {params.shape[0]}, {state.shape[0]}, {out.shape[0]}"
        )
    if n > 0 and feat.shape[1] != N_FEATURES:
        raise ValueError(f"feat must have {N_FEATURES} columns, got {feat.shape[1]}")
    with nogil:
        _energy_decide_impl(feat, n, params, state, out)
    return n

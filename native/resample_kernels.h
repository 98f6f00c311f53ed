/* Polyphase FIR resampling kernels of native/resample.pyx (C, included by the Cython module):
   vector blocks for AVX-512, AVX2+FMA and a baseline, int16 load/store, the ISA probe. */
#ifndef SIS_RESAMPLE_KERNELS_H
#define SIS_RESAMPLE_KERNELS_H

#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef float sis_rs_v8 __attribute__((vector_size(32)));   /* 8 lanes (2 SSE / 1 AVX) */
typedef float sis_rs_v16 __attribute__((vector_size(64)));  /* 16 lanes (1 AVX-512) */

/* NV*W outputs j0 .. j0+NV*W-1 of one class (outputs m = c + j*L, same phase, windows M
   apart), output j stored at dst[j * stride]. Tap i of output j reads stream[(s0+i) % M][(s0+i) / M + j], where stream r holds
   buf[r], buf[r+M], ...; with M == 1 the single stream is buf itself (S == 0). One vector
   lane per output: lanes never mix, so each output is the same sequential sum as the scalar
   tail computes. NV <= 12 independent accumulators hide the multiply-add latency.
   Zero taps are skipped here and in the scalar tail alike (adding 0 * x changes no finite
   sum), which halves the work of the half-band stages of a cascade. */
#define SIS_RS_DEFINE_BLOCK(NAME, VT, W)                                                  \
static inline __attribute__((always_inline)) void NAME(                                  \
        int NV, const float *tp, Py_ssize_t K, const float *streams, Py_ssize_t S,        \
        Py_ssize_t M, Py_ssize_t r0, Py_ssize_t q0, Py_ssize_t j0, float *dst,            \
        Py_ssize_t stride) {                                                              \
    VT acc[12];                                                                           \
    const VT zero = {0};                                                                  \
    for (int v = 0; v < NV; v++) acc[v] = zero;                                           \
    Py_ssize_t r = r0, q = q0;                                                            \
    for (Py_ssize_t i = 0; i < K; i++) {                                                  \
        const float *src = streams + r * S + q + j0;                                      \
        const float tv = tp[i];                                                           \
        if (tv != 0.0f) {  /* zero taps (half-band stages: every second one) skipped */   \
            for (int v = 0; v < NV; v++) {                                                \
                VT xv;                                                                    \
                memcpy(&xv, src + W * v, sizeof xv);  /* unaligned load */                \
                acc[v] += tv * xv;                                                        \
            }                                                                             \
        }                                                                                 \
        if (++r == M) { r = 0; q++; }                                                     \
    }                                                                                     \
    if (stride == 1)  /* the class's outputs are contiguous: whole-vector stores */        \
        for (int v = 0; v < NV; v++) memcpy(dst + j0 + W * v, &acc[v], sizeof acc[v]);    \
    else                                                                                  \
        for (int v = 0; v < NV; v++)                                                      \
            for (int k = 0; k < W; k++) dst[(j0 + W * v + k) * stride] = acc[v][k];       \
}
SIS_RS_DEFINE_BLOCK(sis_rs_block8, sis_rs_v8, 8)
SIS_RS_DEFINE_BLOCK(sis_rs_block16, sis_rs_v16, 16)

/* Two sets of NV*W outputs that read the same input vectors, d taps apart, in one loop:
   step o loads, for v < NV, the W samples at stream[(s0+o) % M][(s0+o) / M + j0 + ls*v]
   (as tap o of SIS_RS_DEFINE_BLOCK does for its lane block at j0 + ls*v) once, and set 0
   uses them with its tap o (o < K, taps tp0), set 1 with its tap o - d (o >= d, taps tp1);
   set s's vector v goes to dst_s + j0 + ls*v. Two uses (sis_rs_run_body):
   - both classes of an L == 2, M == 1 filter (8k -> 16k): set 1 is class 1 (window d = 0
     or 1 sample after class 0's), ls = W, dst1 the class-major second half;
   - one class with M > 1 (16k -> 8k, the half-band stages), vectors in pairs: the lane
     block W outputs later reads, W*M taps later, what this one reads now (its window is
     W*M samples later, i.e. W later in every stream), so set 0 = the even vectors, set 1
     the odd ones, d = W*M, ls = 2W, dst1 = dst0 + W.
   With a loop per set, every tap loaded its own (mostly cache-line-splitting) window for
   each set: a 20 ms call was bound by those loads. Each output is still the same
   sequential sum over its taps 0..K-1 (the lanes, the skipped zero taps and the rounding
   are those of SIS_RS_DEFINE_BLOCK), so the results are bit for bit those of the one-set
   loop. A load happens only at a step some set uses, at exactly the address that set's
   own loop reads. SIS_RS_PIN keeps each loaded vector in a register: without it GCC
   folds the load into both multiply-adds as a memory operand, loading it twice. */
#define SIS_RS_BLOCK2_STEP(SET0, SET1) do {                                            \
        for (int v = 0; v < NV; v++) {                                                    \
            __typeof__(a0[0]) xv;  /* the block's vector type */                     \
            memcpy(&xv, src + ls * v, sizeof xv);                                         \
            SIS_RS_PIN(xv);                                                               \
            if (SET0) a0[v] += t0 * xv;                                                   \
            if (SET1) a1[v] += t1 * xv;                                                   \
        }                                                                                 \
    } while (0)
/* Steps [0, d): set 0 alone; [d, K): both; [K, K + d): set 1 alone (both uses have
   d <= K: d <= 1 for the classes, 4 * d <= K for the pairs). The stream
   pointer moves on by S (next stream) or wraps to the next offset of stream 0. */
#define SIS_RS_DEFINE_BLOCK2(NAME, VT, W)                                                 \
static inline __attribute__((always_inline)) void NAME(                                  \
        int NV, const float *tp0, const float *tp1, Py_ssize_t K, const float *streams,   \
        Py_ssize_t S, Py_ssize_t M, Py_ssize_t r0, Py_ssize_t q0, Py_ssize_t d,            \
        Py_ssize_t j0, Py_ssize_t ls, float *dst0, float *dst1) {                         \
    VT a0[12], a1[12];                                                                    \
    const VT zero = {0};                                                                  \
    for (int v = 0; v < NV; v++) { a0[v] = zero; a1[v] = zero; }                          \
    Py_ssize_t r = r0, q = q0;                                                            \
    const float *src = streams + r * S + q + j0;                                          \
    float t0 = 0.0f, t1 = 0.0f;                                                           \
    Py_ssize_t o = 0;                                                                     \
    for (; o < d; o++) {                                                                  \
        t0 = tp0[o];                                                                      \
        if (t0 != 0.0f) SIS_RS_BLOCK2_STEP(1, 0);                                         \
        if (++r == M) { r = 0; q++; src = streams + q + j0; } else src += S;              \
    }                                                                                     \
    for (; o < K; o++) {                                                                  \
        t0 = tp0[o];                                                                      \
        t1 = tp1[o - d];                                                                  \
        if (__builtin_expect(t0 != 0.0f && t1 != 0.0f, 1)) SIS_RS_BLOCK2_STEP(1, 1);     \
        else if (t0 != 0.0f) SIS_RS_BLOCK2_STEP(1, 0);                                    \
        else if (t1 != 0.0f) SIS_RS_BLOCK2_STEP(0, 1);                                    \
        if (++r == M) { r = 0; q++; src = streams + q + j0; } else src += S;              \
    }                                                                                     \
    for (; o < K + d; o++) {                                                              \
        t1 = tp1[o - d];                                                                  \
        if (t1 != 0.0f) SIS_RS_BLOCK2_STEP(0, 1);                                         \
        if (++r == M) { r = 0; q++; src = streams + q + j0; } else src += S;              \
    }                                                                                     \
    for (int v = 0; v < NV; v++) {                                                        \
        memcpy(dst0 + j0 + ls * v, &a0[v], sizeof a0[v]);                                 \
        memcpy(dst1 + j0 + ls * v, &a1[v], sizeof a1[v]);                                 \
    }                                                                                     \
}
/* The two-set blocks exist for AVX2+FMA (8 lanes, nv <= 6 a set: 12 of the 16 ymm) and
   AVX-512 (16 lanes, nv <= 12: 24 of the 32 zmm), each compiled for its instruction set
   and called once per block; `paired` selects the second use above (ls = 2W), else the
   first (ls = W). The baseline keeps the one-set blocks. */
#define SIS_RS_BLOCK2_CASES(FN, LS)                                                       \
    switch (nv) {                                                                         \
        case 12: FN(12, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break; \
        case 11: FN(11, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break; \
        case 10: FN(10, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break; \
        case 9: FN(9, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;   \
        case 8: FN(8, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;   \
        case 7: FN(7, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;   \
        case 6: FN(6, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;   \
        case 5: FN(5, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;   \
        case 4: FN(4, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;   \
        case 3: FN(3, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;   \
        case 2: FN(2, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;   \
        default: FN(1, tp0, tp1, K, streams, S, M, r0, q0, d, j0, LS, dst0, dst1); break;  \
    }
#define SIS_RS_BLOCK2_ARGS int nv, int paired, const float *tp0, const float *tp1,         \
        Py_ssize_t K, const float *streams, Py_ssize_t S, Py_ssize_t M, Py_ssize_t r0,     \
        Py_ssize_t q0, Py_ssize_t d, Py_ssize_t j0, float *dst0, float *dst1
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define SIS_RS_PIN(x) __asm__("" : "+v"(x))
/* M == 2 de-interleave with AVX-512, 16 even + 16 odd samples a step (the SSE2 loop in
   sis_rs_run_body does 4 + 4 and finishes the rest): buf[e0 + 2k] -> even[e0 / 2 + k],
   buf[e0 + 2k + 1] -> odd[e0 / 2 + k]. Returns how far it got (a multiple of 32). */
__attribute__((target("avx512f"), noinline))
static Py_ssize_t sis_rs_split2_avx512(const float *buf, Py_ssize_t nb, float *even,
                                       float *odd) {
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                        2, 0);
    const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5,
                                        3, 1);
    Py_ssize_t e = 0;
    for (; e + 32 <= nb; e += 32) {
        const __m512 a = _mm512_loadu_ps(buf + e), b = _mm512_loadu_ps(buf + e + 16);
        _mm512_storeu_ps(even + e / 2, _mm512_permutex2var_ps(a, ev, b));
        _mm512_storeu_ps(odd + e / 2, _mm512_permutex2var_ps(a, od, b));
    }
    return e;
}
SIS_RS_DEFINE_BLOCK2(sis_rs_block2x8, sis_rs_v8, 8)
SIS_RS_DEFINE_BLOCK2(sis_rs_block2x16, sis_rs_v16, 16)
__attribute__((target("avx2,fma"), noinline))
static void sis_rs_blocks2_avx2(SIS_RS_BLOCK2_ARGS) {
    if (paired) { SIS_RS_BLOCK2_CASES(sis_rs_block2x8, 16) }
    else { SIS_RS_BLOCK2_CASES(sis_rs_block2x8, 8) }
}
__attribute__((target("avx512f,avx2,fma"), noinline))
static void sis_rs_blocks2_avx512(SIS_RS_BLOCK2_ARGS) {
    if (paired) { SIS_RS_BLOCK2_CASES(sis_rs_block2x16, 32) }
    else { SIS_RS_BLOCK2_CASES(sis_rs_block2x16, 16) }
}
/* Five sets (AVX-512): the pairs of SIS_RS_DEFINE_BLOCK2's second use, five vectors at a
   time instead of two. Vector v of set k is the lane block 5v + k (dst + j0 + W (5v + k)),
   which reads at tap o - k d (d = W*M) what block 5v reads at tap o, so each step loads
   NV vectors for 5 NV lane blocks (a 20 ms 16k -> 8k call: K + 4d = 295 steps of 2 loads
   instead of 167 steps of 10). Steps in segments with a fixed set of active sets (the
   sets start d steps apart and each runs K steps; needs 4 d <= K). Only for a tap row
   without zero taps (checked per call, 16 taps a compare; the row with zeros goes to the
   pairs): skipping zero taps per set and step made the loop slower than the pairs (a
   20 ms call 1.5 us against 1.0), without it it is 0.8. Same sums, same order, bit for
   bit the one-set loop's. */
#define SIS_RS_B5_RUN(LO, HI, FIRST, LAST) do {                                          \
        for (Py_ssize_t o = (LO); o < (HI); o++) {                                        \
            float t[5];                                                                   \
            for (int k = (FIRST); k <= (LAST); k++) t[k] = tp[o - k * d];                  \
            for (int v = 0; v < NV; v++) {                                                \
                sis_rs_v16 xv;                                                            \
                memcpy(&xv, src + 80 * v, sizeof xv);                                     \
                SIS_RS_PIN(xv);                                                           \
                for (int k = (FIRST); k <= (LAST); k++)                                   \
                    a[k][v] += t[k] * xv;                                                 \
            }                                                                             \
            if (++r == M) { r = 0; q++; src = streams + q + j0; } else src += S;          \
        }                                                                                 \
    } while (0)
static inline __attribute__((always_inline)) void sis_rs_block5x16(
        int NV, const float *tp, Py_ssize_t K, const float *streams, Py_ssize_t S,
        Py_ssize_t M, Py_ssize_t r0, Py_ssize_t q0, Py_ssize_t d, Py_ssize_t j0,
        float *dst) {
    sis_rs_v16 a[5][4];
    const sis_rs_v16 zero = {0};
    for (int k = 0; k < 5; k++)
        for (int v = 0; v < NV; v++) a[k][v] = zero;
    Py_ssize_t r = r0, q = q0;
    const float *src = streams + r * S + q + j0;
    SIS_RS_B5_RUN(0, d, 0, 0);
    SIS_RS_B5_RUN(d, 2 * d, 0, 1);
    SIS_RS_B5_RUN(2 * d, 3 * d, 0, 2);
    SIS_RS_B5_RUN(3 * d, 4 * d, 0, 3);
    SIS_RS_B5_RUN(4 * d, K, 0, 4);
    SIS_RS_B5_RUN(K, K + d, 1, 4);
    SIS_RS_B5_RUN(K + d, K + 2 * d, 2, 4);
    SIS_RS_B5_RUN(K + 2 * d, K + 3 * d, 3, 4);
    SIS_RS_B5_RUN(K + 3 * d, K + 4 * d, 4, 4);
    for (int k = 0; k < 5; k++)
        for (int v = 0; v < NV; v++) memcpy(dst + j0 + 16 * (5 * v + k), &a[k][v], 64);
}
#undef SIS_RS_B5_RUN
/* Returns 0 (and does nothing) when the tap row holds a zero tap. */
__attribute__((target("avx512f,avx2,fma"), noinline))
static int sis_rs_blocks5_avx512(int nv, const float *tp, Py_ssize_t K,
        const float *streams, Py_ssize_t S, Py_ssize_t M, Py_ssize_t r0, Py_ssize_t q0,
        Py_ssize_t d, Py_ssize_t j0, float *dst) {
    Py_ssize_t i = 0;
    __mmask16 zeros = 0;
    for (; i + 16 <= K; i += 16)
        zeros |= _mm512_cmp_ps_mask(_mm512_loadu_ps(tp + i), _mm512_setzero_ps(), _CMP_EQ_OQ);
    for (; i < K; i++)
        if (tp[i] == 0.0f) return 0;
    if (zeros) return 0;
    switch (nv) {
        case 4: sis_rs_block5x16(4, tp, K, streams, S, M, r0, q0, d, j0, dst); break;
        case 3: sis_rs_block5x16(3, tp, K, streams, S, M, r0, q0, d, j0, dst); break;
        case 2: sis_rs_block5x16(2, tp, K, streams, S, M, r0, q0, d, j0, dst); break;
        default: sis_rs_block5x16(1, tp, K, streams, S, M, r0, q0, d, j0, dst); break;
    }
    return 1;
}
#else  /* never called: the AVX variants are the baseline there (use_fma == wide == 0) */
static void sis_rs_blocks2_avx2(SIS_RS_BLOCK2_ARGS) { (void)nv; (void)paired; (void)tp0;
    (void)tp1; (void)K; (void)streams; (void)S; (void)M; (void)r0; (void)q0; (void)d;
    (void)j0; (void)dst0; (void)dst1; }
#define sis_rs_blocks2_avx512 sis_rs_blocks2_avx2
static int sis_rs_blocks5_avx512(int nv, const float *tp, Py_ssize_t K,
        const float *streams, Py_ssize_t S, Py_ssize_t M, Py_ssize_t r0, Py_ssize_t q0,
        Py_ssize_t d, Py_ssize_t j0, float *dst) { (void)nv; (void)tp; (void)K;
    (void)streams; (void)S; (void)M; (void)r0; (void)q0; (void)d; (void)j0; (void)dst;
    return 0; }
static Py_ssize_t sis_rs_split2_avx512(const float *buf, Py_ssize_t nb, float *even,
                                       float *odd) { (void)buf; (void)nb; (void)even;
    (void)odd; return 0; }
#endif
#undef SIS_RS_BLOCK2_CASES
#undef SIS_RS_BLOCK2_ARGS
#undef SIS_RS_BLOCK2_STEP

/* a + t * w rounded once (FMA) or twice; use_fma is a compile-time constant per variant.
   Fused only when the compiler also contracts the vector lanes' `acc += t * x`: GCC does
   from -O1 up (-ffp-contract=fast), not at -O0 (the debug build); clang always does. */
#if defined(__clang__) || defined(__OPTIMIZE__)
#define SIS_RS_CONTRACTS 1
#else
#define SIS_RS_CONTRACTS 0
#endif
#define SIS_RS_MADD(use_fma, t, w, a) \
    ((use_fma) && SIS_RS_CONTRACTS ? __builtin_fmaf((t), (w), (a)) : ((a) + (t) * (w)))

/* Across-taps mode, for filters with many phase classes (L >= SIS_RS_DOT_MIN_L, the 11.025
   kHz family: L = 80..640, M = 441) whose K is a multiple of 16: a 20 ms chunk holds only
   1-2 outputs per class, so vectorising across outputs is impossible there. Each output is
   instead a dot product of K taps with its window, 16 lanes wide: lane k sums taps k, k+16,
   k+32, ... in order, then the 16 lanes are added in one fixed tree. The order of operations
   depends only on K, never on the chunk or on the neighbouring outputs, so stream ==
   one-shot stays bit for bit, and every ISA variant does the same operations (AVX2+FMA and
   AVX-512 agree). Up to four outputs of a class run interleaved to hide the multiply-add
   latency; each keeps its own accumulators. */
#define SIS_RS_DOT_MIN_L 16
/* The 16 lanes are kept as two 8-lane halves (lanes 0-7, 8-15): the same arithmetic as one
   16-lane vector, but a type every variant maps to registers (one ymm each on AVX2). */
static inline __attribute__((always_inline)) float sis_rs_hsum16(sis_rs_v8 lo, sis_rs_v8 hi) {
    float t8[8], t4[4], t2[2];
    for (int k = 0; k < 8; k++) t8[k] = lo[k] + hi[k];
    for (int k = 0; k < 4; k++) t4[k] = t8[k] + t8[k + 4];
    for (int k = 0; k < 2; k++) t2[k] = t4[k] + t4[k + 2];
    return t2[0] + t2[1];
}
#define SIS_RS_DOT_STEP(a, t, w) do {                                                    \
        sis_rs_v8 tv_, xv_;                                                               \
        memcpy(&tv_, (t) + i, sizeof tv_); memcpy(&xv_, (w) + i, sizeof xv_);             \
        a##l += tv_ * xv_;                                                                \
        memcpy(&tv_, (t) + i + 8, sizeof tv_); memcpy(&xv_, (w) + i + 8, sizeof xv_);     \
        a##h += tv_ * xv_;                                                                \
    } while (0)
#define SIS_RS_DOT_STEP_T(a, w) do {  /* tap vectors tl_, th_ already loaded */        \
        sis_rs_v8 xv_;                                                                    \
        memcpy(&xv_, (w) + i, sizeof xv_); a##l += tl_ * xv_;                             \
        memcpy(&xv_, (w) + i + 8, sizeof xv_); a##h += th_ * xv_;                         \
    } while (0)
static inline __attribute__((always_inline)) void sis_rs_run_dot(const float *taps,
        Py_ssize_t K, const float *buf, Py_ssize_t phase, Py_ssize_t L, Py_ssize_t M,
        float *y, Py_ssize_t n_out) {
    const sis_rs_v8 zero = {0};
    /* Class by class (outputs m = c + j*L share the phase row, windows M apart), so a
       long call reads each tap row once per call instead of once per output (the whole
       table is L * K floats, ~200 KB, beyond L1) and four outputs share each tap load. */
    for (Py_ssize_t c = 0; c < L && c < n_out; c++) {
        const Py_ssize_t u0 = phase + c * M;
        const float *tp = taps + (u0 % L) * K, *w = buf + u0 / L;
        const Py_ssize_t nj = (n_out - c + L - 1) / L;
        Py_ssize_t j = 0;
        for (; j + 4 <= nj; j += 4) {
            const float *w0 = w + j * M, *w1 = w0 + M, *w2 = w1 + M, *w3 = w2 + M;
            sis_rs_v8 a0l = zero, a0h = zero, a1l = zero, a1h = zero;
            sis_rs_v8 a2l = zero, a2h = zero, a3l = zero, a3h = zero;
            for (Py_ssize_t i = 0; i < K; i += 16) {
                sis_rs_v8 tl_, th_;
                memcpy(&tl_, tp + i, sizeof tl_);
                memcpy(&th_, tp + i + 8, sizeof th_);
                SIS_RS_DOT_STEP_T(a0, w0);
                SIS_RS_DOT_STEP_T(a1, w1);
                SIS_RS_DOT_STEP_T(a2, w2);
                SIS_RS_DOT_STEP_T(a3, w3);
            }
            y[c + j * L] = sis_rs_hsum16(a0l, a0h);
            y[c + (j + 1) * L] = sis_rs_hsum16(a1l, a1h);
            y[c + (j + 2) * L] = sis_rs_hsum16(a2l, a2h);
            y[c + (j + 3) * L] = sis_rs_hsum16(a3l, a3h);
        }
        for (; j < nj; j++) {
            const float *w0 = w + j * M;
            sis_rs_v8 a0l = zero, a0h = zero;
            for (Py_ssize_t i = 0; i < K; i += 16) SIS_RS_DOT_STEP(a0, tp, w0);
            y[c + j * L] = sis_rs_hsum16(a0l, a0h);
        }
    }
}

/* All n_out outputs of one call into y[0..n_out-1], float32: in natural order, except for
   L == 2 (8k -> 16k, 24k -> 16k, 12k -> 8k), where they are stored class-major, outputs
   0, 2, 4, ... then 1, 3, 5, ..., so that both classes store whole vectors;
   sis_rs_interleave2_* put them in order (a strided scalar store per output cost a tenth
   of a 20 ms call). */
static inline __attribute__((always_inline)) void sis_rs_run_body(int use_fma, int wide,
        const float *taps, Py_ssize_t K, const float *buf, Py_ssize_t nb, float *streams,
        Py_ssize_t phase, Py_ssize_t L, Py_ssize_t M, float *y, Py_ssize_t n_out) {
    if (L >= SIS_RS_DOT_MIN_L && K % 16 == 0) {  /* a property of the filter, not the chunk */
        sis_rs_run_dot(taps, K, buf, phase, L, M, y, n_out);
        return;
    }
    /* Vector blocks pay off once a class has at least 8 outputs. */
    const int vec = n_out >= 8 * L;
    Py_ssize_t S = 0;
    const float *base = buf;
    if (vec && M > 1) {
        /* De-interleave buf into M contiguous streams of S samples each. */
        S = (nb + M - 1) / M;
        Py_ssize_t e0 = 0;
        if (M == 2 && wide) e0 = sis_rs_split2_avx512(buf, nb, streams, streams + S);
#if defined(__SSE2__)
        if (M == 2) {  /* the half-band stages: 4 even + 4 odd samples per step */
            for (; e0 + 8 <= nb; e0 += 8) {
                const __m128 a = _mm_loadu_ps(buf + e0), b = _mm_loadu_ps(buf + e0 + 4);
                _mm_storeu_ps(streams + e0 / 2, _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
                _mm_storeu_ps(streams + S + e0 / 2, _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
            }
        }
#endif
        for (Py_ssize_t r = 0; r < M; r++) {
            float *dst = streams + r * S;
            Py_ssize_t k = e0 / M;  /* e0 is a multiple of M */
            for (Py_ssize_t e = e0 + r; e < nb; e += M) dst[k++] = buf[e];
        }
        base = streams;
    }
    /* The two-set blocks (SIS_RS_DEFINE_BLOCK2; AVX2+FMA and AVX-512 only) in blocks of
       at most cap2 vectors a set, the vectors split evenly over as few blocks as possible. */
    const int two_set = wide || use_fma;
    const Py_ssize_t cap2 = wide ? 12 : 6;
    /* L == 2, M == 1 (8k -> 16k): the whole vectors both classes have go through the
       two-class blocks first; each class's loop below starts after them (jf outputs) with
       the rest. Class c: phase row (phase + c) % 2, window start (phase + c) / 2,
       class-major destination y + c * ((n_out + 1) / 2). */
    Py_ssize_t jf = 0;
    if (vec && two_set && L == 2 && M == 1) {
        const Py_ssize_t W = wide ? 16 : 8;
        const Py_ssize_t s0 = phase / 2, d = (phase + 1) / 2 - phase / 2;
        const float *tp0 = taps + (phase % 2) * K, *tp1 = taps + ((phase + 1) % 2) * K;
        /* class 1 has n_out / 2 outputs, class 0 as many or one more */
        Py_ssize_t left = (n_out / 2) / W;
        while (left > 0) {
            const Py_ssize_t nblocks = (left + cap2 - 1) / cap2;
            const int nv = (int)((left + nblocks - 1) / nblocks);
            if (wide)
                sis_rs_blocks2_avx512(nv, 0, tp0, tp1, K, buf, 0, 1, 0, s0, d, jf, y,
                                      y + (n_out + 1) / 2);
            else
                sis_rs_blocks2_avx2(nv, 0, tp0, tp1, K, buf, 0, 1, 0, s0, d, jf, y,
                                    y + (n_out + 1) / 2);
            jf += nv * W;
            left -= nv;
        }
    }
    for (Py_ssize_t c = 0; c < L && c < n_out; c++) {
        const Py_ssize_t u0 = phase + c * M;      /* class c: outputs m = c + j*L */
        const Py_ssize_t s0 = u0 / L;
        const float *tp = taps + (u0 % L) * K;
        const Py_ssize_t nj = (n_out - c + L - 1) / L;
        /* stream / offset of tap 0 (M == 1: one stream, offset s0) */
        const Py_ssize_t r0 = (M > 1) ? s0 % M : 0, q0 = (M > 1) ? s0 / M : s0;
        /* where output j of the class goes: class-major for L == 2 (class 1 after the
           (n_out + 1) / 2 outputs of class 0), else natural order */
        float *const dst = (L == 2) ? y + c * ((n_out + 1) / 2) : y + c;
        const Py_ssize_t stride = (L == 2) ? 1 : L;
        Py_ssize_t j = (L == 2 && M == 1) ? jf : 0;  /* after the two-class blocks */
        /* Vector blocks of NV <= 12 accumulators, the class's vectors split evenly over
           as few blocks as possible: a 20 ms call's 160 outputs per class are one block of
           10 x 16 lanes instead of 8 + 2, whose 2-accumulator block was bound by the
           multiply-add latency. NV is a constant in each case (registers, unrolling). */
#define SIS_RS_BLOCK_CASES(FN)                                                            \
        switch (nv) {                                                                     \
            case 12: FN(12, tp, K, base, S, M, r0, q0, j, dst, stride); break;                \
            case 11: FN(11, tp, K, base, S, M, r0, q0, j, dst, stride); break;                \
            case 10: FN(10, tp, K, base, S, M, r0, q0, j, dst, stride); break;                \
            case 9: FN(9, tp, K, base, S, M, r0, q0, j, dst, stride); break;                  \
            case 8: FN(8, tp, K, base, S, M, r0, q0, j, dst, stride); break;                  \
            case 7: FN(7, tp, K, base, S, M, r0, q0, j, dst, stride); break;                  \
            case 6: FN(6, tp, K, base, S, M, r0, q0, j, dst, stride); break;                  \
            case 5: FN(5, tp, K, base, S, M, r0, q0, j, dst, stride); break;                  \
            case 4: FN(4, tp, K, base, S, M, r0, q0, j, dst, stride); break;                  \
            case 3: FN(3, tp, K, base, S, M, r0, q0, j, dst, stride); break;                  \
            case 2: FN(2, tp, K, base, S, M, r0, q0, j, dst, stride); break;                  \
            default: FN(1, tp, K, base, S, M, r0, q0, j, dst, stride); break;                 \
        }
        if (vec) {
            const Py_ssize_t W = wide ? 16 : 8;
            /* M > 1, outputs contiguous: pairs of vectors through the two-set blocks
               (the odd vector of a pair reads, W * M taps later, what the even one reads)
               in K + W * M steps instead of 2 K. Measured to pay with AVX-512 for long
               filters (16k -> 8k hq: K = 167, W * M = 32); not with AVX2+FMA (whose
               8-lane loads split cache lines half as often), nor for the short half-band
               stages of a cascade. */
            if (wide && M > 1 && stride == 1 && 4 * W * M <= K) {
                /* groups of 5 NV vectors (NV <= 4) through the five-set blocks first */
                Py_ssize_t fives = (nj - j) / (5 * W);
                while (fives > 0) {
                    const Py_ssize_t nblocks = (fives + 3) / 4;
                    const int nv = (int)((fives + nblocks - 1) / nblocks);
                    if (!sis_rs_blocks5_avx512(nv, tp, K, base, S, M, r0, q0, W * M, j, dst))
                        break;  /* a zero tap: the pairs below */
                    j += 5 * nv * W;
                    fives -= nv;
                }
            }
            if (wide && M > 1 && stride == 1 && 4 * W * M <= K) {
                Py_ssize_t pairs = (nj - j) / (2 * W);
                while (pairs > 0) {
                    const Py_ssize_t nblocks = (pairs + cap2 - 1) / cap2;
                    const int nv = (int)((pairs + nblocks - 1) / nblocks);
                    if (wide)
                        sis_rs_blocks2_avx512(nv, 1, tp, tp, K, base, S, M, r0, q0, W * M, j,
                                              dst, dst + W);
                    else
                        sis_rs_blocks2_avx2(nv, 1, tp, tp, K, base, S, M, r0, q0, W * M, j,
                                            dst, dst + W);
                    j += 2 * nv * W;
                    pairs -= nv;
                }
            }
            Py_ssize_t left = (nj - j) / W;  /* whole vectors of this class */
            while (left > 0) {
                /* 12 vectors of accumulators fit the 32 zmm / 16 ymm registers; the
                   baseline (SSE, 2 registers per 8-lane vector) takes 6. */
                const Py_ssize_t cap = (wide || use_fma) ? 12 : 6;
                const Py_ssize_t nblocks = (left + cap - 1) / cap;
                const Py_ssize_t nv = (left + nblocks - 1) / nblocks;
                if (wide) { SIS_RS_BLOCK_CASES(sis_rs_block16) }
                else { SIS_RS_BLOCK_CASES(sis_rs_block8) }
                j += nv * W;
                left -= nv;
            }
            if (wide)
                for (; j + 8 <= nj; j += 8) sis_rs_block8(1, tp, K, base, S, M, r0, q0, j, dst, stride);
        }
#undef SIS_RS_BLOCK_CASES
        /* Scalar tail, four outputs at a time for instruction-level parallelism. Each
           multiply-add is written out so that it rounds like a vector lane does: fused
           (one rounding) where the vector path is contracted to FMA, else two roundings.
           (Left as `acc += t * w`, GCC vectorises it as an in-order reduction with separate
           multiplies, which rounds differently from the FMA lanes.) */
        for (; j + 4 <= nj; j += 4) {
            const float *w0 = buf + s0 + j * M, *w1 = w0 + M, *w2 = w1 + M, *w3 = w2 + M;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (Py_ssize_t i = 0; i < K; i++) {
                const float t = tp[i];
                if (t == 0.0f) continue;  /* as in the vector blocks */
                a0 = SIS_RS_MADD(use_fma, t, w0[i], a0);
                a1 = SIS_RS_MADD(use_fma, t, w1[i], a1);
                a2 = SIS_RS_MADD(use_fma, t, w2[i], a2);
                a3 = SIS_RS_MADD(use_fma, t, w3[i], a3);
            }
            dst[j * stride] = a0;
            dst[(j + 1) * stride] = a1;
            dst[(j + 2) * stride] = a2;
            dst[(j + 3) * stride] = a3;
        }
        for (; j < nj; j++) {
            const float *w = buf + s0 + j * M;
            float acc = 0.0f;
            for (Py_ssize_t i = 0; i < K; i++)
                if (tp[i] != 0.0f) acc = SIS_RS_MADD(use_fma, tp[i], w[i], acc);
            dst[j * stride] = acc;
        }
    }
}

static void sis_rs_run_generic(const float *taps, Py_ssize_t K, const float *buf,
        Py_ssize_t nb, float *streams, Py_ssize_t phase, Py_ssize_t L, Py_ssize_t M,
        float *y, Py_ssize_t n_out) {
    sis_rs_run_body(0, 0, taps, K, buf, nb, streams, phase, L, M, y, n_out);
}

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2,fma")))
static void sis_rs_run_avx2(const float *taps, Py_ssize_t K, const float *buf,
        Py_ssize_t nb, float *streams, Py_ssize_t phase, Py_ssize_t L, Py_ssize_t M,
        float *y, Py_ssize_t n_out) {
    sis_rs_run_body(1, 0, taps, K, buf, nb, streams, phase, L, M, y, n_out);
}
/* Same arithmetic (every multiply-add fused) with 16-lane vectors. */
__attribute__((target("avx512f,avx2,fma")))
static void sis_rs_run_avx512(const float *taps, Py_ssize_t K, const float *buf,
        Py_ssize_t nb, float *streams, Py_ssize_t phase, Py_ssize_t L, Py_ssize_t M,
        float *y, Py_ssize_t n_out) {
    sis_rs_run_body(1, 1, taps, K, buf, nb, streams, phase, L, M, y, n_out);
}
/* 2: AVX-512F, 1: AVX2 + FMA, 0: baseline. */
static int sis_rs_isa_level(void) {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return 0;
    return __builtin_cpu_supports("avx512f") ? 2 : 1;
}
#else
#define sis_rs_run_avx2 sis_rs_run_generic
#define sis_rs_run_avx512 sis_rs_run_generic
static int sis_rs_isa_level(void) { return 0; }
#endif

/* float32 -> int16: round half to even, saturate, count saturated samples. A sample
   saturates exactly when its rounded value leaves the int16 range, i.e. v >= 32767.5
   (32767.5 rounds to even 32768) or v < -32768.5 (-32768.5 rounds to even -32768).
   Clamping to [-32768, 32767] first and rounding after gives the same int16 as rounding
   first and saturating after. Both paths round with the current rounding mode (the
   default, to nearest even): SSE2 cvtps2dq, or the magic constant 1.5 * 2^23, which
   rounds any |v| < 2^22 to an integer in float32 arithmetic. The SSE2 path (baseline on
   x86-64) does 8 samples per step: at ~2 ns per sample, the scalar loop was a large part
   of a 20 ms call. */
static inline Py_ssize_t sis_rs_store1_i16(float v, int16_t *dst) {
    const Py_ssize_t clip = (v >= 32767.5f) | (v < -32768.5f);
    v = v > 32767.0f ? 32767.0f : v;
    v = v < -32768.0f ? -32768.0f : v;
    *dst = (int16_t)(int32_t)((v + 12582912.0f) - 12582912.0f);
    return clip;
}
#if defined(__SSE2__)
/* 8 samples (a then b) to dst; returns how many saturate. */
static inline Py_ssize_t sis_rs_store8_i16(__m128 a, __m128 b, int16_t *dst) {
    const __m128 hi = _mm_set1_ps(32767.0f), lo = _mm_set1_ps(-32768.0f);
    const __m128 hi_clip = _mm_set1_ps(32767.5f), lo_clip = _mm_set1_ps(-32768.5f);
    Py_ssize_t clips = 0;
    int ma = _mm_movemask_ps(_mm_or_ps(_mm_cmpge_ps(a, hi_clip), _mm_cmplt_ps(a, lo_clip)));
    int mb = _mm_movemask_ps(_mm_or_ps(_mm_cmpge_ps(b, hi_clip), _mm_cmplt_ps(b, lo_clip)));
    if (ma | mb) clips = __builtin_popcount(ma) + __builtin_popcount(mb);
    a = _mm_max_ps(_mm_min_ps(a, hi), lo);
    b = _mm_max_ps(_mm_min_ps(b, hi), lo);
    _mm_storeu_si128((__m128i *)dst, _mm_packs_epi32(_mm_cvtps_epi32(a), _mm_cvtps_epi32(b)));
    return clips;
}
#endif
static Py_ssize_t sis_rs_store_i16(const float *y, int16_t *out, Py_ssize_t n) {
    Py_ssize_t clips = 0, k = 0;
#if defined(__SSE2__)
    for (; k + 8 <= n; k += 8)
        clips += sis_rs_store8_i16(_mm_loadu_ps(y + k), _mm_loadu_ps(y + k + 4), out + k);
#endif
    for (; k < n; k++) clips += sis_rs_store1_i16(y[k], out + k);
    return clips;
}
/* Class-major y of an L == 2 filter (outputs 0, 2, 4, ... then 1, 3, 5, ...) to natural
   order: int16 with the rounding, saturation and count of sis_rs_store_i16, or float32. */
static Py_ssize_t sis_rs_interleave2_i16(const float *y, int16_t *out, Py_ssize_t n) {
    const Py_ssize_t n1 = n / 2;
    const float *a = y, *b = y + (n + 1) / 2;
    Py_ssize_t clips = 0, j = 0;
#if defined(__SSE2__)
    for (; j + 4 <= n1; j += 4) {
        const __m128 va = _mm_loadu_ps(a + j), vb = _mm_loadu_ps(b + j);
        clips += sis_rs_store8_i16(_mm_unpacklo_ps(va, vb), _mm_unpackhi_ps(va, vb), out + 2 * j);
    }
#endif
    for (; j < n1; j++) {
        clips += sis_rs_store1_i16(a[j], out + 2 * j);
        clips += sis_rs_store1_i16(b[j], out + 2 * j + 1);
    }
    if (n & 1) clips += sis_rs_store1_i16(a[n1], out + 2 * n1);
    return clips;
}
static void sis_rs_interleave2_f32(const float *y, float *out, Py_ssize_t n) {
    const Py_ssize_t n1 = n / 2;
    const float *a = y, *b = y + (n + 1) / 2;
    Py_ssize_t j = 0;
#if defined(__SSE2__)
    for (; j + 4 <= n1; j += 4) {
        const __m128 va = _mm_loadu_ps(a + j), vb = _mm_loadu_ps(b + j);
        _mm_storeu_ps(out + 2 * j, _mm_unpacklo_ps(va, vb));
        _mm_storeu_ps(out + 2 * j + 4, _mm_unpackhi_ps(va, vb));
    }
#endif
    for (; j < n1; j++) {
        out[2 * j] = a[j];
        out[2 * j + 1] = b[j];
    }
    if (n & 1) out[2 * n1] = a[n1];
}
static void sis_rs_load_i16(const int16_t *x, float *buf, Py_ssize_t n) {
    Py_ssize_t k = 0;
#if defined(__SSE2__)
    for (; k + 8 <= n; k += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(x + k));
        /* sign-extend the 16-bit lanes to 32 bits: put each in the top half, shift back */
        _mm_storeu_ps(buf + k, _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpacklo_epi16(v, v), 16)));
        _mm_storeu_ps(buf + k + 4, _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpackhi_epi16(v, v), 16)));
    }
#endif
    for (; k < n; k++) buf[k] = (float)x[k];
}
/* The same four conversions with AVX2 (8 or 16 samples a step where the SSE2 versions
   above do 4 or 8): with the arithmetic at ~1 us, the int16 load and the rounding /
   interleaving store were ~10 % of a 20 ms call. Identical results: the same clamp
   (min then max, NaN -> 32767 as with SSE), cvtps2dq's round half to even, the same
   saturation count; the scalar tails are the SSE2 versions'. Chosen with ISA level >= 1. */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define SIS_RS_AVX2 __attribute__((target("avx2,fma")))
SIS_RS_AVX2 static inline Py_ssize_t sis_rs_store16_i16_avx2(__m256 a, __m256 b,
                                                             int16_t *dst) {
    const __m256 hi = _mm256_set1_ps(32767.0f), lo = _mm256_set1_ps(-32768.0f);
    const __m256 hi_clip = _mm256_set1_ps(32767.5f), lo_clip = _mm256_set1_ps(-32768.5f);
    Py_ssize_t clips = 0;
    int ma = _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(a, hi_clip, _CMP_GE_OQ),
                                             _mm256_cmp_ps(a, lo_clip, _CMP_LT_OQ)));
    int mb = _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(b, hi_clip, _CMP_GE_OQ),
                                             _mm256_cmp_ps(b, lo_clip, _CMP_LT_OQ)));
    if (ma | mb) clips = __builtin_popcount(ma) + __builtin_popcount(mb);
    a = _mm256_max_ps(_mm256_min_ps(a, hi), lo);
    b = _mm256_max_ps(_mm256_min_ps(b, hi), lo);
    /* packs works per 128-bit half: a0-3 b0-3 | a4-7 b4-7; the permute puts them in order */
    __m256i p = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
    _mm256_storeu_si256((__m256i *)dst, _mm256_permute4x64_epi64(p, 0xD8));
    return clips;
}
SIS_RS_AVX2 static Py_ssize_t sis_rs_store_i16_avx2(const float *y, int16_t *out,
                                                    Py_ssize_t n) {
    Py_ssize_t clips = 0, k = 0;
    for (; k + 16 <= n; k += 16)
        clips += sis_rs_store16_i16_avx2(_mm256_loadu_ps(y + k), _mm256_loadu_ps(y + k + 8),
                                         out + k);
    return clips + sis_rs_store_i16(y + k, out + k, n - k);
}
/* 8 outputs of each class -> 16 outputs in natural order (two vectors). */
#define SIS_RS_ZIP8(va, vb, first, second) do {                                        \
        const __m256 l_ = _mm256_unpacklo_ps(va, vb);  /* a0 b0 a1 b1 | a4 b4 a5 b5 */  \
        const __m256 h_ = _mm256_unpackhi_ps(va, vb);  /* a2 b2 a3 b3 | a6 b6 a7 b7 */  \
        first = _mm256_permute2f128_ps(l_, h_, 0x20);                                  \
        second = _mm256_permute2f128_ps(l_, h_, 0x31);                                 \
    } while (0)
SIS_RS_AVX2 static Py_ssize_t sis_rs_interleave2_i16_avx2(const float *y, int16_t *out,
                                                          Py_ssize_t n) {
    const Py_ssize_t n1 = n / 2;
    const float *a = y, *b = y + (n + 1) / 2;
    Py_ssize_t clips = 0, j = 0;
    for (; j + 8 <= n1; j += 8) {
        __m256 first, second;
        SIS_RS_ZIP8(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), first, second);
        clips += sis_rs_store16_i16_avx2(first, second, out + 2 * j);
    }
    for (; j < n1; j++) {
        clips += sis_rs_store1_i16(a[j], out + 2 * j);
        clips += sis_rs_store1_i16(b[j], out + 2 * j + 1);
    }
    if (n & 1) clips += sis_rs_store1_i16(a[n1], out + 2 * n1);
    return clips;
}
SIS_RS_AVX2 static void sis_rs_interleave2_f32_avx2(const float *y, float *out,
                                                    Py_ssize_t n) {
    const Py_ssize_t n1 = n / 2;
    const float *a = y, *b = y + (n + 1) / 2;
    Py_ssize_t j = 0;
    for (; j + 8 <= n1; j += 8) {
        __m256 first, second;
        SIS_RS_ZIP8(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), first, second);
        _mm256_storeu_ps(out + 2 * j, first);
        _mm256_storeu_ps(out + 2 * j + 8, second);
    }
    for (; j < n1; j++) {
        out[2 * j] = a[j];
        out[2 * j + 1] = b[j];
    }
    if (n & 1) out[2 * n1] = a[n1];
}
SIS_RS_AVX2 static void sis_rs_load_i16_avx2(const int16_t *x, float *buf, Py_ssize_t n) {
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8)
        _mm256_storeu_ps(buf + k, _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(
            _mm_loadu_si128((const __m128i *)(x + k)))));
    sis_rs_load_i16(x + k, buf + k, n - k);
}
#else
#define sis_rs_store_i16_avx2 sis_rs_store_i16
#define sis_rs_interleave2_i16_avx2 sis_rs_interleave2_i16
#define sis_rs_interleave2_f32_avx2 sis_rs_interleave2_f32
#define sis_rs_load_i16_avx2 sis_rs_load_i16
#endif
/* After the multiply-adds: y (float32) to out. int16: the rounding store, through the
   class interleave for L == 2; float32: the interleave for L == 2, else nothing (computed
   in place). Returns the saturated samples. */
static Py_ssize_t sis_rs_store_out(int isa, Py_ssize_t L, int out_i16, const float *y,
                                   void *out, Py_ssize_t n) {
    if (L == 2 && out_i16)
        return isa >= 1 ? sis_rs_interleave2_i16_avx2(y, (int16_t *)out, n)
                        : sis_rs_interleave2_i16(y, (int16_t *)out, n);
    if (L == 2) {
        if (isa >= 1) sis_rs_interleave2_f32_avx2(y, (float *)out, n);
        else sis_rs_interleave2_f32(y, (float *)out, n);
        return 0;
    }
    if (out_i16)
        return isa >= 1 ? sis_rs_store_i16_avx2(y, (int16_t *)out, n)
                        : sis_rs_store_i16(y, (int16_t *)out, n);
    return 0;
}

#endif /* SIS_RESAMPLE_KERNELS_H */

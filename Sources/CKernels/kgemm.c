// kgemm: see include/kgemm.h.
#include "kgemm.h"

#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MR 14
#define NR 32
#ifndef KC
#define KC 256
#endif
#ifndef MC
#define MC 126
#endif
#define SMALL_M KGEMM_SMALL_M
#ifndef NC
#define NC 1024
#endif

int kgemm_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

int kgemm_avx512_split(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    // "AuthenticAMD" in EBX, EDX, ECX.
    if (b != 0x68747541u || d != 0x69746e65u || c != 0x444d4163u) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    unsigned family = (a >> 8) & 0xF;
    if (family == 0xF) family += (a >> 20) & 0xFF;
    return family == 0x19 ? 1 : 0;  // Zen 3 (no AVX-512) and Zen 4
}

// The 14×32 register tile: C[mr×nr] (= or +=, see beta) alpha · Σ_p pa[p][0..<14] ⊗ pb[p][0..<32].
__attribute__((target("avx512f,fma")))
static void kernel(int kc, const float *pa, const float *pb, float *c, int ldc, int mr, int nr, float alpha, float beta) {
    // kc ≥ 1: the first step multiplies (no zeroed accumulators, which clang would keep in memory).
    __m512 acc[MR][2];
    {
        __m512 b0 = _mm512_loadu_ps(pb), b1 = _mm512_loadu_ps(pb + 16);
#define ROW(i) { __m512 x = _mm512_set1_ps(pa[i]); acc[i][0] = _mm512_mul_ps(x, b0); acc[i][1] = _mm512_mul_ps(x, b1); }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7) ROW(8) ROW(9) ROW(10) ROW(11) ROW(12) ROW(13)
#undef ROW
    }
    for (int p = 1; p < kc; p++) {
        __m512 b0 = _mm512_loadu_ps(pb + p * NR), b1 = _mm512_loadu_ps(pb + p * NR + 16);
        const float *ap = pa + p * MR;
#define ROW(i) { __m512 x = _mm512_set1_ps(ap[i]); acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]); acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]); }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7) ROW(8) ROW(9) ROW(10) ROW(11) ROW(12) ROW(13)
#undef ROW
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            float *ci = c + (size_t)i * ldc;
            __m512 r0 = _mm512_mul_ps(acc[i][0], va), r1 = _mm512_mul_ps(acc[i][1], va);
            if (beta != 0) {
                r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);
                r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);
            }
            _mm512_storeu_ps(ci, r0);
            _mm512_storeu_ps(ci + 16, r1);
        }
        return;
    }
    float tmp[MR * NR];
    for (int i = 0; i < MR; i++) { _mm512_storeu_ps(tmp + i * NR, acc[i][0]); _mm512_storeu_ps(tmp + i * NR + 16, acc[i][1]); }
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) ci[j] = alpha * tmp[i * NR + j] + (beta != 0 ? beta * ci[j] : 0.0f);
    }
}

// A 16×16 transpose in registers: r[i] holds row i on entry, column i on return.
__attribute__((target("avx512f")))
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

// The lanes below `count` (0…16).
static inline __mmask16 lanes(int count) { return (__mmask16)((1u << count) - 1u); }

// rows[i] (i < nrows; the other rows read as zeros) at columns p0… p0+cnt−1 (the others read as
// zeros), transposed: r[q] holds column p0+q of the 16 rows.
__attribute__((target("avx512f")))
static inline void load_transposed(const float *const rows[16], int nrows, int p0, int cnt, __m512 r[16]) {
    __mmask16 m = lanes(cnt);
    for (int i = 0; i < 16; i++) r[i] = i < nrows ? _mm512_maskz_loadu_ps(m, rows[i] + p0) : _mm512_setzero_ps();
    transpose16(r);
}

// op(A)[r0.., p0..] as 14-row panels: panel q holds pa[q·14·kc + p·14 + i] = op(A)[r0 + 14q + i][p0 + p].
__attribute__((target("avx512f")))
static void pack_a(int transA, int mc, int kc, const float *a, int lda, int r0, int p0, float *pa) {
    const __mmask16 panel = lanes(MR);
    for (int r = 0; r < mc; r += MR) {
        int mr = mc - r < MR ? mc - r : MR;
        if (transA) {  // A is k×m: op(A)[i][p] = A[p][i], a row of A holds the panel's 14 values.
            __mmask16 m = lanes(mr);
            for (int p = 0; p < kc; p++)
                _mm512_mask_storeu_ps(pa + p * MR, panel, _mm512_maskz_loadu_ps(m, a + (size_t)(p0 + p) * lda + r0 + r));
        } else {  // 16 columns of the panel's rows at a time, transposed in registers.
            const float *rows[16];
            for (int i = 0; i < 16; i++) rows[i] = i < mr ? a + (size_t)(r0 + r + i) * lda + p0 : a;
            for (int p = 0; p < kc; p += 16) {
                int cnt = kc - p < 16 ? kc - p : 16;
                __m512 v[16];
                load_transposed(rows, mr, p, cnt, v);
                for (int q = 0; q < cnt; q++) _mm512_mask_storeu_ps(pa + (p + q) * MR, panel, v[q]);
            }
        }
        pa += (size_t)MR * kc;
    }
}

// op(B)[p0.., c0..] as 32-column panels: panel q holds pb[q·32·kc + p·32 + j] = op(B)[p0 + p][c0 + 32q + j].
__attribute__((target("avx512f")))
static void pack_b(int transB, int kc, int nc, const float *b, int ldb, int p0, int c0, float *pb) {
    int panels = (nc + NR - 1) / NR, full = nc / NR;
    if (!transB) {  // B is k×n: each row of B gives a row of every panel (read along the row).
        int nr = nc - full * NR;
        __mmask16 m0 = lanes(nr < 16 ? nr : 16), m1 = lanes(nr > 16 ? nr - 16 : 0);
        for (int p = 0; p < kc; p++) {
            const float *src = b + (size_t)(p0 + p) * ldb + c0;
            float *dst = pb + p * NR;
            for (int q = 0; q < full; q++, src += NR, dst += (size_t)NR * kc) {
                _mm512_storeu_ps(dst, _mm512_loadu_ps(src));
                _mm512_storeu_ps(dst + 16, _mm512_loadu_ps(src + 16));
            }
            if (full < panels) {
                _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(m0, src));
                _mm512_storeu_ps(dst + 16, _mm512_maskz_loadu_ps(m1, src + 16));
            }
        }
        return;
    }
    // B is n×k: a row of B gives one column of a panel; 16×16 blocks transposed in registers.
    for (int q = 0; q < panels; q++) {
        int nr = nc - q * NR < NR ? nc - q * NR : NR;
        float *dst = pb + (size_t)q * NR * kc;
        for (int half = 0; half < 2; half++) {
            int rows_here = nr - 16 * half;
            if (rows_here > 16) rows_here = 16;
            if (rows_here <= 0) {
                for (int p = 0; p < kc; p++) _mm512_storeu_ps(dst + p * NR + 16 * half, _mm512_setzero_ps());
                continue;
            }
            const float *rows[16];
            for (int i = 0; i < 16; i++) rows[i] = i < rows_here ? b + (size_t)(c0 + q * NR + 16 * half + i) * ldb + p0 : b;
            for (int p = 0; p < kc; p += 16) {
                int cnt = kc - p < 16 ? kc - p : 16;
                __m512 v[16];
                load_transposed(rows, rows_here, p, cnt, v);
                for (int j = 0; j < cnt; j++) _mm512_storeu_ps(dst + (p + j) * NR + 16 * half, v[j]);
            }
        }
    }
}

// See kgemm.h. A 14-row tile would waste most of its work on a product this thin (a mask
// predictor's 2 output channels), and packing B would cost more than the product. Each row of B is
// read once for all the rows of C; 64 columns at a time.
__attribute__((target("avx512f,fma")))
void kgemm_small_m(int m0, int m1, int n0, int n1, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc) {
    int rows = m1 - m0;
    for (int j = n0; j < n1; j += 64) {
        int width = n1 - j < 64 ? n1 - j : 64;
        __mmask16 mask[4];
        for (int v = 0; v < 4; v++) {
            int left = width - 16 * v;
            mask[v] = lanes(left <= 0 ? 0 : left > 16 ? 16 : left);
        }
        __m512 acc[SMALL_M][4];
        for (int i = 0; i < SMALL_M; i++) for (int v = 0; v < 4; v++) acc[i][v] = _mm512_setzero_ps();
        for (int p = 0; p < k; p++) {
            const float *bp = b + (size_t)p * ldb + j;
            __m512 bv[4];
            for (int v = 0; v < 4; v++) bv[v] = _mm512_maskz_loadu_ps(mask[v], bp + 16 * v);
            for (int i = 0; i < rows; i++) {
                __m512 x = _mm512_set1_ps(a[(size_t)(m0 + i) * lda + p]);
                for (int v = 0; v < 4; v++) acc[i][v] = _mm512_fmadd_ps(x, bv[v], acc[i][v]);
            }
        }
        __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        for (int i = 0; i < rows; i++) {
            float *ci = c + (size_t)(m0 + i) * ldc + j;
            for (int v = 0; v < 4; v++) {
                if (!mask[v]) continue;
                __m512 r = _mm512_mul_ps(acc[i][v], va);
                if (beta != 0) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v), r);
                _mm512_mask_storeu_ps(ci + 16 * v, mask[v], r);
            }
        }
    }
}

// The patch matrix of a convolution as B, packed straight from the image: op(B)[p][j] is input
// channel ci, tap (ky, kx) for p = (ci·kH + ky)·kW + kx, at output pixel j = oy·ow + ox, i.e.
// x[ci][oy·sh − ph + ky·dh][ox·sw − pw + kx·dw], zero in the padding. The same values im2col would
// write, so the GEMM's result is the same bit for bit.
__attribute__((target("avx512f")))
static void pack_b_conv(const kgemm_conv *cv, int kc, int nc, int p0, int c0, float *pb) {
    int panels = (nc + NR - 1) / NR;
    int taps = cv->kh * cv->kw, ow = cv->ow;
    // Even lanes of a 32-lane pair: picks x[ix0 + 2t] out of 64 consecutive values.
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int p = 0; p < kc; p++) {
        int pp = p0 + p, ci = pp / taps, t = pp % taps, ky = t / cv->kw, kx = t % cv->kw;
        const float *plane = cv->x + (size_t)ci * cv->h * cv->w;
        for (int q = 0; q < panels; q++) {
            float *dst = pb + (size_t)q * NR * kc + (size_t)p * NR;
            int j0 = c0 + q * NR, nr = nc - q * NR < NR ? nc - q * NR : NR;
            int oy = j0 / ow, ox0 = j0 % ow;
            if (nr == NR && ox0 + NR <= ow && (cv->sw == 1 || cv->sw == 2)) {  // one output row
                int iy = oy * cv->sh - cv->ph + ky * cv->dh;
                if (iy < 0 || iy >= cv->h) {
                    _mm512_storeu_ps(dst, _mm512_setzero_ps());
                    _mm512_storeu_ps(dst + 16, _mm512_setzero_ps());
                    continue;
                }
                int ix0 = ox0 * cv->sw - cv->pw + kx * cv->dw;
                const float *row = plane + (size_t)iy * cv->w;
                // Lanes s (0…16·chunks) of the source run ix0 + s that fall inside the row.
                int span = NR * cv->sw;
                __m512 v[4];
                for (int u = 0; u < span / 16; u++) {
                    int lo = -(ix0 + 16 * u), hi = cv->w - (ix0 + 16 * u);  // valid lanes: lo ≤ s < hi
                    if (lo < 0) lo = 0;
                    if (hi > 16) hi = 16;
                    __mmask16 m = hi > lo ? (__mmask16)(lanes(hi) & ~lanes(lo)) : 0;
                    v[u] = m ? _mm512_maskz_loadu_ps(m, row + ix0 + 16 * u) : _mm512_setzero_ps();
                }
                if (cv->sw == 1) {
                    _mm512_storeu_ps(dst, v[0]);
                    _mm512_storeu_ps(dst + 16, v[1]);
                } else {
                    _mm512_storeu_ps(dst, _mm512_permutex2var_ps(v[0], even, v[1]));
                    _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(v[2], even, v[3]));
                }
                continue;
            }
            for (int jj = 0; jj < NR; jj++) {  // across output rows, other strides, the last panel
                float val = 0;
                if (jj < nr) {
                    int j = j0 + jj, y = j / ow, xo = j % ow;
                    int iy = y * cv->sh - cv->ph + ky * cv->dh, ix = xo * cv->sw - cv->pw + kx * cv->dw;
                    if (iy >= 0 && iy < cv->h && ix >= 0 && ix < cv->w) val = plane[(size_t)iy * cv->w + ix];
                }
                dst[jj] = val;
            }
        }
    }
}

#define KGEMM_BLOCK kgemm_block
#define KGEMM_CONV_BLOCK kgemm_conv_block
#define KGEMM_CONVT_BLOCK kgemm_convt_block
#define KGEMM_PACKED_A_FLOATS kgemm_packed_a_floats
#define KGEMM_PACK_A kgemm_pack_a
#define KGEMM_PACK_AT kgemm_pack_at
#define KGEMM_BLOCK_PACKED_A kgemm_block_packed_a
#include "kgemm_driver.h"

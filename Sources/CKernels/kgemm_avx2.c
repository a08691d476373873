// kgemm's AVX2 + FMA path (processors without AVX-512: AMD Zen 1–3, Intel before Skylake-SP): see
// include/kgemm.h. The same Goto-style blocking as kgemm.c with a 6×16 register tile (twelve ymm
// accumulators, two B vectors, one broadcast: all sixteen registers), blocked for a 512 KB L2.
// Each element of C is summed as in kgemm.c (the first product, then one fused multiply-add per
// step of k, KC steps at a time), whatever tile or thread it falls to.
#include "kgemm.h"
#include "avx2_tools.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MR 6
#define NR 16
#define KC 256
#ifndef MC
#define MC 120
#endif
#ifndef NC
#define NC 1024
#endif

#define AVX2 __attribute__((target("avx2,fma")))

int kgemm_avx2_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
}

AVX2 static void kernel(int kc, const float *pa, const float *pb, float *c, int ldc, int mr, int nr, float alpha, float beta) {
    __m256 acc[MR][2];
    {
        __m256 b0 = _mm256_loadu_ps(pb), b1 = _mm256_loadu_ps(pb + 8);
#define ROW(i) { __m256 x = _mm256_broadcast_ss(pa + i); acc[i][0] = _mm256_mul_ps(x, b0); acc[i][1] = _mm256_mul_ps(x, b1); }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    for (int p = 1; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(pb + p * NR), b1 = _mm256_loadu_ps(pb + p * NR + 8);
        const float *ap = pa + p * MR;
#define ROW(i) { __m256 x = _mm256_broadcast_ss(ap + i); acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]); acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]); }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            float *ci = c + (size_t)i * ldc;
            __m256 r0 = _mm256_mul_ps(acc[i][0], va), r1 = _mm256_mul_ps(acc[i][1], va);
            if (beta != 0) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
            }
            _mm256_storeu_ps(ci, r0);
            _mm256_storeu_ps(ci + 8, r1);
        }
        return;
    }
    // A partial tile: through a buffer, each value as the full tile computes it (alpha·acc, then
    // beta·C added by one fused multiply-add).
    float tmp[MR * NR];
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(tmp + i * NR, _mm256_mul_ps(acc[i][0], va));
        _mm256_storeu_ps(tmp + i * NR + 8, _mm256_mul_ps(acc[i][1], va));
    }
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) ci[j] = beta != 0 ? __builtin_fmaf(beta, ci[j], tmp[i * NR + j]) : tmp[i * NR + j];
    }
}

// op(A)[r0.., p0..] as 6-row panels: panel q holds pa[q·6·kc + p·6 + i] = op(A)[r0 + 6q + i][p0 + p].
AVX2 static void pack_a(int transA, int mc, int kc, const float *a, int lda, int r0, int p0, float *pa) {
    for (int r = 0; r < mc; r += MR) {
        int mr = mc - r < MR ? mc - r : MR;
        if (transA) {  // A is k×m: a row of A holds the panel's six values.
            const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(mr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            for (int p = 0; p < kc; p++) {
                // Eight stored, the last two overwritten by the next row's (room beyond the block).
                _mm256_storeu_ps(pa + p * MR, _mm256_maskload_ps(a + (size_t)(p0 + p) * lda + r0 + r, m));
            }
        } else if (mr == MR) {  // eight columns of the six rows at a time, transposed in registers
            const float *rows[MR];
            for (int i = 0; i < MR; i++) rows[i] = a + (size_t)(r0 + r + i) * lda + p0;
            int p = 0;
            for (; p + 8 <= kc; p += 8) {
                __m256 v[8];
                for (int i = 0; i < MR; i++) v[i] = _mm256_loadu_ps(rows[i] + p);
                v[6] = v[7] = _mm256_setzero_ps();
                transpose8(v);
                // Column q's six values, then two that the next column's store overwrites (the
                // buffer has a panel's room beyond the block).
                for (int q = 0; q < 8; q++) _mm256_storeu_ps(pa + (size_t)(p + q) * MR, v[q]);
            }
            for (; p < kc; p++)
                for (int i = 0; i < MR; i++) pa[p * MR + i] = rows[i][p];
        } else {
            for (int p = 0; p < kc; p++)
                for (int i = 0; i < MR; i++) pa[p * MR + i] = i < mr ? a[(size_t)(r0 + r + i) * lda + p0 + p] : 0.0f;
        }
        pa += (size_t)MR * kc;
    }
}

// op(B)[p0.., c0..] as 16-column panels: panel q holds pb[q·16·kc + p·16 + j] = op(B)[p0 + p][c0 + 16q + j].
AVX2 static void pack_b(int transB, int kc, int nc, const float *b, int ldb, int p0, int c0, float *pb) {
    int panels = (nc + NR - 1) / NR, full = nc / NR;
    if (!transB) {
        int nr = nc - full * NR;
        for (int p = 0; p < kc; p++) {
            const float *src = b + (size_t)(p0 + p) * ldb + c0;
            float *dst = pb + p * NR;
            for (int q = 0; q < full; q++, src += NR, dst += (size_t)NR * kc) {
                _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
                _mm256_storeu_ps(dst + 8, _mm256_loadu_ps(src + 8));
            }
            if (full < panels)
                for (int j = 0; j < NR; j++) dst[j] = j < nr ? src[j] : 0.0f;
        }
        return;
    }
    // B is n×k: each row of B is one column of a panel; 8×8 blocks transposed in registers.
    for (int q = 0; q < panels; q++) {
        int nr = nc - q * NR < NR ? nc - q * NR : NR;
        float *dst = pb + (size_t)q * NR * kc;
        for (int half = 0; half < 2; half++) {
            int rows_here = nr - 8 * half;
            if (rows_here > 8) rows_here = 8;
            float *d = dst + 8 * half;
            if (rows_here <= 0) {
                for (int p = 0; p < kc; p++) _mm256_storeu_ps(d + p * NR, _mm256_setzero_ps());
                continue;
            }
            const float *rows[8];
            for (int i = 0; i < 8; i++) rows[i] = i < rows_here ? b + (size_t)(c0 + q * NR + 8 * half + i) * ldb + p0 : NULL;
            int p = 0;
            for (; p + 8 <= kc; p += 8) {
                __m256 v[8];
                for (int i = 0; i < 8; i++) v[i] = rows[i] ? _mm256_loadu_ps(rows[i] + p) : _mm256_setzero_ps();
                transpose8(v);
                for (int j = 0; j < 8; j++) _mm256_storeu_ps(d + (p + j) * NR, v[j]);
            }
            for (; p < kc; p++)
                for (int i = 0; i < 8; i++) d[p * NR + i] = rows[i] ? rows[i][p] : 0.0f;
        }
    }
}

// The patch matrix of a convolution as B, packed straight from the image (as kgemm.c's pack_b_conv:
// the values im2col would write).
AVX2 static void pack_b_conv(const kgemm_conv *cv, int kc, int nc, int p0, int c0, float *pb) {
    int panels = (nc + NR - 1) / NR;
    int taps = cv->kh * cv->kw, ow = cv->ow;
    for (int p = 0; p < kc; p++) {
        int pp = p0 + p, ci = pp / taps, t = pp % taps, ky = t / cv->kw, kx = t % cv->kw;
        const float *plane = cv->x + (size_t)ci * cv->h * cv->w;
        for (int q = 0; q < panels; q++) {
            float *dst = pb + (size_t)q * NR * kc + (size_t)p * NR;
            int j0 = c0 + q * NR, nr = nc - q * NR < NR ? nc - q * NR : NR;
            int oy = j0 / ow, ox0 = j0 % ow;
            if (nr == NR && ox0 + NR <= ow) {  // one output row
                int iy = oy * cv->sh - cv->ph + ky * cv->dh;
                if (iy < 0 || iy >= cv->h) {
                    _mm256_storeu_ps(dst, _mm256_setzero_ps());
                    _mm256_storeu_ps(dst + 8, _mm256_setzero_ps());
                    continue;
                }
                int ix0 = ox0 * cv->sw - cv->pw + kx * cv->dw;
                const float *row = plane + (size_t)iy * cv->w;
                if (cv->sw == 1 && ix0 >= 0 && ix0 + NR <= cv->w) {
                    _mm256_storeu_ps(dst, _mm256_loadu_ps(row + ix0));
                    _mm256_storeu_ps(dst + 8, _mm256_loadu_ps(row + ix0 + 8));
                    continue;
                }
                if (cv->sw == 2 && ix0 >= 0 && ix0 + 2 * NR <= cv->w) {  // the even ones of 32 columns
                    for (int half = 0; half < 2; half++) {
                        const float *src = row + ix0 + 16 * half;
                        __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(src), _mm256_loadu_ps(src + 8), 0x88);
                        _mm256_storeu_ps(dst + 8 * half, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
                    }
                    continue;
                }
                for (int jj = 0; jj < NR; jj++) {
                    int ix = ix0 + jj * cv->sw;
                    dst[jj] = ix >= 0 && ix < cv->w ? row[ix] : 0.0f;
                }
                continue;
            }
            for (int jj = 0; jj < NR; jj++) {  // across output rows, the last panel
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

#define KGEMM_BLOCK kgemm_avx2_block
#define KGEMM_CONV_BLOCK kgemm_avx2_conv_block
#define KGEMM_CONVT_BLOCK kgemm_avx2_convt_block
#define KGEMM_PACKED_A_FLOATS kgemm_avx2_packed_a_floats
#define KGEMM_PACK_A kgemm_avx2_pack_a
#define KGEMM_PACK_AT kgemm_avx2_pack_at
#define KGEMM_BLOCK_PACKED_A kgemm_avx2_block_packed_a
#include "kgemm_driver.h"

// As kgemm.c's kgemm_small_m: 24 columns at a time (three vectors, four rows: twelve accumulators),
// the columns left over one at a time with the same fused operations in the same order.
AVX2 void kgemm_avx2_small_m(int m0, int m1, int n0, int n1, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                             float beta, float *c, int ldc) {
    int rows = m1 - m0;
    int j = n0;
    for (; j + 24 <= n1; j += 24) {
        __m256 acc[KGEMM_SMALL_M][3];
        for (int i = 0; i < KGEMM_SMALL_M; i++) for (int v = 0; v < 3; v++) acc[i][v] = _mm256_setzero_ps();
        for (int p = 0; p < k; p++) {
            const float *bp = b + (size_t)p * ldb + j;
            __m256 bv[3] = {_mm256_loadu_ps(bp), _mm256_loadu_ps(bp + 8), _mm256_loadu_ps(bp + 16)};
            for (int i = 0; i < rows; i++) {
                __m256 x = _mm256_broadcast_ss(a + (size_t)(m0 + i) * lda + p);
                for (int v = 0; v < 3; v++) acc[i][v] = _mm256_fmadd_ps(x, bv[v], acc[i][v]);
            }
        }
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        for (int i = 0; i < rows; i++) {
            float *ci = c + (size_t)(m0 + i) * ldc + j;
            for (int v = 0; v < 3; v++) {
                __m256 r = _mm256_mul_ps(acc[i][v], va);
                if (beta != 0) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8 * v), r);
                _mm256_storeu_ps(ci + 8 * v, r);
            }
        }
    }
    for (; j < n1; j++) {
        for (int i = 0; i < rows; i++) {
            float s = 0;
            for (int p = 0; p < k; p++) s = __builtin_fmaf(a[(size_t)(m0 + i) * lda + p], b[(size_t)p * ldb + j], s);
            float r = alpha * s;
            float *cij = c + (size_t)(m0 + i) * ldc + j;
            *cij = beta != 0 ? __builtin_fmaf(beta, *cij, r) : r;
        }
    }
}

// See kgemm.h: kgemm_avx2_small_m's loop over a biased, ReLU'd B read as it goes.
AVX2 void kgemm_avx2_relu_bias_rows(int m, int k, int n0, int n1, const float *a, int lda, const float *b, int ldb,
                                    const float *bias, float *c, int ldc) {
    const __m256 zero = _mm256_setzero_ps();
    int j = n0;
    for (; j + 24 <= n1; j += 24) {
        __m256 acc[KGEMM_SMALL_M][3];
        for (int i = 0; i < KGEMM_SMALL_M; i++) for (int v = 0; v < 3; v++) acc[i][v] = _mm256_setzero_ps();
        for (int p = 0; p < k; p++) {
            const float *bp = b + (size_t)p * ldb + j;
            __m256 bv[3] = {_mm256_loadu_ps(bp), _mm256_loadu_ps(bp + 8), _mm256_loadu_ps(bp + 16)};
            if (bias) {
                const __m256 s = _mm256_set1_ps(bias[p]);
                for (int v = 0; v < 3; v++) bv[v] = _mm256_add_ps(bv[v], s);
            }
            for (int v = 0; v < 3; v++) bv[v] = _mm256_max_ps(bv[v], zero);  // 0 for NaN and −0, as v > 0 ? v : 0
            for (int i = 0; i < m; i++) {
                __m256 x = _mm256_broadcast_ss(a + (size_t)i * lda + p);
                for (int v = 0; v < 3; v++) acc[i][v] = _mm256_fmadd_ps(x, bv[v], acc[i][v]);
            }
        }
        for (int i = 0; i < m; i++)
            for (int v = 0; v < 3; v++) _mm256_storeu_ps(c + (size_t)i * ldc + j + 8 * v, acc[i][v]);
    }
    for (; j < n1; j++) {
        for (int i = 0; i < m; i++) {
            float s = 0;
            for (int p = 0; p < k; p++) {
                float v = b[(size_t)p * ldb + j];
                if (bias) v = v + bias[p];
                v = v > 0 ? v : 0.0f;
                s = __builtin_fmaf(a[(size_t)i * lda + p], v, s);
            }
            c[(size_t)i * ldc + j] = s;
        }
    }
}

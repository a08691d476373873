// Winograd F(2×2, 3×3) input and output transforms in AVX-512: see include/winograd.h.
// Sixteen tiles of one tile row at a time, one per lane; the arithmetic is that of the scalar
// transforms in Sources/Tensor/Winograd.swift, in the same order.
#include "winograd.h"
#include "avx2_tools.h"

#include <immintrin.h>

static inline __mmask16 lanes16(int count) { return count <= 0 ? 0 : count >= 16 ? 0xFFFF : (__mmask16)((1u << count) - 1u); }

// Lanes of a 16-float load at row[col0 …] that fall inside 0 ≤ col < w.
static inline __mmask16 inside(int col0, int w) {
    int lo = -col0, hi = w - col0;
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    return hi > lo ? (__mmask16)(lanes16(hi) & ~lanes16(lo)) : 0;
}

__attribute__((target("avx512f")))
void winograd_input_tiles(const float *x, int h, int w, float *v, long vstride) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    int th = (h + 1) / 2, tw = (w + 1) / 2;
    for (int i = 0; i < th; i++) {
        for (int j0 = 0; j0 < tw; j0 += 16) {
            int count = tw - j0 < 16 ? tw - j0 : 16;
            // d[r][c]: lane j holds input row 2i−1+r, column 2(j0+j)−1+c (zero outside the image).
            __m512 d[4][4];
            for (int r = 0; r < 4; r++) {
                int row = 2 * i - 1 + r;
                if (row < 0 || row >= h) {
                    for (int c = 0; c < 4; c++) d[r][c] = _mm512_setzero_ps();
                    continue;
                }
                const float *src = x + (long)row * w;
                int a0 = 2 * j0 - 1, b0 = 2 * j0 + 1;  // columns 2j−1, 2j (A) and 2j+1, 2j+2 (B), interleaved
                __m512 a_lo = _mm512_maskz_loadu_ps(inside(a0, w), src + a0), a_hi = _mm512_maskz_loadu_ps(inside(a0 + 16, w), src + a0 + 16);
                __m512 b_lo = _mm512_maskz_loadu_ps(inside(b0, w), src + b0), b_hi = _mm512_maskz_loadu_ps(inside(b0 + 16, w), src + b0 + 16);
                d[r][0] = _mm512_permutex2var_ps(a_lo, even, a_hi);
                d[r][1] = _mm512_permutex2var_ps(a_lo, odd, a_hi);
                d[r][2] = _mm512_permutex2var_ps(b_lo, even, b_hi);
                d[r][3] = _mm512_permutex2var_ps(b_lo, odd, b_hi);
            }
            // Bᵀd (rows d0−d2, d1+d2, d2−d1, d1−d3), then the same on the columns.
            __m512 t[4][4];
            for (int c = 0; c < 4; c++) {
                t[0][c] = _mm512_sub_ps(d[0][c], d[2][c]);
                t[1][c] = _mm512_add_ps(d[1][c], d[2][c]);
                t[2][c] = _mm512_sub_ps(d[2][c], d[1][c]);
                t[3][c] = _mm512_sub_ps(d[1][c], d[3][c]);
            }
            __mmask16 m = lanes16(count);
            float *dst = v + (long)i * tw + j0;
            for (int r = 0; r < 4; r++) {
                _mm512_mask_storeu_ps(dst + (4 * r) * vstride, m, _mm512_sub_ps(t[r][0], t[r][2]));
                _mm512_mask_storeu_ps(dst + (4 * r + 1) * vstride, m, _mm512_add_ps(t[r][1], t[r][2]));
                _mm512_mask_storeu_ps(dst + (4 * r + 2) * vstride, m, _mm512_sub_ps(t[r][2], t[r][1]));
                _mm512_mask_storeu_ps(dst + (4 * r + 3) * vstride, m, _mm512_sub_ps(t[r][1], t[r][3]));
            }
        }
    }
}

__attribute__((target("avx512f")))
void winograd_output_tiles(const float *mat, long mstride, int h, int w, float bias, int accumulate, float *y) {
    // Interleaving y·0 and y·1 (lanes j) into output columns 2j, 2j+1.
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    int th = (h + 1) / 2, tw = (w + 1) / 2;
    __m512 b = _mm512_set1_ps(bias);
    for (int i = 0; i < th; i++) {
        for (int j0 = 0; j0 < tw; j0 += 16) {
            int count = tw - j0 < 16 ? tw - j0 : 16;
            __mmask16 m = lanes16(count);
            const float *src = mat + (long)i * tw + j0;
            __m512 a0[4], a1[4];
            for (int c = 0; c < 4; c++) {
                __m512 m0 = _mm512_maskz_loadu_ps(m, src + c * mstride), m1 = _mm512_maskz_loadu_ps(m, src + (4 + c) * mstride);
                __m512 m2 = _mm512_maskz_loadu_ps(m, src + (8 + c) * mstride), m3 = _mm512_maskz_loadu_ps(m, src + (12 + c) * mstride);
                a0[c] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);   // rows m0+m1+m2
                a1[c] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);   // rows m1−m2−m3
            }
            __m512 y00 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0[0], a0[1]), a0[2]), b);
            __m512 y01 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(a0[1], a0[2]), a0[3]), b);
            __m512 y10 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a1[0], a1[1]), a1[2]), b);
            __m512 y11 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(a1[1], a1[2]), a1[3]), b);
            int col0 = 2 * j0;
            __mmask16 s0 = inside(col0, w), s1 = inside(col0 + 16, w);
            for (int r = 0; r < 2 && 2 * i + r < h; r++) {
                __m512 e = r ? y10 : y00, o = r ? y11 : y01;
                __m512 v0 = _mm512_permutex2var_ps(e, lo, o), v1 = _mm512_permutex2var_ps(e, hi, o);
                float *dst = y + (long)(2 * i + r) * w + col0;
                if (accumulate) {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(s0, dst), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(s1, dst + 16), v1);
                }
                _mm512_mask_storeu_ps(dst, s0, v0);
                _mm512_mask_storeu_ps(dst + 16, s1, v1);
            }
        }
    }
}

__attribute__((target("avx512f")))
void winograd_weight_tiles(const float *weight, int K, int C, int flipped, int k0, int k1, float *u) {
    long plane = (long)K * C;
    const __m512 half = _mm512_set1_ps(0.5f);
    for (int k = k0; k < k1; k++) {
        for (int c0 = 0; c0 < C; c0 += 16) {
            int count = C - c0 < 16 ? C - c0 : 16;
            __mmask16 m = lanes16(count);
            // g[t]: tap t of the 16 kernels (c0 + lane, k), turned 180° when flipped.
            __m512i idx;
            const float *base;
            if (flipped) {  // weight [C, K, 3, 3]: kernel (c, k) at (c·K + k)·9, tap t read at 8 − t
                idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(K * 9));
                base = weight + ((long)c0 * K + k) * 9;
            } else {        // weight [K, C, 3, 3]: kernel (k, c) at (k·C + c)·9
                idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(9));
                base = weight + ((long)k * C + c0) * 9;
            }
            __m512 g[9];
            for (int t = 0; t < 9; t++)
                g[t] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base + (flipped ? 8 - t : t), 4);
            // Gg (4×3): rows g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2 (g0, g1, g2 the kernel's rows).
            __m512 rows[4][3];
            for (int j = 0; j < 3; j++) {
                __m512 r0 = g[j], r1 = g[3 + j], r2 = g[6 + j];
                rows[0][j] = r0;
                rows[1][j] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(r0, r1), r2));
                rows[2][j] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(r0, r1), r2));
                rows[3][j] = r2;
            }
            // Then (Gg)Gᵀ: the same on each row's three values.
            float *dst = u + (long)k * C + c0;
            for (int r = 0; r < 4; r++) {
                __m512 a = rows[r][0], b = rows[r][1], d = rows[r][2];
                _mm512_mask_storeu_ps(dst + (4 * r) * plane, m, a);
                _mm512_mask_storeu_ps(dst + (4 * r + 1) * plane, m, _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(a, b), d)));
                _mm512_mask_storeu_ps(dst + (4 * r + 2) * plane, m, _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(a, b), d)));
                _mm512_mask_storeu_ps(dst + (4 * r + 3) * plane, m, d);
            }
        }
    }
}

// The same transforms in AVX2 (processors without AVX-512): eight tiles of a tile row at a time,
// the same operations in the same order (no fused ones), so the same bits as the AVX-512 and the
// scalar transforms. Loads and stores at the plane's edges are masked (_mm256_maskload_ps reads
// nothing outside its lanes).

#define AVX2 __attribute__((target("avx2")))

// Lanes l of an 8-float access at row[col0 + l] with 0 ≤ col0 + l < w (all bits set where inside).
static inline AVX2 __m256i inside8(int col0, int w) {
    __m256i col = _mm256_add_epi32(_mm256_set1_epi32(col0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i ge0 = _mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1));
    __m256i ltw = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), col);
    return _mm256_and_si256(ge0, ltw);
}

static inline AVX2 __m256i lanes8(int count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The first `count` lanes of v to p: a plain store when all eight go (masked stores are slow on
// some processors: microcoded on AMD Zen).
static inline AVX2 void store_lanes8(float *p, int count, __m256i m, __m256 v) {
    if (count == 8) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, m, v);
}

// Eight consecutive floats at row[col0 …], zero outside 0 ≤ col < w.
static inline AVX2 __m256 load_inside8(const float *row, int col0, int w) {
    if (col0 >= 0 && col0 + 8 <= w) return _mm256_loadu_ps(row + col0);
    if (col0 >= w || col0 + 8 <= 0) return _mm256_setzero_ps();
    return _mm256_maskload_ps(row + col0, inside8(col0, w));
}

// The even and the odd elements of the sixteen floats lo, hi, in order.
static inline AVX2 void deinterleave8(__m256 lo, __m256 hi, __m256 *even, __m256 *odd) {
    // shuffle_ps picks within 128-bit halves: [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]; then the 64-bit
    // quarters reordered 0, 2, 1, 3.
    __m256 e = _mm256_shuffle_ps(lo, hi, 0x88), o = _mm256_shuffle_ps(lo, hi, 0xDD);
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
}

AVX2 void winograd_input_tiles_avx2(const float *x, int h, int w, float *v, long vstride) {
    int th = (h + 1) / 2, tw = (w + 1) / 2;
    for (int i = 0; i < th; i++) {
        for (int j0 = 0; j0 < tw; j0 += 8) {
            int count = tw - j0 < 8 ? tw - j0 : 8;
            __m256 d[4][4];
            for (int r = 0; r < 4; r++) {
                int row = 2 * i - 1 + r;
                if (row < 0 || row >= h) {
                    for (int c = 0; c < 4; c++) d[r][c] = _mm256_setzero_ps();
                    continue;
                }
                const float *src = x + (long)row * w;
                int a0 = 2 * j0 - 1, b0 = 2 * j0 + 1;
                deinterleave8(load_inside8(src, a0, w), load_inside8(src, a0 + 8, w), &d[r][0], &d[r][1]);
                deinterleave8(load_inside8(src, b0, w), load_inside8(src, b0 + 8, w), &d[r][2], &d[r][3]);
            }
            __m256 t[4][4];
            for (int c = 0; c < 4; c++) {
                t[0][c] = _mm256_sub_ps(d[0][c], d[2][c]);
                t[1][c] = _mm256_add_ps(d[1][c], d[2][c]);
                t[2][c] = _mm256_sub_ps(d[2][c], d[1][c]);
                t[3][c] = _mm256_sub_ps(d[1][c], d[3][c]);
            }
            float *dst = v + (long)i * tw + j0;
            __m256 out[4][4];
            for (int r = 0; r < 4; r++) {
                out[r][0] = _mm256_sub_ps(t[r][0], t[r][2]);
                out[r][1] = _mm256_add_ps(t[r][1], t[r][2]);
                out[r][2] = _mm256_sub_ps(t[r][2], t[r][1]);
                out[r][3] = _mm256_sub_ps(t[r][1], t[r][3]);
            }
            if (count == 8) {
                for (int r = 0; r < 4; r++)
                    for (int c = 0; c < 4; c++) _mm256_storeu_ps(dst + (4 * r + c) * vstride, out[r][c]);
            } else {
                __m256i m = lanes8(count);
                for (int r = 0; r < 4; r++)
                    for (int c = 0; c < 4; c++) _mm256_maskstore_ps(dst + (4 * r + c) * vstride, m, out[r][c]);
            }
        }
    }
}

AVX2 void winograd_output_tiles_avx2(const float *mat, long mstride, int h, int w, float bias, int accumulate, float *y) {
    int th = (h + 1) / 2, tw = (w + 1) / 2;
    __m256 b = _mm256_set1_ps(bias);
    for (int i = 0; i < th; i++) {
        for (int j0 = 0; j0 < tw; j0 += 8) {
            int count = tw - j0 < 8 ? tw - j0 : 8;
            const float *src = mat + (long)i * tw + j0;
            __m256i m = lanes8(count);
            __m256 a0[4], a1[4];
            for (int c = 0; c < 4; c++) {
                __m256 m0, m1, m2, m3;
                if (count == 8) {
                    m0 = _mm256_loadu_ps(src + c * mstride);
                    m1 = _mm256_loadu_ps(src + (4 + c) * mstride);
                    m2 = _mm256_loadu_ps(src + (8 + c) * mstride);
                    m3 = _mm256_loadu_ps(src + (12 + c) * mstride);
                } else {
                    m0 = _mm256_maskload_ps(src + c * mstride, m);
                    m1 = _mm256_maskload_ps(src + (4 + c) * mstride, m);
                    m2 = _mm256_maskload_ps(src + (8 + c) * mstride, m);
                    m3 = _mm256_maskload_ps(src + (12 + c) * mstride, m);
                }
                a0[c] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                a1[c] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
            }
            __m256 y00 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0[0], a0[1]), a0[2]), b);
            __m256 y01 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(a0[1], a0[2]), a0[3]), b);
            __m256 y10 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a1[0], a1[1]), a1[2]), b);
            __m256 y11 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(a1[1], a1[2]), a1[3]), b);
            int col0 = 2 * j0;
            for (int r = 0; r < 2 && 2 * i + r < h; r++) {
                __m256 e = r ? y10 : y00, o = r ? y11 : y01;
                // Interleaved: [e0 o0 e1 o1 | e4 o4 e5 o5] and [e2 o2 e3 o3 | e6 o6 e7 o7], then halves joined.
                __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
                __m256 v0 = _mm256_permute2f128_ps(lo, hi, 0x20), v1 = _mm256_permute2f128_ps(lo, hi, 0x31);
                float *dst = y + (long)(2 * i + r) * w + col0;
                if (col0 + 16 <= w) {
                    if (accumulate) {
                        v0 = _mm256_add_ps(_mm256_loadu_ps(dst), v0);
                        v1 = _mm256_add_ps(_mm256_loadu_ps(dst + 8), v1);
                    }
                    _mm256_storeu_ps(dst, v0);
                    _mm256_storeu_ps(dst + 8, v1);
                } else {
                    __m256i s0 = inside8(col0, w), s1 = inside8(col0 + 8, w);
                    if (accumulate) {
                        v0 = _mm256_add_ps(_mm256_maskload_ps(dst, s0), v0);
                        v1 = _mm256_add_ps(_mm256_maskload_ps(dst + 8, s1), v1);
                    }
                    _mm256_maskstore_ps(dst, s0, v0);
                    _mm256_maskstore_ps(dst + 8, s1, v1);
                }
            }
        }
    }
}

AVX2 void winograd_weight_tiles_avx2(const float *weight, int K, int C, int flipped, int k0, int k1, float *u) {
    long plane = (long)K * C;
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int k = k0; k < k1; k++) {
        for (int c0 = 0; c0 < C; c0 += 8) {
            int count = C - c0 < 8 ? C - c0 : 8;
            __m256i m = lanes8(count);
            // g[t]: tap t of the 8 kernels (c0 + lane, k), turned 180° when flipped: weight [C, K, 3, 3]
            // (kernel (c, k) at (c·K + k)·9), else [K, C, 3, 3] (kernel (k, c) at (k·C + c)·9).
            __m256 g[9];
            if (flipped) load_kernels8(weight + ((long)c0 * K + k) * 9, (long)K * 9, count, 1, g);
            else load_kernels8(weight + ((long)k * C + c0) * 9, 9, count, 0, g);
            __m256 rows[4][3];
            for (int j = 0; j < 3; j++) {
                __m256 r0 = g[j], r1 = g[3 + j], r2 = g[6 + j];
                rows[0][j] = r0;
                rows[1][j] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_add_ps(r0, r1), r2));
                rows[2][j] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_sub_ps(r0, r1), r2));
                rows[3][j] = r2;
            }
            float *dst = u + (long)k * C + c0;
            for (int r = 0; r < 4; r++) {
                __m256 a = rows[r][0], b = rows[r][1], d = rows[r][2];
                store_lanes8(dst + (4 * r) * plane, count, m, a);
                store_lanes8(dst + (4 * r + 1) * plane, count, m, _mm256_mul_ps(half, _mm256_add_ps(_mm256_add_ps(a, b), d)));
                store_lanes8(dst + (4 * r + 2) * plane, count, m, _mm256_mul_ps(half, _mm256_add_ps(_mm256_sub_ps(a, b), d)));
                store_lanes8(dst + (4 * r + 3) * plane, count, m, d);
            }
        }
    }
}

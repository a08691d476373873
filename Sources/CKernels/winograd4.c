// Winograd F(4×4, 3×3) transforms in AVX-512: see include/winograd.h. Sixteen tiles of one tile row
// at a time, one per lane. With the interpolation points 0, ±1, ±2 (Lavin & Gray 2016):
//   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
//   G  = [1/4 0 0; −1/6 −1/6 −1/6; −1/6 1/6 −1/6; 1/24 1/12 1/6; 1/24 −1/12 1/6; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
#include "winograd.h"
#include "avx2_tools.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f")))
#define INLINE static inline __attribute__((always_inline, target("avx512f")))

static inline __mmask16 lanes(int count) { return count <= 0 ? 0 : count >= 16 ? 0xFFFF : (__mmask16)((1u << count) - 1u); }

// Lanes of a 16-float load at row[col0 …] that fall inside 0 ≤ col < w.
static inline __mmask16 within(int col0, int w) {
    int lo = -col0, hi = w - col0;
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    return hi > lo ? (__mmask16)(lanes(hi) & ~lanes(lo)) : 0;
}

// t = Bᵀ·d along one axis (six values per lane).
INLINE void bt6(const __m512 d[6], __m512 t[6]) {
    const __m512 four = _mm512_set1_ps(4), five = _mm512_set1_ps(5), two = _mm512_set1_ps(2);
    t[0] = _mm512_fnmadd_ps(five, d[2], _mm512_fmadd_ps(four, d[0], d[4]));   // 4d0 − 5d2 + d4
    __m512 a = _mm512_fnmadd_ps(four, d[2], d[4]);                            // d4 − 4d2
    __m512 b = _mm512_fnmadd_ps(four, d[1], d[3]);                            // d3 − 4d1
    t[1] = _mm512_add_ps(a, b);
    t[2] = _mm512_sub_ps(a, b);
    __m512 c = _mm512_sub_ps(d[4], d[2]);                                     // d4 − d2
    __m512 e = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));                 // 2(d3 − d1)
    t[3] = _mm512_add_ps(c, e);
    t[4] = _mm512_sub_ps(c, e);
    t[5] = _mm512_fnmadd_ps(five, d[3], _mm512_fmadd_ps(four, d[1], d[5]));   // 4d1 − 5d3 + d5
}

// y = Aᵀ·m along one axis (six values in, four out).
INLINE void at6(const __m512 m[6], __m512 y[4]) {
    const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4), eight = _mm512_set1_ps(8);
    __m512 p = _mm512_add_ps(m[1], m[2]), q = _mm512_sub_ps(m[1], m[2]);
    __m512 r = _mm512_add_ps(m[3], m[4]), s = _mm512_sub_ps(m[3], m[4]);
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], p), r);
    y[1] = _mm512_fmadd_ps(two, s, q);
    y[2] = _mm512_fmadd_ps(four, r, p);
    y[3] = _mm512_add_ps(_mm512_fmadd_ps(eight, s, q), m[5]);
}

// g·Gᵀ along one axis (three values in, six out).
INLINE void g6(__m512 r0, __m512 r1, __m512 r2, __m512 u[6]) {
    const __m512 quarter = _mm512_set1_ps(0.25f), minusSixth = _mm512_set1_ps(-1.0f / 6);
    const __m512 sixth = _mm512_set1_ps(1.0f / 6), twelfth = _mm512_set1_ps(1.0f / 12), twentyFourth = _mm512_set1_ps(1.0f / 24);
    u[0] = _mm512_mul_ps(quarter, r0);
    u[1] = _mm512_mul_ps(minusSixth, _mm512_add_ps(_mm512_add_ps(r0, r1), r2));
    u[2] = _mm512_mul_ps(minusSixth, _mm512_add_ps(_mm512_sub_ps(r0, r1), r2));
    __m512 outer = _mm512_fmadd_ps(twentyFourth, r0, _mm512_mul_ps(sixth, r2));   // r0/24 + r2/6
    u[3] = _mm512_fmadd_ps(twelfth, r1, outer);
    u[4] = _mm512_fnmadd_ps(twelfth, r1, outer);
    u[5] = r2;
}

static AVX512 void input_by_rows(const float *x, int h, int w, float *v, long vstride) {
    // Picking every fourth float: from a pair of vectors (32 floats) the 8 at 4j + c, then two such
    // halves joined (_mm512_shuffle_f32x4 0x44: the low 256 bits of each).
    const __m512i pick[4] = {
        _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28),
        _mm512_setr_epi32(1, 5, 9, 13, 17, 21, 25, 29, 1, 5, 9, 13, 17, 21, 25, 29),
        _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 2, 6, 10, 14, 18, 22, 26, 30),
        _mm512_setr_epi32(3, 7, 11, 15, 19, 23, 27, 31, 3, 7, 11, 15, 19, 23, 27, 31),
    };
    const int th = (h + 3) / 4, tw = (w + 3) / 4;
    for (int i = 0; i < th; i++) {
        for (int j0 = 0; j0 < tw; j0 += 16) {
            const int count = tw - j0 < 16 ? tw - j0 : 16;
            // s[r][c]: lane j holds (Bᵀ applied along the columns of) input row 4i−1+r; first d, the
            // row's columns 4(j0+j)−1+c, c = 0…5 (zero outside the image).
            __m512 s[6][6];
            for (int r = 0; r < 6; r++) {
                const int row = 4 * i - 1 + r;
                if (row < 0 || row >= h) {
                    for (int c = 0; c < 6; c++) s[r][c] = _mm512_setzero_ps();
                    continue;
                }
                const float *src = x + (long)row * w;
                const int base = 4 * j0 - 1;
                __m512 a0 = _mm512_maskz_loadu_ps(within(base, w), src + base);
                __m512 a1 = _mm512_maskz_loadu_ps(within(base + 16, w), src + base + 16);
                __m512 a2 = _mm512_maskz_loadu_ps(within(base + 32, w), src + base + 32);
                __m512 a3 = _mm512_maskz_loadu_ps(within(base + 48, w), src + base + 48);
                __m512 d[6];
                for (int c = 0; c < 4; c++)
                    d[c] = _mm512_shuffle_f32x4(_mm512_permutex2var_ps(a0, pick[c], a1), _mm512_permutex2var_ps(a2, pick[c], a3), 0x44);
                // Columns 4j+3 and 4j+4 (c = 4, 5) are those of c = 0, 1 one tile on: lanes shifted down by one,
                // the last lane from base+64, base+65.
                const float e0 = base + 64 < w ? src[base + 64] : 0.0f, e1 = base + 65 < w ? src[base + 65] : 0.0f;
                d[4] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(_mm512_set1_ps(e0)), _mm512_castps_si512(d[0]), 1));
                d[5] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(_mm512_set1_ps(e1)), _mm512_castps_si512(d[1]), 1));
                bt6(d, s[r]);  // along the row: s[r][c'] = Σ_c Bᵀ[c'][c]·d[c]
            }
            // Then along the columns: V[r'][c'] = Σ_r Bᵀ[r'][r]·s[r][c'].
            const __mmask16 m = lanes(count);
            float *dst = v + (long)i * tw + j0;
            for (int c = 0; c < 6; c++) {
                __m512 col[6] = {s[0][c], s[1][c], s[2][c], s[3][c], s[4][c], s[5][c]}, t[6];
                bt6(col, t);
                for (int r = 0; r < 6; r++) _mm512_mask_storeu_ps(dst + (6 * r + c) * vstride, m, t[r]);
            }
        }
    }
}

static AVX512 void output_by_rows(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y) {
    // Interleaving four vectors of tile values (lane j: output columns 4j…4j+3) into 64 columns: pairs
    // of 32-bit values first, then pairs of 64-bit ones.
    const __m512i lo32 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi32 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i lo64 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), hi64 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    const int th = (h + 3) / 4, tw = (w + 3) / 4;
    const __m512 b = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    for (int i = 0; i < th; i++) {
        for (int j0 = 0; j0 < tw; j0 += 16) {
            const int count = tw - j0 < 16 ? tw - j0 : 16;
            const __mmask16 m = lanes(count);
            const float *src = mat + (long)i * tw + j0;
            // z[o][c] = Σ_r Aᵀ[o][r]·M[r][c], then y[o][o'] = Σ_c Aᵀ[o'][c]·z[o][c].
            __m512 z[4][6];
            for (int c = 0; c < 6; c++) {
                __m512 col[6], out[4];
                for (int r = 0; r < 6; r++) col[r] = _mm512_maskz_loadu_ps(m, src + (6 * r + c) * mstride);
                at6(col, out);
                for (int o = 0; o < 4; o++) z[o][c] = out[o];
            }
            const int col0 = 4 * j0;
            for (int o = 0; o < 4 && 4 * i + o < h; o++) {
                __m512 yv[4];
                at6(z[o], yv);
                for (int q = 0; q < 4; q++) {
                    yv[q] = _mm512_add_ps(yv[q], b);
                    if (relu && !accumulate) yv[q] = _mm512_max_ps(yv[q], zero);
                }
                __m512 alo = _mm512_permutex2var_ps(yv[0], lo32, yv[1]), ahi = _mm512_permutex2var_ps(yv[0], hi32, yv[1]);
                __m512 blo = _mm512_permutex2var_ps(yv[2], lo32, yv[3]), bhi = _mm512_permutex2var_ps(yv[2], hi32, yv[3]);
                __m512 out[4] = {
                    _mm512_castpd_ps(_mm512_permutex2var_pd(_mm512_castps_pd(alo), lo64, _mm512_castps_pd(blo))),
                    _mm512_castpd_ps(_mm512_permutex2var_pd(_mm512_castps_pd(alo), hi64, _mm512_castps_pd(blo))),
                    _mm512_castpd_ps(_mm512_permutex2var_pd(_mm512_castps_pd(ahi), lo64, _mm512_castps_pd(bhi))),
                    _mm512_castpd_ps(_mm512_permutex2var_pd(_mm512_castps_pd(ahi), hi64, _mm512_castps_pd(bhi))),
                };
                float *dst = y + (long)(4 * i + o) * w + col0;
                for (int q = 0; q < 4; q++) {
                    const __mmask16 sm = within(col0 + 16 * q, w);
                    if (!sm) break;
                    __m512 val = out[q];
                    if (accumulate) {
                        val = _mm512_add_ps(_mm512_maskz_loadu_ps(sm, dst + 16 * q), val);
                        if (relu) val = _mm512_max_ps(val, zero);
                    }
                    _mm512_mask_storeu_ps(dst + 16 * q, sm, val);
                }
            }
        }
    }
}

// Planes with few tiles to a row (the RoI heads' 14×14 and 28×28): sixteen consecutive tiles at a
// time, across rows, one per lane; the input gathered, the output scattered, each element where it
// falls inside the plane. The same arithmetic as the row-wise functions.

// Lanes [count) of the group starting at tile t0: the tile's first input row and column (4i−1,
// 4j−1) and the masks of the lanes whose row r / column c (0…5) of the tile lies inside the plane.
typedef struct { __m512i first; __mmask16 rowIn[6], colIn[6], valid; } group;

static AVX512 group group_at(int t0, int count, int h, int w, int tw) {
    group g;
    g.valid = lanes(count);
    __m512i t = _mm512_add_epi32(_mm512_set1_epi32(t0), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    int ti[16], tj[16];
    int tv[16];
    _mm512_storeu_si512(tv, t);
    for (int l = 0; l < 16; l++) { ti[l] = tv[l] / tw; tj[l] = tv[l] % tw; }
    __m512i row0 = _mm512_sub_epi32(_mm512_slli_epi32(_mm512_loadu_si512(ti), 2), _mm512_set1_epi32(1));
    __m512i col0 = _mm512_sub_epi32(_mm512_slli_epi32(_mm512_loadu_si512(tj), 2), _mm512_set1_epi32(1));
    g.first = _mm512_add_epi32(_mm512_mullo_epi32(row0, _mm512_set1_epi32(w)), col0);
    for (int q = 0; q < 6; q++) {
        __m512i r = _mm512_add_epi32(row0, _mm512_set1_epi32(q)), c = _mm512_add_epi32(col0, _mm512_set1_epi32(q));
        g.rowIn[q] = _mm512_mask_cmpge_epi32_mask(g.valid, r, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(r, _mm512_set1_epi32(h));
        g.colIn[q] = _mm512_mask_cmpge_epi32_mask(g.valid, c, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(c, _mm512_set1_epi32(w));
    }
    return g;
}

static AVX512 void input_by_groups(const float *x, int h, int w, float *v, long vstride) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, tiles = th * tw;
    for (int t0 = 0; t0 < tiles; t0 += 16) {
        const int count = tiles - t0 < 16 ? tiles - t0 : 16;
        group g = group_at(t0, count, h, w, tw);
        __m512 s[6][6];
        for (int r = 0; r < 6; r++) {
            __m512i rowIdx = _mm512_add_epi32(g.first, _mm512_set1_epi32(r * w));
            __m512 d[6];
            for (int c = 0; c < 6; c++)
                d[c] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), g.rowIn[r] & g.colIn[c], _mm512_add_epi32(rowIdx, _mm512_set1_epi32(c)), x, 4);
            bt6(d, s[r]);
        }
        float *dst = v + t0;
        for (int c = 0; c < 6; c++) {
            __m512 col[6] = {s[0][c], s[1][c], s[2][c], s[3][c], s[4][c], s[5][c]}, t[6];
            bt6(col, t);
            for (int r = 0; r < 6; r++) _mm512_mask_storeu_ps(dst + (6 * r + c) * vstride, g.valid, t[r]);
        }
    }
}

static AVX512 void output_by_groups(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, tiles = th * tw;
    const __m512 b = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    for (int t0 = 0; t0 < tiles; t0 += 16) {
        const int count = tiles - t0 < 16 ? tiles - t0 : 16;
        group g = group_at(t0, count, h, w, tw);
        // Output pixel (o, q) of a tile is its input element (o + 1, q + 1).
        const __m512i first = _mm512_add_epi32(g.first, _mm512_set1_epi32(w + 1));
        const float *src = mat + t0;
        __m512 z[4][6];
        for (int c = 0; c < 6; c++) {
            __m512 col[6], out[4];
            for (int r = 0; r < 6; r++) col[r] = _mm512_maskz_loadu_ps(g.valid, src + (6 * r + c) * mstride);
            at6(col, out);
            for (int o = 0; o < 4; o++) z[o][c] = out[o];
        }
        for (int o = 0; o < 4; o++) {
            __m512 yv[4];
            at6(z[o], yv);
            for (int q = 0; q < 4; q++) {
                const __mmask16 in = g.rowIn[o + 1] & g.colIn[q + 1];
                if (!in) continue;
                const __m512i idx = _mm512_add_epi32(first, _mm512_set1_epi32(o * w + q));
                __m512 val = _mm512_add_ps(yv[q], b);
                if (accumulate) val = _mm512_add_ps(_mm512_mask_i32gather_ps(zero, in, idx, y, 4), val);
                if (relu) val = _mm512_max_ps(val, zero);
                _mm512_mask_i32scatter_ps(y, in, idx, val, 4);
            }
        }
    }
}

// Sixteen consecutive tiles at a time (across rows) from a copy of the plane with a zero border: each
// tile row is eight plain floats, two 8×8 transposes give its sixteen lanes. No gathers or
// scatters (slow on AMD) and no per-lane edge cases; the same arithmetic as the functions above.
// They return 0, having done nothing, when the copy cannot be allocated.

// The plane x (h × w) at pad row r + 1, column c + 1 of a zeroed (4·th + 2) × (4·tw + 4) buffer.
static float *padded_copy(const float *x, int h, int w, float *local, int capacity) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, ph = 4 * th + 2, pw = 4 * tw + 4;
    float *pad = (long)ph * pw <= capacity ? local : (float *)malloc(sizeof(float) * (size_t)ph * (size_t)pw);
    if (!pad) return NULL;
    memset(pad, 0, sizeof(float) * (size_t)ph * (size_t)pw);
    for (int r = 0; r < h; r++) memcpy(pad + (long)(r + 1) * pw + 1, x + (long)r * w, sizeof(float) * (size_t)w);
    return pad;
}

static AVX512 int input_by_padded(const float *x, int h, int w, float *v, long vstride) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, tiles = th * tw, pw = 4 * tw + 4;
    float local[4096];
    float *pad = padded_copy(x, h, w, local, 4096);
    if (!pad) return 0;
    for (int t0 = 0; t0 < tiles; t0 += 16) {
        const int count = tiles - t0 < 16 ? tiles - t0 : 16;
        // Tile (i, j)'s row q starts at pad (4i + q, 4j); lanes past count repeat tile t0 (not stored).
        const float *first[16];
        for (int l = 0; l < 16; l++) {
            const int t = t0 + (l < count ? l : 0);
            first[l] = pad + (long)(4 * (t / tw)) * pw + 4 * (t % tw);
        }
        __m512 s[6][6];
        for (int r = 0; r < 6; r++) {
            __m256 lo[8], hi[8];
            for (int l = 0; l < 8; l++) {
                lo[l] = _mm256_loadu_ps(first[l] + (long)r * pw);
                hi[l] = _mm256_loadu_ps(first[8 + l] + (long)r * pw);
            }
            transpose8(lo);  // lo[c] lane l: row r, column c of tile l
            transpose8(hi);
            __m512 d[6];
            for (int c = 0; c < 6; c++)
                d[c] = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo[c])), _mm256_castps_pd(hi[c]), 1));
            bt6(d, s[r]);
        }
        float *dst = v + t0;
        const __mmask16 m = lanes(count);
        for (int c = 0; c < 6; c++) {
            __m512 col[6] = {s[0][c], s[1][c], s[2][c], s[3][c], s[4][c], s[5][c]}, t[6];
            bt6(col, t);
            if (count == 16)
                for (int r = 0; r < 6; r++) _mm512_storeu_ps(dst + (6 * r + c) * vstride, t[r]);
            else
                for (int r = 0; r < 6; r++) _mm512_mask_storeu_ps(dst + (6 * r + c) * vstride, m, t[r]);
        }
    }
    if (pad != local) free(pad);
    return 1;
}

// The 128-bit lane k (0…3) of v.
INLINE __m128 lane128(__m512 v, int k) {
    switch (k) {
    case 0: return _mm512_castps512_ps128(v);
    case 1: return _mm512_extractf32x4_ps(v, 1);
    case 2: return _mm512_extractf32x4_ps(v, 2);
    default: return _mm512_extractf32x4_ps(v, 3);
    }
}

static AVX512 int output_by_padded(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, tiles = th * tw;
    // Every tile's 4×4 outputs (bias added) whole into a 4·th × 4·tw plane, then its h × w part to
    // y with the accumulation and the ReLU.
    const int pw = 4 * tw, ph = 4 * th;
    float local[4096];
    float *pad = (long)ph * pw <= 4096 ? local : (float *)malloc(sizeof(float) * (size_t)ph * (size_t)pw);
    if (!pad) return 0;
    const __m512 b = _mm512_set1_ps(bias);
    for (int t0 = 0; t0 < tiles; t0 += 16) {
        const int count = tiles - t0 < 16 ? tiles - t0 : 16;
        const __mmask16 m = lanes(count);
        const float *src = mat + t0;
        __m512 z[4][6];
        for (int c = 0; c < 6; c++) {
            __m512 col[6], out[4];
            for (int r = 0; r < 6; r++)
                col[r] = count == 16 ? _mm512_loadu_ps(src + (6 * r + c) * mstride) : _mm512_maskz_loadu_ps(m, src + (6 * r + c) * mstride);
            at6(col, out);
            for (int o = 0; o < 4; o++) z[o][c] = out[o];
        }
        for (int o = 0; o < 4; o++) {
            __m512 yv[4];
            at6(z[o], yv);
            for (int q = 0; q < 4; q++) yv[q] = _mm512_add_ps(yv[q], b);
            // 4×4 transposes in each 128-bit lane k: rq's lane k is tile 4k + q's row o.
            __m512 t0v = _mm512_unpacklo_ps(yv[0], yv[1]), t1v = _mm512_unpackhi_ps(yv[0], yv[1]);
            __m512 t2v = _mm512_unpacklo_ps(yv[2], yv[3]), t3v = _mm512_unpackhi_ps(yv[2], yv[3]);
            const __m512 rq[4] = {_mm512_shuffle_ps(t0v, t2v, 0x44), _mm512_shuffle_ps(t0v, t2v, 0xEE),
                                  _mm512_shuffle_ps(t1v, t3v, 0x44), _mm512_shuffle_ps(t1v, t3v, 0xEE)};
            for (int l = 0; l < count; l++) {
                const int t = t0 + l;
                _mm_storeu_ps(pad + (long)(4 * (t / tw) + o) * pw + 4 * (t % tw), lane128(rq[l % 4], l / 4));
            }
        }
    }
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < h; r++) {
        const float *src = pad + (long)r * pw;
        float *dst = y + (long)r * w;
        for (int x0 = 0; x0 < w; x0 += 16) {
            const __mmask16 sm = within(x0, w);
            __m512 val = _mm512_maskz_loadu_ps(sm, src + x0);
            if (accumulate) val = _mm512_add_ps(_mm512_maskz_loadu_ps(sm, dst + x0), val);
            if (relu) val = _mm512_max_ps(val, zero);  // 0 for NaN, as in the tile loops
            _mm512_mask_storeu_ps(dst + x0, sm, val);
        }
    }
    if (pad != local) free(pad);
    return 1;
}

// Row-wise where a tile row fills most of the sixteen lanes, else sixteen tiles across rows from the
// padded copy (on Zen 4: 14×14 planes' input 27 % and output 9 % faster than by gathers and
// scatters, 28×28's 32 % and 14 %), by gathers if the copy cannot be allocated.
void winograd4_input_tiles(const float *x, int h, int w, float *v, long vstride) {
    if ((w + 3) / 4 >= 12) input_by_rows(x, h, w, v, vstride);
    else if (!input_by_padded(x, h, w, v, vstride)) input_by_groups(x, h, w, v, vstride);
}

void winograd4_output_tiles(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y) {
    if ((w + 3) / 4 >= 12) output_by_rows(mat, mstride, h, w, bias, accumulate, relu, y);
    else if (!output_by_padded(mat, mstride, h, w, bias, accumulate, relu, y)) output_by_groups(mat, mstride, h, w, bias, accumulate, relu, y);
}

void winograd4_input_tiles_gather(const float *x, int h, int w, float *v, long vstride) { input_by_groups(x, h, w, v, vstride); }

void winograd4_output_tiles_scatter(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y) {
    output_by_groups(mat, mstride, h, w, bias, accumulate, relu, y);
}

AVX512 void winograd4_weight_tiles(const float *weight, int K, int C, int flipped, int k0, int k1, float *u) {
    const long plane = (long)K * C;
    const __m512i step = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int k = k0; k < k1; k++) {
        for (int c0 = 0; c0 < C; c0 += 16) {
            const int count = C - c0 < 16 ? C - c0 : 16;
            const __mmask16 m = lanes(count);
            // g[t]: tap t of the 16 kernels (c0 + lane, k), turned 180° when flipped.
            __m512i idx;
            const float *base;
            if (flipped) {  // weight [C, K, 3, 3]: kernel (c, k) at (c·K + k)·9, tap t read at 8 − t
                idx = _mm512_mullo_epi32(step, _mm512_set1_epi32(K * 9));
                base = weight + ((long)c0 * K + k) * 9;
            } else {        // weight [K, C, 3, 3]: kernel (k, c) at (k·C + c)·9
                idx = _mm512_mullo_epi32(step, _mm512_set1_epi32(9));
                base = weight + ((long)k * C + c0) * 9;
            }
            __m512 g[9];
            for (int t = 0; t < 9; t++)
                g[t] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base + (flipped ? 8 - t : t), 4);
            // G·g: each of the kernel's three columns (rows g0, g1, g2) to six values; then ·Gᵀ on each row.
            __m512 gg[6][3];
            for (int j = 0; j < 3; j++) {
                __m512 col[6];
                g6(g[j], g[3 + j], g[6 + j], col);
                for (int r = 0; r < 6; r++) gg[r][j] = col[r];
            }
            float *dst = u + (long)k * C + c0;
            for (int r = 0; r < 6; r++) {
                __m512 row[6];
                g6(gg[r][0], gg[r][1], gg[r][2], row);
                for (int c = 0; c < 6; c++) _mm512_mask_storeu_ps(dst + (6 * r + c) * plane, m, row[c]);
            }
        }
    }
}

// ---- The same transforms in AVX2 + FMA (processors without AVX-512) -------------------------------
// Eight consecutive tiles at a time, across rows (the groups path above, for every plane size: F(4×4)
// runs on small planes only, `Engine.winograd4MaxSide`), the same operations in the same order, so
// the same bits as the AVX-512 functions. The input gathered with per-lane masks (a masked-out lane
// reads nothing); the output transposed to one 4-float row per tile and stored row by row.

#define AVX2F __attribute__((target("avx2,fma")))
#define INLINE8 static inline __attribute__((always_inline, target("avx2,fma")))

INLINE8 __m256i lanes8(int count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

INLINE8 void bt6_8(const __m256 d[6], __m256 t[6]) {
    const __m256 four = _mm256_set1_ps(4), five = _mm256_set1_ps(5), two = _mm256_set1_ps(2);
    t[0] = _mm256_fnmadd_ps(five, d[2], _mm256_fmadd_ps(four, d[0], d[4]));
    __m256 a = _mm256_fnmadd_ps(four, d[2], d[4]);
    __m256 b = _mm256_fnmadd_ps(four, d[1], d[3]);
    t[1] = _mm256_add_ps(a, b);
    t[2] = _mm256_sub_ps(a, b);
    __m256 c = _mm256_sub_ps(d[4], d[2]);
    __m256 e = _mm256_mul_ps(two, _mm256_sub_ps(d[3], d[1]));
    t[3] = _mm256_add_ps(c, e);
    t[4] = _mm256_sub_ps(c, e);
    t[5] = _mm256_fnmadd_ps(five, d[3], _mm256_fmadd_ps(four, d[1], d[5]));
}

INLINE8 void at6_8(const __m256 m[6], __m256 y[4]) {
    const __m256 two = _mm256_set1_ps(2), four = _mm256_set1_ps(4), eight = _mm256_set1_ps(8);
    __m256 p = _mm256_add_ps(m[1], m[2]), q = _mm256_sub_ps(m[1], m[2]);
    __m256 r = _mm256_add_ps(m[3], m[4]), s = _mm256_sub_ps(m[3], m[4]);
    y[0] = _mm256_add_ps(_mm256_add_ps(m[0], p), r);
    y[1] = _mm256_fmadd_ps(two, s, q);
    y[2] = _mm256_fmadd_ps(four, r, p);
    y[3] = _mm256_add_ps(_mm256_fmadd_ps(eight, s, q), m[5]);
}

INLINE8 void g6_8(__m256 r0, __m256 r1, __m256 r2, __m256 u[6]) {
    const __m256 quarter = _mm256_set1_ps(0.25f), minusSixth = _mm256_set1_ps(-1.0f / 6);
    const __m256 sixth = _mm256_set1_ps(1.0f / 6), twelfth = _mm256_set1_ps(1.0f / 12), twentyFourth = _mm256_set1_ps(1.0f / 24);
    u[0] = _mm256_mul_ps(quarter, r0);
    u[1] = _mm256_mul_ps(minusSixth, _mm256_add_ps(_mm256_add_ps(r0, r1), r2));
    u[2] = _mm256_mul_ps(minusSixth, _mm256_add_ps(_mm256_sub_ps(r0, r1), r2));
    __m256 outer = _mm256_fmadd_ps(twentyFourth, r0, _mm256_mul_ps(sixth, r2));
    u[3] = _mm256_fmadd_ps(twelfth, r1, outer);
    u[4] = _mm256_fnmadd_ps(twelfth, r1, outer);
    u[5] = r2;
}

// Lanes [count) of the group of tiles from t0: each tile's first input row and column (4i−1, 4j−1)
// and the lanes whose row r / column c (0…5) of the tile lies inside the plane.
typedef struct { int ti[8], tj[8]; __m256i first, valid, rowIn[6], colIn[6]; } group8;

INLINE8 group8 group8_at(int t0, int count, int h, int w, int tw) {
    group8 g;
    for (int l = 0; l < 8; l++) {
        int t = t0 + (l < count ? l : 0);
        g.ti[l] = t / tw;
        g.tj[l] = t % tw;
    }
    g.valid = lanes8(count);
    const __m256i one = _mm256_set1_epi32(1), minusOne = _mm256_set1_epi32(-1);
    __m256i row0 = _mm256_sub_epi32(_mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)g.ti), 2), one);
    __m256i col0 = _mm256_sub_epi32(_mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)g.tj), 2), one);
    g.first = _mm256_add_epi32(_mm256_mullo_epi32(row0, _mm256_set1_epi32(w)), col0);
    for (int q = 0; q < 6; q++) {
        __m256i r = _mm256_add_epi32(row0, _mm256_set1_epi32(q)), c = _mm256_add_epi32(col0, _mm256_set1_epi32(q));
        g.rowIn[q] = _mm256_and_si256(g.valid, _mm256_and_si256(_mm256_cmpgt_epi32(r, minusOne), _mm256_cmpgt_epi32(_mm256_set1_epi32(h), r)));
        g.colIn[q] = _mm256_and_si256(g.valid, _mm256_and_si256(_mm256_cmpgt_epi32(c, minusOne), _mm256_cmpgt_epi32(_mm256_set1_epi32(w), c)));
    }
    return g;
}

// The gathering version: the same values without a padded copy of the plane.
AVX2F void winograd4_input_tiles_avx2_gather(const float *x, int h, int w, float *v, long vstride) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, tiles = th * tw;
    for (int t0 = 0; t0 < tiles; t0 += 8) {
        const int count = tiles - t0 < 8 ? tiles - t0 : 8;
        group8 g = group8_at(t0, count, h, w, tw);
        __m256 s[6][6];
        for (int r = 0; r < 6; r++) {
            __m256i rowIdx = _mm256_add_epi32(g.first, _mm256_set1_epi32(r * w));
            __m256 d[6];
            for (int c = 0; c < 6; c++) {
                __m256 m = _mm256_castsi256_ps(_mm256_and_si256(g.rowIn[r], g.colIn[c]));
                d[c] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, _mm256_add_epi32(rowIdx, _mm256_set1_epi32(c)), m, 4);
            }
            bt6_8(d, s[r]);
        }
        float *dst = v + t0;
        for (int c = 0; c < 6; c++) {
            __m256 col[6] = {s[0][c], s[1][c], s[2][c], s[3][c], s[4][c], s[5][c]}, t[6];
            bt6_8(col, t);
            if (count == 8)
                for (int r = 0; r < 6; r++) _mm256_storeu_ps(dst + (6 * r + c) * vstride, t[r]);
            else
                for (int r = 0; r < 6; r++) _mm256_maskstore_ps(dst + (6 * r + c) * vstride, g.valid, t[r]);
        }
    }
}

AVX2F void winograd4_input_tiles_avx2(const float *x, int h, int w, float *v, long vstride) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, tiles = th * tw;
    // The plane with a zero border (one row and column before, enough after): row r of x at pad row
    // r + 1, column c at pad column c + 1, so tile (i, j)'s row q is eight plain floats from pad
    // (4i + q, 4j); 8 row loads and a transpose per tile row instead of masked gathers (slow on AMD).
    const int ph = 4 * th + 2, pw = 4 * tw + 4;
    float local[4096];
    float *pad = (long)ph * pw <= 4096 ? local : (float *)malloc(sizeof(float) * (size_t)ph * (size_t)pw);
    if (!pad) {  // out of memory for a huge plane: the gathers, which need no buffer
        winograd4_input_tiles_avx2_gather(x, h, w, v, vstride);
        return;
    }
    memset(pad, 0, sizeof(float) * (size_t)ph * (size_t)pw);
    for (int r = 0; r < h; r++) memcpy(pad + (long)(r + 1) * pw + 1, x + (long)r * w, sizeof(float) * (size_t)w);
    for (int t0 = 0; t0 < tiles; t0 += 8) {
        const int count = tiles - t0 < 8 ? tiles - t0 : 8;
        int ti[8], tj[8];
        for (int l = 0; l < 8; l++) {
            int t = t0 + (l < count ? l : 0);
            ti[l] = t / tw;
            tj[l] = t % tw;
        }
        __m256 s[6][6];
        for (int r = 0; r < 6; r++) {
            __m256 d[8];
            for (int l = 0; l < 8; l++) d[l] = _mm256_loadu_ps(pad + (long)(4 * ti[l] + r) * pw + 4 * tj[l]);
            transpose8(d);  // d[c] lane l: row r, column c of tile l (as the gathers give it)
            bt6_8(d, s[r]);
        }
        float *dst = v + t0;
        const __m256i valid = lanes8(count);
        for (int c = 0; c < 6; c++) {
            __m256 col[6] = {s[0][c], s[1][c], s[2][c], s[3][c], s[4][c], s[5][c]}, t[6];
            bt6_8(col, t);
            if (count == 8)
                for (int r = 0; r < 6; r++) _mm256_storeu_ps(dst + (6 * r + c) * vstride, t[r]);
            else
                for (int r = 0; r < 6; r++) _mm256_maskstore_ps(dst + (6 * r + c) * vstride, valid, t[r]);
        }
    }
    if (pad != local) free(pad);
}

// Tile rows stored straight into the plane (edge tiles element by element): for a plane too large
// for the padded buffer when memory runs out.
AVX2F void winograd4_output_tiles_avx2_direct(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, tiles = th * tw;
    const __m128 b = _mm_set1_ps(bias), zero = _mm_setzero_ps();
    for (int t0 = 0; t0 < tiles; t0 += 8) {
        const int count = tiles - t0 < 8 ? tiles - t0 : 8;
        group8 g = group8_at(t0, count, h, w, tw);
        const float *src = mat + t0;
        __m256 z[4][6];
        for (int c = 0; c < 6; c++) {
            __m256 col[6], out[4];
            for (int r = 0; r < 6; r++)
                col[r] = count == 8 ? _mm256_loadu_ps(src + (6 * r + c) * mstride) : _mm256_maskload_ps(src + (6 * r + c) * mstride, g.valid);
            at6_8(col, out);
            for (int o = 0; o < 4; o++) z[o][c] = out[o];
        }
        for (int o = 0; o < 4; o++) {
            __m256 yv[4];
            at6_8(z[o], yv);
            // Lane l's four outputs of row o side by side: 4×4 transposes in each 128-bit half.
            __m256 t0v = _mm256_unpacklo_ps(yv[0], yv[1]), t1v = _mm256_unpackhi_ps(yv[0], yv[1]);
            __m256 t2v = _mm256_unpacklo_ps(yv[2], yv[3]), t3v = _mm256_unpackhi_ps(yv[2], yv[3]);
            __m256 r0 = _mm256_shuffle_ps(t0v, t2v, 0x44), r1 = _mm256_shuffle_ps(t0v, t2v, 0xEE);
            __m256 r2 = _mm256_shuffle_ps(t1v, t3v, 0x44), r3 = _mm256_shuffle_ps(t1v, t3v, 0xEE);
            const __m128 rows[8] = {
                _mm256_castps256_ps128(r0), _mm256_castps256_ps128(r1), _mm256_castps256_ps128(r2), _mm256_castps256_ps128(r3),
                _mm256_extractf128_ps(r0, 1), _mm256_extractf128_ps(r1, 1), _mm256_extractf128_ps(r2, 1), _mm256_extractf128_ps(r3, 1),
            };
            for (int l = 0; l < count; l++) {
                const int oy = 4 * g.ti[l] + o, ox = 4 * g.tj[l];
                if (oy >= h) continue;
                float *dst = y + (long)oy * w + ox;
                __m128 val = _mm_add_ps(rows[l], b);
                if (ox + 4 <= w) {
                    if (accumulate) val = _mm_add_ps(_mm_loadu_ps(dst), val);
                    if (relu) val = _mm_max_ps(val, zero);
                    _mm_storeu_ps(dst, val);
                } else {
                    float part[4];
                    _mm_storeu_ps(part, val);
                    for (int q = 0; ox + q < w; q++) {
                        float e = part[q];
                        if (accumulate) e = dst[q] + e;
                        if (relu) e = e > 0 ? e : 0.0f;  // as max_ps(e, 0): 0 for NaN
                        dst[q] = e;
                    }
                }
            }
        }
    }
}

AVX2F void winograd4_output_tiles_avx2(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y) {
    const int th = (h + 3) / 4, tw = (w + 3) / 4, tiles = th * tw;
    // Every tile's 4×4 outputs (bias added) go whole into a plane of 4·th × 4·tw, then the h × w
    // part to y with the accumulation and the ReLU: no per-lane edge cases in the tile loop.
    const int pw = 4 * tw, ph = 4 * th;
    float local[4096];
    float *pad = (long)ph * pw <= 4096 ? local : (float *)malloc(sizeof(float) * (size_t)ph * (size_t)pw);
    if (!pad) {
        winograd4_output_tiles_avx2_direct(mat, mstride, h, w, bias, accumulate, relu, y);
        return;
    }
    const __m128 b = _mm_set1_ps(bias);
    for (int t0 = 0; t0 < tiles; t0 += 8) {
        const int count = tiles - t0 < 8 ? tiles - t0 : 8;
        const __m256i valid = lanes8(count);
        const float *src = mat + t0;
        __m256 z[4][6];
        for (int c = 0; c < 6; c++) {
            __m256 col[6], out[4];
            for (int r = 0; r < 6; r++)
                col[r] = count == 8 ? _mm256_loadu_ps(src + (6 * r + c) * mstride) : _mm256_maskload_ps(src + (6 * r + c) * mstride, valid);
            at6_8(col, out);
            for (int o = 0; o < 4; o++) z[o][c] = out[o];
        }
        for (int o = 0; o < 4; o++) {
            __m256 yv[4];
            at6_8(z[o], yv);
            __m256 t0v = _mm256_unpacklo_ps(yv[0], yv[1]), t1v = _mm256_unpackhi_ps(yv[0], yv[1]);
            __m256 t2v = _mm256_unpacklo_ps(yv[2], yv[3]), t3v = _mm256_unpackhi_ps(yv[2], yv[3]);
            __m256 r0 = _mm256_shuffle_ps(t0v, t2v, 0x44), r1 = _mm256_shuffle_ps(t0v, t2v, 0xEE);
            __m256 r2 = _mm256_shuffle_ps(t1v, t3v, 0x44), r3 = _mm256_shuffle_ps(t1v, t3v, 0xEE);
            const __m128 rows[8] = {
                _mm256_castps256_ps128(r0), _mm256_castps256_ps128(r1), _mm256_castps256_ps128(r2), _mm256_castps256_ps128(r3),
                _mm256_extractf128_ps(r0, 1), _mm256_extractf128_ps(r1, 1), _mm256_extractf128_ps(r2, 1), _mm256_extractf128_ps(r3, 1),
            };
            for (int l = 0; l < count; l++) {
                const int t = t0 + l, ti = t / tw, tj = t % tw;
                _mm_storeu_ps(pad + (long)(4 * ti + o) * pw + 4 * tj, _mm_add_ps(rows[l], b));
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int r = 0; r < h; r++) {
        const float *s = pad + (long)r * pw;
        float *d = y + (long)r * w;
        int x = 0;
        for (; x + 8 <= w; x += 8) {
            __m256 v = _mm256_loadu_ps(s + x);
            if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(d + x), v);
            if (relu) v = _mm256_max_ps(v, zero);  // 0 for NaN, as max_ps(v, 0) in the tile loop
            _mm256_storeu_ps(d + x, v);
        }
        for (; x < w; x++) {
            float e = s[x];
            if (accumulate) e = d[x] + e;
            if (relu) e = e > 0 ? e : 0.0f;
            d[x] = e;
        }
    }
    if (pad != local) free(pad);
}

AVX2F void winograd4_weight_tiles_avx2(const float *weight, int K, int C, int flipped, int k0, int k1, float *u) {
    const long plane = (long)K * C;
    for (int k = k0; k < k1; k++) {
        for (int c0 = 0; c0 < C; c0 += 8) {
            const int count = C - c0 < 8 ? C - c0 : 8;
            const __m256i m = lanes8(count);
            __m256 g[9];  // as in winograd_weight_tiles_avx2
            if (flipped) load_kernels8(weight + ((long)c0 * K + k) * 9, (long)K * 9, count, 1, g);
            else load_kernels8(weight + ((long)k * C + c0) * 9, 9, count, 0, g);
            __m256 gg[6][3];
            for (int j = 0; j < 3; j++) {
                __m256 col[6];
                g6_8(g[j], g[3 + j], g[6 + j], col);
                for (int r = 0; r < 6; r++) gg[r][j] = col[r];
            }
            float *dst = u + (long)k * C + c0;
            for (int r = 0; r < 6; r++) {
                __m256 row[6];
                g6_8(gg[r][0], gg[r][1], gg[r][2], row);
                for (int c = 0; c < 6; c++) {
                    if (count == 8) _mm256_storeu_ps(dst + (6 * r + c) * plane, row[c]);  // masked stores are slow on Zen
                    else _mm256_maskstore_ps(dst + (6 * r + c) * plane, m, row[c]);
                }
            }
        }
    }
}

// Small AVX2 helpers shared by the AVX2 kernels (kgemm_avx2.c, winograd.c, winograd4.c). Private to
// CKernels.
#ifndef AVX2_TOOLS_H
#define AVX2_TOOLS_H

#include <immintrin.h>

// An 8×8 transpose in registers: r[i] holds row i on entry, column i on return.
static inline __attribute__((always_inline, target("avx2"))) void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);      // rows 2i, 2i+1: columns 0,1 | 4,5 interleaved
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);  // columns 2,3 | 6,7
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);      // column 0 | 4 of rows 4i…4i+3
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);  // column 1 | 5
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);  // column 2 | 6
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);  // column 3 | 7
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x20);
        r[q + 4] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x31);
    }
}

// Taps 0…8 of eight 3×3 kernels whose nine taps start at base + l·stride (lanes l < count; the other
// lanes zero): g[t] lane l = tap t, or, when flipped, tap 8 − t (the kernel turned 180°). Eight
// loads and a transpose instead of nine gathers; the same values.
static inline __attribute__((always_inline, target("avx2"))) void load_kernels8(const float *base, long stride, int count, int flipped,
                                                                              __m256 g[9]) {
    __m256 r[8];
    float last[8];
    for (int l = 0; l < 8; l++) {
        r[l] = l < count ? _mm256_loadu_ps(base + l * stride) : _mm256_setzero_ps();
        last[l] = l < count ? base[l * stride + 8] : 0.0f;
    }
    transpose8(r);
    __m256 taps[9];
    for (int t = 0; t < 8; t++) taps[t] = r[t];
    taps[8] = _mm256_loadu_ps(last);
    for (int t = 0; t < 9; t++) g[t] = taps[flipped ? 8 - t : t];
}

#endif

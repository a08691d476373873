// kgemm: see include/kgemm.h.
#include "kgemm.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define MR 14
#define NR 32
#define KC 256
#define MC 56
#define NC 1024

int kgemm_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

// The 14×32 register tile: C[mr×nr] (= or +=, see beta) alpha · Σ_p pa[p][0..<14] ⊗ pb[p][0..<32].
__attribute__((target("avx512f,fma")))
static void kernel(int kc, const float *pa, const float *pb, float *c, int ldc, int mr, int nr, float alpha, float beta) {
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps(); }
    for (int p = 0; p < kc; p++) {
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

// op(A)[r0.., p0..] as 14-row panels: panel q holds pa[q·14·kc + p·14 + i] = op(A)[r0 + 14q + i][p0 + p].
static void pack_a(int transA, int mc, int kc, const float *a, int lda, int r0, int p0, float *pa) {
    for (int r = 0; r < mc; r += MR) {
        int mr = mc - r < MR ? mc - r : MR;
        if (transA) {  // A is k×m: op(A)[i][p] = A[p][i], a row of A holds the panel's 14 values.
            for (int p = 0; p < kc; p++) {
                const float *src = a + (size_t)(p0 + p) * lda + r0 + r;
                float *dst = pa + p * MR;
                for (int i = 0; i < mr; i++) dst[i] = src[i];
                for (int i = mr; i < MR; i++) dst[i] = 0;
            }
        } else {
            for (int i = 0; i < mr; i++) {
                const float *src = a + (size_t)(r0 + r + i) * lda + p0;
                for (int p = 0; p < kc; p++) pa[p * MR + i] = src[p];
            }
            for (int i = mr; i < MR; i++) for (int p = 0; p < kc; p++) pa[p * MR + i] = 0;
        }
        pa += (size_t)MR * kc;
    }
}

// op(B)[p0.., c0..] as 32-column panels: panel q holds pb[q·32·kc + p·32 + j] = op(B)[p0 + p][c0 + 32q + j].
static void pack_b(int transB, int kc, int nc, const float *b, int ldb, int p0, int c0, float *pb) {
    int panels = (nc + NR - 1) / NR, full = nc / NR;
    if (!transB) {  // B is k×n: copy each row's pieces into the panels.
        for (int p = 0; p < kc; p++) {
            const float *src = b + (size_t)(p0 + p) * ldb + c0;
            for (int q = 0; q < full; q++) memcpy(pb + (size_t)q * NR * kc + p * NR, src + q * NR, NR * sizeof(float));
            if (full < panels) {
                int nr = nc - full * NR;
                float *dst = pb + (size_t)full * NR * kc + p * NR;
                memcpy(dst, src + full * NR, nr * sizeof(float));
                memset(dst + nr, 0, (NR - nr) * sizeof(float));
            }
        }
    } else {  // B is n×k: op(B)[p][j] = B[j][p]; a row of B gives one column of a panel.
        for (int q = 0; q < panels; q++) {
            int nr = nc - q * NR < NR ? nc - q * NR : NR;
            float *dst = pb + (size_t)q * NR * kc;
            for (int j = 0; j < nr; j++) {
                const float *src = b + (size_t)(c0 + q * NR + j) * ldb + p0;
                for (int p = 0; p < kc; p++) dst[p * NR + j] = src[p];
            }
            for (int j = nr; j < NR; j++) for (int p = 0; p < kc; p++) dst[p * NR + j] = 0;
        }
    }
}

// Each thread's packing buffers, made on its first call and kept (Dispatch's worker threads live on).
static _Thread_local float *tls_pa, *tls_pb;

void kgemm_block(int transA, int transB, int m0, int m1, int n0, int n1, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (!tls_pa) {
        tls_pa = aligned_alloc(64, sizeof(float) * ((MC + MR) * KC));
        tls_pb = aligned_alloc(64, sizeof(float) * ((NC + NR) * KC));
        if (!tls_pa || !tls_pb) abort();  // 1.1 MB: out of memory is not recoverable here
    }
    float *pa = tls_pa, *pb = tls_pb;
    for (int jc = n0; jc < n1; jc += NC) {
        int nc = n1 - jc < NC ? n1 - jc : NC;
        for (int pc = 0; pc < k; pc += KC) {
            int kc = k - pc < KC ? k - pc : KC;
            float bt = pc == 0 ? beta : 1.0f;
            pack_b(transB, kc, nc, b, ldb, pc, jc, pb);
            for (int ic = m0; ic < m1; ic += MC) {
                int mc = m1 - ic < MC ? m1 - ic : MC;
                pack_a(transA, mc, kc, a, lda, ic, pc, pa);
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        kernel(kc, pa + (size_t)(ir / MR) * MR * kc, pb + (size_t)(jr / NR) * NR * kc,
                               c + (size_t)(ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, bt);
                    }
                }
            }
        }
    }
}

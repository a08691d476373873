// The Goto-style blocked product shared by kgemm.c (AVX-512) and kgemm_avx2.c (AVX2 + FMA): included
// once by each, after the including file has defined MR, NR, KC, MC, NC, its static kernel, pack_a,
// pack_b and pack_b_conv, and KGEMM_BLOCK / KGEMM_CONV_BLOCK, the names of its two entry points
// (see include/kgemm.h), KGEMM_CONVT_BLOCK, the weight gradient's, and KGEMM_PACKED_A_FLOATS,
// KGEMM_PACK_A, KGEMM_PACK_AT, KGEMM_BLOCK_PACKED_A, the prepacked A's. Private to CKernels.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// Each thread's packing buffers, made on its first call and kept while the thread lives; freed
// when it ends (a pthread key's destructor: Dispatch retires idle worker threads and every job has
// a thread of its own, and each one that ran a product kept its 1–2 MB — found by the test suite under
// AddressSanitizer, issue 16).
static _Thread_local float *tls_pa, *tls_pb;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void free_packing(void *block) {
    free(block);
    tls_pa = NULL;
    tls_pb = NULL;
}

static void make_tls_key(void) {
    if (pthread_key_create(&tls_key, free_packing) != 0) abort();
}

// Patch row r of a convolution (channel, ky, kx = r's digits) at output positions p0 ..< p0 + kc
// (row-major over oh × ow), into dst: the values im2col writes in row r, columns p0 …, zeros in
// the padding.
static void fill_patch_run(const kgemm_conv *cv, int r, int p0, int kc, float *dst) {
    const int taps = cv->kh * cv->kw, ci = r / taps, t = r % taps, ky = t / cv->kw, kx = t % cv->kw;
    const float *plane = cv->x + (size_t)ci * cv->h * cv->w;
    const int x0 = kx * cv->dw - cv->pw;
    for (int p = p0, end = p0 + kc; p < end;) {
        const int oy = p / cv->ow, ox = p % cv->ow;
        const int run = cv->ow - ox < end - p ? cv->ow - ox : end - p;
        float *d = dst + (p - p0);
        const int iy = oy * cv->sh - cv->ph + ky * cv->dh;
        if (iy < 0 || iy >= cv->h) {
            memset(d, 0, sizeof(float) * (size_t)run);
        } else {
            const float *row = plane + (size_t)iy * cv->w;
            if (cv->sw == 1) {  // columns ox + i, i in [lo, hi), read row[ox + i + x0]
                int lo = -x0 - ox, hi = cv->w - x0 - ox;
                if (lo < 0) lo = 0;
                if (hi > run) hi = run;
                if (hi < lo) hi = lo;
                memset(d, 0, sizeof(float) * (size_t)lo);
                memcpy(d + lo, row + ox + lo + x0, sizeof(float) * (size_t)(hi - lo));
                memset(d + hi, 0, sizeof(float) * (size_t)(run - hi));
            } else {
                for (int i = 0; i < run; i++) {
                    const int ix = (ox + i) * cv->sw + x0;
                    d[i] = ix >= 0 && ix < cv->w ? row[ix] : 0.0f;
                }
            }
        }
        p += run;
    }
}

// The transposed patch matrix as B (a weight gradient: B[p][r] = patch row r at output position
// p): each panel's NR patch rows built for the kc positions in a small buffer, then packed as
// pack_b packs a transposed matrix — the values and the layout pack_b(1, …) gives over im2col's
// matrix, without that matrix in memory.
static void pack_b_convt(const kgemm_conv *cv, int kc, int nc, int p0, int c0, float *pb) {
    static _Thread_local float run[NR * KC] __attribute__((aligned(64)));
    for (int j0 = 0; j0 < nc; j0 += NR) {
        const int nr = nc - j0 < NR ? nc - j0 : NR;
        for (int q = 0; q < nr; q++) fill_patch_run(cv, c0 + j0 + q, p0, kc, run + (size_t)q * kc);
        pack_b(1, kc, nr, run, kc, 0, 0, pb + (size_t)j0 * kc);
    }
}

// The blocked product over C[m0..<m1, n0..<n1]; B from a matrix (transB, b, ldb) or, when cv is
// given, from a convolution's image: its patch matrix, or with transB its transpose.
// With ap (A packed whole by KGEMM_PACK_A: m rows, every k block), the blocks of A are read from
// it instead of packed again: block (pc, ic) at ap + pc·mpad + ic·kc (mpad: m rounded up to MR;
// m0 and MC multiples of MR).
static void gemm(int transA, int transB, int m0, int m1, int n0, int n1, int k, float alpha,
                 const float *a, int lda, const float *ap, int mpad, const float *b, int ldb, const kgemm_conv *cv, float beta,
                 float *c, int ldc) {
    if (!tls_pa) {
        // One block for both (each part a multiple of 64 bytes: KC is).
        const size_t na = (size_t)(MC + MR) * KC, nb = (size_t)(NC + NR) * KC;
        float *block = aligned_alloc(64, sizeof(float) * (na + nb));
        if (!block) abort();  // 1–2 MB: out of memory is not recoverable here
        pthread_once(&tls_once, make_tls_key);
        if (pthread_setspecific(tls_key, block) != 0) abort();
        tls_pa = block;
        tls_pb = block + na;
    }
    float *pa = tls_pa, *pb = tls_pb;
    for (int jc = n0; jc < n1; jc += NC) {
        int nc = n1 - jc < NC ? n1 - jc : NC;
        for (int pc = 0; pc < k; pc += KC) {
            int kc = k - pc < KC ? k - pc : KC;
            float bt = pc == 0 ? beta : 1.0f;
            if (cv && transB) pack_b_convt(cv, kc, nc, pc, jc, pb);
            else if (cv) pack_b_conv(cv, kc, nc, pc, jc, pb);
            else pack_b(transB, kc, nc, b, ldb, pc, jc, pb);
            for (int ic = m0; ic < m1; ic += MC) {
                int mc = m1 - ic < MC ? m1 - ic : MC;
                const float *blockA = pa;
                if (ap) blockA = ap + (size_t)pc * mpad + (size_t)ic * kc;
                else pack_a(transA, mc, kc, a, lda, ic, pc, pa);
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        kernel(kc, blockA + (size_t)(ir / MR) * MR * kc, pb + (size_t)(jr / NR) * NR * kc,
                               c + (size_t)(ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, bt);
                    }
                }
            }
        }
    }
}

void KGEMM_BLOCK(int transA, int transB, int m0, int m1, int n0, int n1, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    gemm(transA, transB, m0, m1, n0, n1, k, alpha, a, lda, NULL, 0, b, ldb, NULL, beta, c, ldc);
}

size_t KGEMM_PACKED_A_FLOATS(int m, int k) { return (size_t)((m + MR - 1) / MR) * MR * (size_t)k + 16; }

// A (m × k, or with transA stored k × m) packed whole: each k block's panels, block pc at ap + pc·mpad.
static void pack_a_whole(int transA, int m, int k, const float *a, int lda, float *ap) {
    const size_t mpad = (size_t)((m + MR - 1) / MR) * MR;
    for (int pc = 0; pc < k; pc += KC) {
        int kc = k - pc < KC ? k - pc : KC;
        pack_a(transA, m, kc, a, lda, 0, pc, ap + (size_t)pc * mpad);
    }
}

void KGEMM_PACK_A(int m, int k, const float *a, int lda, float *ap) { pack_a_whole(0, m, k, a, lda, ap); }

void KGEMM_PACK_AT(int m, int k, const float *a, int lda, float *ap) { pack_a_whole(1, m, k, a, lda, ap); }

void KGEMM_BLOCK_PACKED_A(int m0, int m1, int n0, int n1, int k, float alpha, const float *ap, int m,
                          const float *b, int ldb, float beta, float *c, int ldc) {
    gemm(0, 0, m0, m1, n0, n1, k, alpha, NULL, 0, ap, (m + MR - 1) / MR * MR, b, ldb, NULL, beta, c, ldc);
}

void KGEMM_CONV_BLOCK(int m0, int m1, int n0, int n1, float alpha, const float *a, int lda, const kgemm_conv *conv,
                      float beta, float *c, int ldc) {
    int k = conv->channels * conv->kh * conv->kw;
    gemm(0, 0, m0, m1, n0, n1, k, alpha, a, lda, NULL, 0, NULL, 0, conv, beta, c, ldc);
}

void KGEMM_CONVT_BLOCK(int m0, int m1, int n0, int n1, float alpha, const float *a, int lda, const kgemm_conv *conv,
                       float beta, float *c, int ldc) {
    int k = conv->oh * conv->ow;
    gemm(0, 1, m0, m1, n0, n1, k, alpha, a, lda, NULL, 0, NULL, 0, conv, beta, c, ldc);
}

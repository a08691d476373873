// kgemm: a row-major single-precision GEMM, used in place of OpenBLAS's GEMM with this package's
// threads. Goto-style, with one micro-kernel per instruction set: AVX-512 (kgemm.c: B packed in
// 32-column panels, A in 14-row panels, a 14×32 register tile) and AVX2 + FMA (kgemm_avx2.c: 16-column
// panels, 6-row panels, a 6×16 tile). The machine's OpenBLAS is pinned to its AVX2 kernels and runs
// its own spinning threads beside ours.
#ifndef KGEMM_H
#define KGEMM_H

#include <stddef.h>

/// 1 when this processor can run kgemm's AVX-512 path (AVX-512F), else 0.
int kgemm_available(void);

/// 1 when this processor runs each 512-bit instruction as two 256-bit halves (AMD family 19h: Zen 4;
/// Zen 3 has no AVX-512), where the AVX2 kernels are the faster ones; else 0 (Intel, AMD Zen 5 and
/// later, which execute 512-bit vectors at full width).
int kgemm_avx512_split(void);

/// 1 when this processor can run kgemm's AVX2 path (AVX2 and FMA), else 0.
int kgemm_avx2_available(void);

/// C[m0..<m1, n0..<n1] = alpha · op(A)·op(B) + beta · C for that block of rows and columns, where
/// op(A) is m×k (A stored m×k with row stride lda, or k×m when transA), op(B) is k×n (B stored k×n
/// with row stride ldb, or n×k when transB), C is m×n with row stride ldc. beta = 0 never reads C.
/// Blocks that do not overlap may run on different threads at once (each thread packs into its own
/// buffers). Requires kgemm_available().
void kgemm_block(int transA, int transB, int m0, int m1, int n0, int n1, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/// A convolution's input image and geometry: the implicit B of kgemm_conv_block.
typedef struct {
    const float *x;           ///< the image, [channels, h, w]
    int channels, h, w;
    int kh, kw, sh, sw, ph, pw, dh, dw;  ///< kernel, stride, padding, dilation
    int oh, ow;               ///< the output size
} kgemm_conv;

/// kgemm_block with B the convolution's patch matrix (channels·kh·kw rows, oh·ow columns: what
/// im2col writes), packed straight from the image instead: C[m0..<m1, n0..<n1] = alpha · A·B + beta · C,
/// A the weights [m × channels·kh·kw] with row stride lda. The same result as im2col and kgemm_block,
/// bit for bit, without the patch matrix in memory.
void kgemm_conv_block(int m0, int m1, int n0, int n1, float alpha, const float *a, int lda, const kgemm_conv *conv,
                      float beta, float *c, int ldc);

/// kgemm_block with B the transpose of the convolution's patch matrix (oh·ow rows, channels·kh·kw
/// columns), packed straight from the image: a weight gradient, C[m0..<m1, n0..<n1] =
/// alpha · A·patchesᵀ + beta · C with A = dY [m × oh·ow] (row stride lda). The same result as
/// im2col and kgemm_block(transB = 1), bit for bit, without the patch matrix in memory.
void kgemm_convt_block(int m0, int m1, int n0, int n1, float alpha, const float *a, int lda, const kgemm_conv *conv,
                       float beta, float *c, int ldc);

/// A (m × k, row stride lda, not transposed) packed whole, once, for several products with it
/// (kgemm_block_packed_a): the floats the packed copy needs, and the packing. The layout is the
/// instruction set's own (14-row panels for kgemm, 6-row for kgemm_avx2).
size_t kgemm_packed_a_floats(int m, int k);
void kgemm_pack_a(int m, int k, const float *a, int lda, float *ap);
/// kgemm_pack_a of A stored transposed (k × m, row stride lda ≥ m): the same packed values as
/// kgemm_pack_a of the transposed copy, without making the copy.
void kgemm_pack_at(int m, int k, const float *a, int lda, float *ap);
/// kgemm_block (no transposes) with A from kgemm_pack_a (m: A's rows): the same kernels on the same
/// packed values, so the same bits as kgemm_block. m0 must be a multiple of the panel height (0).
void kgemm_block_packed_a(int m0, int m1, int n0, int n1, int k, float alpha, const float *ap, int m,
                          const float *b, int ldb, float beta, float *c, int ldc);
size_t kgemm_avx2_packed_a_floats(int m, int k);
void kgemm_avx2_pack_a(int m, int k, const float *a, int lda, float *ap);
void kgemm_avx2_pack_at(int m, int k, const float *a, int lda, float *ap);
void kgemm_avx2_block_packed_a(int m0, int m1, int n0, int n1, int k, float alpha, const float *ap, int m,
                               const float *b, int ldb, float beta, float *c, int ldc);

/// The most rows kgemm_small_m takes.
#define KGEMM_SMALL_M 4

/// As kgemm_block with neither operand transposed, for products of at most KGEMM_SMALL_M rows
/// (m1 − m0 ≤ 4), without packing. Each element of C sums its k products in order, in one pass.
void kgemm_small_m(int m0, int m1, int n0, int n1, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                   float beta, float *c, int ldc);

/// The AVX2 + FMA path (requires kgemm_avx2_available()): the same contracts as kgemm_block,
/// kgemm_conv_block, kgemm_convt_block and kgemm_small_m, with 6-row and 16-column register tiles.
void kgemm_avx2_block(int transA, int transB, int m0, int m1, int n0, int n1, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
void kgemm_avx2_conv_block(int m0, int m1, int n0, int n1, float alpha, const float *a, int lda, const kgemm_conv *conv,
                           float beta, float *c, int ldc);
void kgemm_avx2_convt_block(int m0, int m1, int n0, int n1, float alpha, const float *a, int lda, const kgemm_conv *conv,
                            float beta, float *c, int ldc);
/// C[i][j] = Σ_p A[i][p] · max(0, B[p][j] + bias[p]) for rows i < m ≤ KGEMM_SMALL_M and columns
/// n0 ≤ j < n1 (bias may be NULL): a few rows times a biased, ReLU'd B (0 for NaN) read as it goes,
/// never written. Each element's sum is kgemm_small_m's (fused multiply-adds in order from 0), so
/// the same bits as that product over the biased, ReLU'd matrix. Requires kgemm_avx2_available().
void kgemm_avx2_relu_bias_rows(int m, int k, int n0, int n1, const float *a, int lda, const float *b, int ldb,
                               const float *bias, float *c, int ldc);
void kgemm_avx2_small_m(int m0, int m1, int n0, int n1, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                        float beta, float *c, int ldc);

#endif

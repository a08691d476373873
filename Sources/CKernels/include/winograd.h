// Winograd F(2×2, 3×3) transforms of one image plane, in AVX-512 (used when kgemm_available()) and
// AVX2.
// Tiles are numbered t = i·tw + j (th = ⌈h/2⌉ rows, tw = ⌈w/2⌉ columns of tiles); tile (i, j)
// reads input rows 2i−1…2i+2 and columns 2j−1…2j+2 (zero outside: padding 1) and gives the output
// pixels (2i…2i+1, 2j…2j+1) that fall inside the plane.
#ifndef WINOGRAD_H
#define WINOGRAD_H

/// V = Bᵀ·d·B of every tile of the h×w plane x: element ξ (0…15) of tile t goes to v[ξ·vstride + t].
void winograd_input_tiles(const float *x, int h, int w, float *v, long vstride);

/// Y = Aᵀ·M·A + bias of every tile, element ξ of tile t read from mat[ξ·mstride + t], written
/// (or added, when accumulate) into the h×w plane y.
void winograd_output_tiles(const float *mat, long mstride, int h, int w, float bias, int accumulate, float *y);

/// U = G·g·Gᵀ of every kernel: weight [K, C, 3, 3] (or, when flipped, [C, K, 3, 3] with each
/// kernel turned 180°); element ξ of the pair (k, c) goes to u[ξ·K·C + k·C + c]. Output channels
/// k0 ..< k1 only (threads take disjoint ranges).
void winograd_weight_tiles(const float *weight, int K, int C, int flipped, int k0, int k1, float *u);

/// winograd_input_tiles, winograd_output_tiles and winograd_weight_tiles in AVX2 (the same bits), for processors without
/// AVX-512.
void winograd_input_tiles_avx2(const float *x, int h, int w, float *v, long vstride);
void winograd_output_tiles_avx2(const float *mat, long mstride, int h, int w, float bias, int accumulate, float *y);
void winograd_weight_tiles_avx2(const float *weight, int K, int C, int flipped, int k0, int k1, float *u);

// Winograd F(4×4, 3×3) (Lavin & Gray 2016, interpolation points 0, ±1, ±2): 36 products for each
// 4×4 block of outputs instead of 144. Tiles t = i·tw + j with th = ⌈h/4⌉, tw = ⌈w/4⌉; tile (i, j)
// reads input rows 4i−1…4i+4 and columns 4j−1…4j+4 (zero outside) and gives the output pixels
// (4i…4i+3, 4j…4j+3) inside the plane. AVX-512 and AVX2 + FMA (Sources/CKernels/winograd4.c).

/// V = Bᵀ·d·B of every 6×6 tile of x: element ξ (0…35, row-major) of tile t to v[ξ·vstride + t].
void winograd4_input_tiles(const float *x, int h, int w, float *v, long vstride);

/// Y = Aᵀ·M·A + bias of every tile (then max(0, ·) when relu), element ξ of tile t read from
/// mat[ξ·mstride + t], written (or, when accumulate, added) into the h×w plane y.
void winograd4_output_tiles(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y);

/// The two above by masked gathers and scatters, sixteen tiles across rows, for any plane (used when
/// the padded copy of a narrow plane cannot be allocated; the reference in tests).
void winograd4_input_tiles_gather(const float *x, int h, int w, float *v, long vstride);
void winograd4_output_tiles_scatter(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y);

/// U = G·g·Gᵀ (6×6) of every kernel, laid out as winograd_weight_tiles does with 36 planes.
void winograd4_weight_tiles(const float *weight, int K, int C, int flipped, int k0, int k1, float *u);

/// The three F(4×4) transforms in AVX2 + FMA, the same bits as the AVX-512 ones (eight tiles at a
/// time across rows, for every plane size).
void winograd4_input_tiles_avx2(const float *x, int h, int w, float *v, long vstride);
/// The same values by masked gathers, without a padded copy of the plane (used for a plane too large
/// for the copy when memory runs out; the reference in tests).
void winograd4_input_tiles_avx2_gather(const float *x, int h, int w, float *v, long vstride);
void winograd4_output_tiles_avx2(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y);
/// The same values with each tile row stored straight into y, edge tiles element by element (used
/// for a plane too large for the padded buffer when memory runs out; the reference in tests).
void winograd4_output_tiles_avx2_direct(const float *mat, long mstride, int h, int w, float bias, int accumulate, int relu, float *y);
void winograd4_weight_tiles_avx2(const float *weight, int K, int C, int flipped, int k0, int k1, float *u);

#endif

/*
** nm_matvec.h: neuromic's own matrix-vector kernels over contiguous rows,
** with a fixed, documented order of every rounding, so that a fused loop
** (a rank-1 update of a matrix and the next product with it, in one pass)
** gives the same bits as the two kernels one after the other. nm_gemv and
** nm_ger (nm_math.h) run on them wherever the operands have unit strides;
** the models' one-sample work uses them directly (nm_mlp.h's step,
** nm_bmvr.h's training loops, nm_microcircuit.h's dendritic potentials),
** so a model's C loop and its rules' tensor operations give the same
** bits. Multiversioned per ISA level (nm_simd.h): no version fuses a
** multiply and an add, and the order below does not depend on the vector
** width, so every level gives the same bits.
**
** A is row-major, m rows of n values with leading dimension lda >= n;
** vectors are contiguous. In the type of A (float or double):
**   product (nm_mv): r_i = the row-i dot product in 16 lanes: s_k for
**     k = 0..15 starts at 0 and adds a_ij x_j for j = k, k + 16, ... below
**     16 floor(n / 16), in order of j; then s_k += s_{k+8} (k < 8),
**     s_k += s_{k+4} (k < 4), s_k += s_{k+2} (k < 2), s_0 += s_1; then the
**     last n mod 16 products a_ij x_j in order of j: r_i = s_0. Every
**     product is rounded, then added.
**   transposed product (nm_mvt, A [k x m]): r_j = 0 + a_0j x_0 + a_1j x_1
**     + ... in order of the rows, each product rounded, then added.
**   output: y_i = a r_i with a = alpha rounded to the type (a r_i is r_i
**     when alpha is 1), then y_i = that + b y_i (b = beta rounded) unless
**     beta is 0, when y is written without being read.
**   rank-1 update (nm_rank1): c_i = a x_i (rounded), then a_ij += c_i u_j
**     (the product rounded, then added).
**   fused (nm_rank1_mv): row by row, the rank-1 update of row i, then r_i
**     of the updated row: the bits of nm_rank1 followed by nm_mv with
**     alpha 1 and beta 0, reading and writing A once.
** The kernels do not poll nm_interrupted: a call always completes, so the
** models that poll between their steps (one sample, one Euler step) keep
** whole steps; a matrix-vector pass is short even on large matrices (it
** streams A once). Never includes lua.h.
*/
#ifndef NM_MATVEC_H
#define NM_MATVEC_H

#include "nm_tensor.h"

/* The lanes of the product's partial sums. */
#define NM_MV_LANES 16

/* y [m] = alpha A x + beta y, A [m x n] (lda), x [n]. */
void nm_mv_f32(int64_t m, int64_t n, float alpha, const float *A, int64_t lda, const float *x,
               float beta, float *y);
void nm_mv_f64(int64_t m, int64_t n, double alpha, const double *A, int64_t lda,
               const double *x, double beta, double *y);

/* y [m] = alpha A^T x + beta y, A [k x m] (lda), x [k]. */
void nm_mvt_f32(int64_t k, int64_t m, float alpha, const float *A, int64_t lda, const float *x,
                float beta, float *y);
void nm_mvt_f64(int64_t k, int64_t m, double alpha, const double *A, int64_t lda,
                const double *x, double beta, double *y);

/* A [m x n] (lda) += alpha x u^T, x [m], u [n]. */
void nm_rank1_f32(int64_t m, int64_t n, float alpha, const float *x, const float *u, float *A,
                  int64_t lda);
void nm_rank1_f64(int64_t m, int64_t n, double alpha, const double *x, const double *u,
                  double *A, int64_t lda);

/* A += alpha x u^T, then y = A v: A [m x n] (lda), x [m], u, v [n], y [m]
** (y may not overlap A). The same bits as nm_rank1 then nm_mv (alpha 1,
** beta 0). */
void nm_rank1_mv_f32(int64_t m, int64_t n, float alpha, const float *x, const float *u,
                     float *A, int64_t lda, const float *v, float *y);
void nm_rank1_mv_f64(int64_t m, int64_t n, double alpha, const double *x, const double *u,
                     double *A, int64_t lda, const double *v, double *y);

#endif

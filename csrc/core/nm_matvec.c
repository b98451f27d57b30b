/*
** nm_matvec.c: the matrix-vector kernels of nm_matvec.h. The 16 lanes of
** the order are a GCC vector of 16 elements, which each ISA version
** splits into the registers it has (one zmm, two ymm or four xmm for
** float); rows go four at a time so that four sums are in flight.
*/
#include <string.h>

#include "nm_matvec.h"
#include "nm_simd.h"

/* Rows between two polls of nm_interrupted. */
#define POLL_ROWS 256

/* Unaligned loads and stores of 16 elements (VU: the vector type V with
** the element's alignment, allowed to alias it). */
#define load_f32(p) (*(const nm_vf32u *)(const void *)(p))
#define load_f64(p) (*(const nm_vf64u *)(const void *)(p))
#define store_f32(p, v) (*(nm_vf32u *)(void *)(p) = (v))
#define store_f64(p, v) (*(nm_vf64u *)(void *)(p) = (v))

#define MV_KERNELS(T, SUF, V)                                                     \
  /* s_0 after s_k += s_{k+8}, s_{k+4}, s_{k+2}, s_{k+1} */                       \
  static inline T fold_##SUF(const V *s) {                                        \
    T h[NM_MV_LANES];                                                             \
    memcpy(h, s, sizeof h);                                                       \
    for (int k = 0; k < 8; k++) h[k] += h[k + 8];                                 \
    for (int k = 0; k < 4; k++) h[k] += h[k + 4];                                 \
    for (int k = 0; k < 2; k++) h[k] += h[k + 2];                                 \
    return h[0] + h[1];                                                           \
  }                                                                               \
  static inline T finish_##SUF(T r, T alpha, T beta, const T *y) {                \
    T o = alpha == 1 ? r : alpha * r;                                             \
    return beta == 0 ? o : o + beta * *y;                                         \
  }                                                                               \
  NM_HOT int nm_mv_##SUF(int64_t m, int64_t n, T alpha, const T *A, int64_t lda,  \
                         const T *x, T beta, T *y) {                              \
    const int64_t nb = n / NM_MV_LANES * NM_MV_LANES;                             \
    int64_t i = 0;                                                                \
    for (; i + 4 <= m; i += 4) {                                                  \
      const T *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;  \
      V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};                                   \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES) {                             \
        V xv = load_##SUF(x + j);                                                 \
        s0 += load_##SUF(a0 + j) * xv;                                            \
        s1 += load_##SUF(a1 + j) * xv;                                            \
        s2 += load_##SUF(a2 + j) * xv;                                            \
        s3 += load_##SUF(a3 + j) * xv;                                            \
      }                                                                           \
      T r0 = fold_##SUF(&s0), r1 = fold_##SUF(&s1), r2 = fold_##SUF(&s2),            \
        r3 = fold_##SUF(&s3);                                                      \
      for (int64_t j = nb; j < n; j++) {                                          \
        r0 += a0[j] * x[j];                                                       \
        r1 += a1[j] * x[j];                                                       \
        r2 += a2[j] * x[j];                                                       \
        r3 += a3[j] * x[j];                                                       \
      }                                                                           \
      y[i] = finish_##SUF(r0, alpha, beta, y + i);                                \
      y[i + 1] = finish_##SUF(r1, alpha, beta, y + i + 1);                        \
      y[i + 2] = finish_##SUF(r2, alpha, beta, y + i + 2);                        \
      y[i + 3] = finish_##SUF(r3, alpha, beta, y + i + 3);                        \
      if (i % POLL_ROWS == 0 && nm_interrupted) return NM_EINTR;                  \
    }                                                                             \
    for (; i < m; i++) {                                                          \
      const T *a0 = A + i * lda;                                                  \
      V s0 = {0};                                                                 \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES)                               \
        s0 += load_##SUF(a0 + j) * load_##SUF(x + j);                             \
      T r0 = fold_##SUF(&s0);                                                      \
      for (int64_t j = nb; j < n; j++) r0 += a0[j] * x[j];                        \
      y[i] = finish_##SUF(r0, alpha, beta, y + i);                                \
    }                                                                             \
    return NM_OK;                                                                 \
  }                                                                               \
  /* r[q] = sum over the k rows of a[i lda + q] x_i, q < 4 NM_MV_LANES */        \
  static inline void mvt_block_##SUF(int64_t k, const T *a, int64_t lda,          \
                                     const T *x, T *r) {                          \
    V c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};                                     \
    for (int64_t i = 0; i < k; i++, a += lda) {                                   \
      T xi = x[i];                                                                \
      c0 += load_##SUF(a) * xi;                                                   \
      c1 += load_##SUF(a + NM_MV_LANES) * xi;                                     \
      c2 += load_##SUF(a + 2 * NM_MV_LANES) * xi;                                 \
      c3 += load_##SUF(a + 3 * NM_MV_LANES) * xi;                                 \
    }                                                                             \
    store_##SUF(r, c0);                                                           \
    store_##SUF(r + NM_MV_LANES, c1);                                             \
    store_##SUF(r + 2 * NM_MV_LANES, c2);                                         \
    store_##SUF(r + 3 * NM_MV_LANES, c3);                                         \
  }                                                                               \
  NM_HOT int nm_mvt_##SUF(int64_t k, int64_t m, T alpha, const T *A, int64_t lda, \
                          const T *x, T beta, T *y) {                             \
    enum { BLOCK = 4 * NM_MV_LANES };                                             \
    T r[BLOCK];                                                                   \
    int64_t j0 = 0;                                                               \
    for (; j0 + BLOCK <= m; j0 += BLOCK) {                                        \
      mvt_block_##SUF(k, A + j0, lda, x, r);                                      \
      for (int q = 0; q < BLOCK; q++)                                             \
        y[j0 + q] = finish_##SUF(r[q], alpha, beta, y + j0 + q);                  \
      if (nm_interrupted) return NM_EINTR;                                        \
    }                                                                             \
    if (j0 < m && m >= BLOCK) {                                                   \
      /* the last m mod BLOCK columns: the block ending at column m, overlapping  \
      ** the one before (each column's sum is the same whichever block has it) */ \
      const int64_t jb = m - BLOCK;                                               \
      mvt_block_##SUF(k, A + jb, lda, x, r);                                      \
      for (int64_t q = j0 - jb; q < BLOCK; q++)                                   \
        y[jb + q] = finish_##SUF(r[q], alpha, beta, y + jb + q);                  \
    } else if (j0 < m) {                /* fewer than BLOCK columns in all */     \
      const int64_t w = m - j0;                                                   \
      for (int64_t q = 0; q < w; q++) r[q] = 0;                                   \
      const T *a = A + j0;                                                        \
      for (int64_t i = 0; i < k; i++, a += lda) {                                 \
        T xi = x[i];                                                              \
        for (int64_t q = 0; q < w; q++) r[q] += a[q] * xi;                        \
      }                                                                           \
      for (int64_t q = 0; q < w; q++)                                             \
        y[j0 + q] = finish_##SUF(r[q], alpha, beta, y + j0 + q);                  \
    }                                                                             \
    return NM_OK;                                                                 \
  }                                                                               \
  NM_HOT int nm_rank1_##SUF(int64_t m, int64_t n, T alpha, const T *x, const T *u, \
                            T *A, int64_t lda) {                                  \
    const int64_t nb = n / NM_MV_LANES * NM_MV_LANES;                             \
    for (int64_t i = 0; i < m; i++) {                                             \
      T c = alpha * x[i];                                                         \
      T *a = A + i * lda;                                                         \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES)                               \
        store_##SUF(a + j, load_##SUF(a + j) + c * load_##SUF(u + j));            \
      for (int64_t j = nb; j < n; j++) a[j] += c * u[j];                          \
      if (i % POLL_ROWS == POLL_ROWS - 1 && nm_interrupted) return NM_EINTR;      \
    }                                                                             \
    return NM_OK;                                                                 \
  }                                                                               \
  NM_HOT int nm_rank1_mv_##SUF(int64_t m, int64_t n, T alpha, const T *x,         \
                               const T *u, T *A, int64_t lda, const T *v, T *y) { \
    const int64_t nb = n / NM_MV_LANES * NM_MV_LANES;                             \
    int64_t i = 0;                                                                \
    for (; i + 4 <= m; i += 4) {                                                  \
      T *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;        \
      T c0 = alpha * x[i], c1 = alpha * x[i + 1], c2 = alpha * x[i + 2],          \
        c3 = alpha * x[i + 3];                                                    \
      V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};                                   \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES) {                             \
        V uv = load_##SUF(u + j), vv = load_##SUF(v + j);                         \
        V w0 = load_##SUF(a0 + j) + c0 * uv, w1 = load_##SUF(a1 + j) + c1 * uv;   \
        V w2 = load_##SUF(a2 + j) + c2 * uv, w3 = load_##SUF(a3 + j) + c3 * uv;   \
        store_##SUF(a0 + j, w0);                                                  \
        store_##SUF(a1 + j, w1);                                                  \
        store_##SUF(a2 + j, w2);                                                  \
        store_##SUF(a3 + j, w3);                                                  \
        s0 += w0 * vv;                                                            \
        s1 += w1 * vv;                                                            \
        s2 += w2 * vv;                                                            \
        s3 += w3 * vv;                                                            \
      }                                                                           \
      T r0 = fold_##SUF(&s0), r1 = fold_##SUF(&s1), r2 = fold_##SUF(&s2),            \
        r3 = fold_##SUF(&s3);                                                      \
      for (int64_t j = nb; j < n; j++) {                                          \
        T w0 = a0[j] + c0 * u[j], w1 = a1[j] + c1 * u[j];                         \
        T w2 = a2[j] + c2 * u[j], w3 = a3[j] + c3 * u[j];                         \
        a0[j] = w0; a1[j] = w1; a2[j] = w2; a3[j] = w3;                           \
        r0 += w0 * v[j];                                                          \
        r1 += w1 * v[j];                                                          \
        r2 += w2 * v[j];                                                          \
        r3 += w3 * v[j];                                                          \
      }                                                                           \
      y[i] = r0; y[i + 1] = r1; y[i + 2] = r2; y[i + 3] = r3;                     \
      if (i % POLL_ROWS == 0 && nm_interrupted) return NM_EINTR;                  \
    }                                                                             \
    for (; i < m; i++) {                                                          \
      T *a0 = A + i * lda;                                                        \
      T c0 = alpha * x[i];                                                        \
      V s0 = {0};                                                                 \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES) {                             \
        V w0 = load_##SUF(a0 + j) + c0 * load_##SUF(u + j);                       \
        store_##SUF(a0 + j, w0);                                                  \
        s0 += w0 * load_##SUF(v + j);                                             \
      }                                                                           \
      T r0 = fold_##SUF(&s0);                                                      \
      for (int64_t j = nb; j < n; j++) {                                          \
        T w0 = a0[j] + c0 * u[j];                                                 \
        a0[j] = w0;                                                               \
        r0 += w0 * v[j];                                                          \
      }                                                                           \
      y[i] = r0;                                                                  \
    }                                                                             \
    return NM_OK;                                                                 \
  }

typedef float nm_vf32 __attribute__((vector_size(NM_MV_LANES * sizeof(float))));
typedef double nm_vf64 __attribute__((vector_size(NM_MV_LANES * sizeof(double))));
typedef float nm_vf32u __attribute__((vector_size(NM_MV_LANES * sizeof(float)),
                                      aligned(sizeof(float)), may_alias));
typedef double nm_vf64u __attribute__((vector_size(NM_MV_LANES * sizeof(double)),
                                       aligned(sizeof(double)), may_alias));

MV_KERNELS(float, f32, nm_vf32)
MV_KERNELS(double, f64, nm_vf64)

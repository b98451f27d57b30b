/*
** nm_matvec.c: the matrix-vector kernels of nm_matvec.h. The 16 lanes of
** the order are two GCC vectors of 8 elements, the low half (lanes 0-7)
** and the high half (lanes 8-15): one ymm (float) or zmm (double) each
** where the ISA version has them. (One vector of 16 elements, wider than
** the registers for double, made GCC keep the sums in memory: every add
** of the loop went through the stack.) Rows go four at a time so that four
** sums are in flight; their last n mod 16 products are added to the four
** sums as one 4-lane vector. The transposed product and the rank-1 update,
** whose columns are independent, use 64-byte vectors (W below). None of
** this changes a bit: lane k's sum and each column's are the same.
*/
#include "nm_matvec.h"
#include "nm_simd.h"

/* Unaligned loads and stores of 8 elements (HU: the half vector with the
** element's alignment, allowed to alias it). */
#define load_f32(p) (*(const nm_hf32u *)(const void *)(p))
#define load_f64(p) (*(const nm_hf64u *)(const void *)(p))
#define store_f32(p, v) (*(nm_hf32u *)(void *)(p) = (v))
#define store_f64(p, v) (*(nm_hf64u *)(void *)(p) = (v))
#define HALF 8
#define wload_f32(p) (*(const nm_wf32u *)(const void *)(p))
#define wload_f64(p) (*(const nm_wf64u *)(const void *)(p))
#define wstore_f32(p, v) (*(nm_wf32u *)(void *)(p) = (v))
#define wstore_f64(p, v) (*(nm_wf64u *)(void *)(p) = (v))

#define MV_KERNELS(T, SUF, H, Q, D, W, WN)                                     \
  /* s_0 after s_k += s_{k+8}, s_{k+4}, s_{k+2}, s_{k+1}, the lanes given in    \
  ** halves: each step one add of the low and the high half as vectors */       \
  static inline T fold_##SUF(const H *lo, const H *hi) {                        \
    H h8 = *lo + *hi;                                                           \
    Q h4 = __builtin_shufflevector(h8, h8, 0, 1, 2, 3) +                        \
           __builtin_shufflevector(h8, h8, 4, 5, 6, 7);                         \
    D h2 = __builtin_shufflevector(h4, h4, 0, 1) +                              \
           __builtin_shufflevector(h4, h4, 2, 3);                               \
    return h2[0] + h2[1];                                                       \
  }                                                                             \
  static inline T finish_##SUF(T r, T alpha, T beta, const T *y) {              \
    T o = alpha == 1 ? r : alpha * r;                                           \
    return beta == 0 ? o : o + beta * *y;                                       \
  }                                                                             \
  NM_HOT void nm_mv_##SUF(int64_t m, int64_t n, T alpha, const T *A,            \
                          int64_t lda, const T *x, T beta, T *y) {              \
    const int64_t nb = n / NM_MV_LANES * NM_MV_LANES;                           \
    int64_t i = 0;                                                              \
    for (; i + 4 <= m; i += 4) {                                                \
      const T *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda; \
      H l0 = {0}, l1 = {0}, l2 = {0}, l3 = {0}, h0 = {0}, h1 = {0}, h2 = {0},   \
        h3 = {0};                                                               \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES) {                           \
        H xl = load_##SUF(x + j), xh = load_##SUF(x + j + HALF);                \
        l0 += load_##SUF(a0 + j) * xl;                                          \
        h0 += load_##SUF(a0 + j + HALF) * xh;                                   \
        l1 += load_##SUF(a1 + j) * xl;                                          \
        h1 += load_##SUF(a1 + j + HALF) * xh;                                   \
        l2 += load_##SUF(a2 + j) * xl;                                          \
        h2 += load_##SUF(a2 + j + HALF) * xh;                                   \
        l3 += load_##SUF(a3 + j) * xl;                                          \
        h3 += load_##SUF(a3 + j + HALF) * xh;                                   \
      }                                                                         \
      /* the four rows' sums as one vector, the last products added to it */    \
      Q r = {fold_##SUF(&l0, &h0), fold_##SUF(&l1, &h1), fold_##SUF(&l2, &h2),  \
             fold_##SUF(&l3, &h3)};                                             \
      for (int64_t j = nb; j < n; j++) {                                        \
        Q col = {a0[j], a1[j], a2[j], a3[j]};                                   \
        r += col * x[j];                                                        \
      }                                                                         \
      y[i] = finish_##SUF(r[0], alpha, beta, y + i);                            \
      y[i + 1] = finish_##SUF(r[1], alpha, beta, y + i + 1);                    \
      y[i + 2] = finish_##SUF(r[2], alpha, beta, y + i + 2);                    \
      y[i + 3] = finish_##SUF(r[3], alpha, beta, y + i + 3);                    \
    }                                                                           \
    for (; i < m; i++) {                                                        \
      const T *a0 = A + i * lda;                                                \
      H l0 = {0}, h0 = {0};                                                     \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES) {                           \
        l0 += load_##SUF(a0 + j) * load_##SUF(x + j);                           \
        h0 += load_##SUF(a0 + j + HALF) * load_##SUF(x + j + HALF);             \
      }                                                                         \
      T r0 = fold_##SUF(&l0, &h0);                                              \
      for (int64_t j = nb; j < n; j++) r0 += a0[j] * x[j];                      \
      y[i] = finish_##SUF(r0, alpha, beta, y + i);                              \
    }                                                                           \
  }                                                                             \
  /* r[q] = sum over the k rows of a[i lda + q] x_i, q < BLOCK = 4 WN */        \
  static inline void mvt_block_##SUF(int64_t k, const T *a, int64_t lda,        \
                                     const T *x, T *r) {                        \
    W c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};                                   \
    for (int64_t i = 0; i < k; i++, a += lda) {                                 \
      T xi = x[i];                                                              \
      c0 += wload_##SUF(a) * xi;                                                \
      c1 += wload_##SUF(a + WN) * xi;                                           \
      c2 += wload_##SUF(a + 2 * WN) * xi;                                       \
      c3 += wload_##SUF(a + 3 * WN) * xi;                                       \
    }                                                                           \
    wstore_##SUF(r, c0);                                                        \
    wstore_##SUF(r + WN, c1);                                                   \
    wstore_##SUF(r + 2 * WN, c2);                                               \
    wstore_##SUF(r + 3 * WN, c3);                                               \
  }                                                                             \
  NM_HOT void nm_mvt_##SUF(int64_t k, int64_t m, T alpha, const T *A,           \
                           int64_t lda, const T *x, T beta, T *y) {             \
    enum { BLOCK = 4 * WN };                                                  \
    T r[BLOCK];                                                                 \
    int64_t j0 = 0;                                                             \
    for (; j0 + BLOCK <= m; j0 += BLOCK) {                                      \
      mvt_block_##SUF(k, A + j0, lda, x, r);                                    \
      for (int q = 0; q < BLOCK; q++)                                           \
        y[j0 + q] = finish_##SUF(r[q], alpha, beta, y + j0 + q);                \
    }                                                                           \
    if (j0 < m && m >= BLOCK) {                                                 \
      /* the last m mod BLOCK columns: the block ending at column m,            \
      ** overlapping the one before (each column's sum is the same whichever    \
      ** block has it) */                                                       \
      const int64_t jb = m - BLOCK;                                             \
      mvt_block_##SUF(k, A + jb, lda, x, r);                                    \
      for (int64_t q = j0 - jb; q < BLOCK; q++)                                 \
        y[jb + q] = finish_##SUF(r[q], alpha, beta, y + jb + q);                \
    } else if (j0 < m) {                /* fewer than BLOCK columns in all */   \
      const int64_t w = m - j0;                                                 \
      for (int64_t q = 0; q < w; q++) r[q] = 0;                                 \
      const T *a = A + j0;                                                      \
      for (int64_t i = 0; i < k; i++, a += lda) {                               \
        T xi = x[i];                                                            \
        for (int64_t q = 0; q < w; q++) r[q] += a[q] * xi;                      \
      }                                                                         \
      for (int64_t q = 0; q < w; q++)                                           \
        y[j0 + q] = finish_##SUF(r[q], alpha, beta, y + j0 + q);                \
    }                                                                           \
  }                                                                             \
  NM_HOT void nm_rank1_##SUF(int64_t m, int64_t n, T alpha, const T *x,         \
                             const T *u, T *A, int64_t lda) {                   \
    const int64_t nb = n / WN * WN;                                         \
    for (int64_t i = 0; i < m; i++) {                                           \
      T c = alpha * x[i];                                                       \
      T *a = A + i * lda;                                                       \
      for (int64_t j = 0; j < nb; j += WN)                                    \
        wstore_##SUF(a + j, wload_##SUF(a + j) + c * wload_##SUF(u + j));          \
      int64_t j = nb;                                                           \
      for (; j + HALF <= n; j += HALF)       /* then halves: n = 10 is one */   \
        store_##SUF(a + j, load_##SUF(a + j) + c * load_##SUF(u + j));          \
      for (; j < n; j++) a[j] += c * u[j];                                      \
    }                                                                           \
  }                                                                             \
  NM_HOT void nm_rank1_mv_##SUF(int64_t m, int64_t n, T alpha, const T *x,      \
                                const T *u, T *A, int64_t lda, const T *v,      \
                                T *y) {                                         \
    const int64_t nb = n / NM_MV_LANES * NM_MV_LANES;                           \
    int64_t i = 0;                                                              \
    for (; i + 4 <= m; i += 4) {                                                \
      T *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;      \
      T c0 = alpha * x[i], c1 = alpha * x[i + 1], c2 = alpha * x[i + 2],        \
        c3 = alpha * x[i + 3];                                                  \
      H l0 = {0}, l1 = {0}, l2 = {0}, l3 = {0}, h0 = {0}, h1 = {0}, h2 = {0},   \
        h3 = {0};                                                               \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES) {                           \
        H ul = load_##SUF(u + j), uh = load_##SUF(u + j + HALF);                \
        H vl = load_##SUF(v + j), vh = load_##SUF(v + j + HALF);                \
        H w0 = load_##SUF(a0 + j) + c0 * ul, g0 = load_##SUF(a0 + j + HALF) + c0 * uh; \
        H w1 = load_##SUF(a1 + j) + c1 * ul, g1 = load_##SUF(a1 + j + HALF) + c1 * uh; \
        H w2 = load_##SUF(a2 + j) + c2 * ul, g2 = load_##SUF(a2 + j + HALF) + c2 * uh; \
        H w3 = load_##SUF(a3 + j) + c3 * ul, g3 = load_##SUF(a3 + j + HALF) + c3 * uh; \
        store_##SUF(a0 + j, w0);                                                \
        store_##SUF(a0 + j + HALF, g0);                                         \
        store_##SUF(a1 + j, w1);                                                \
        store_##SUF(a1 + j + HALF, g1);                                         \
        store_##SUF(a2 + j, w2);                                                \
        store_##SUF(a2 + j + HALF, g2);                                         \
        store_##SUF(a3 + j, w3);                                                \
        store_##SUF(a3 + j + HALF, g3);                                         \
        l0 += w0 * vl;                                                          \
        h0 += g0 * vh;                                                          \
        l1 += w1 * vl;                                                          \
        h1 += g1 * vh;                                                          \
        l2 += w2 * vl;                                                          \
        h2 += g2 * vh;                                                          \
        l3 += w3 * vl;                                                          \
        h3 += g3 * vh;                                                          \
      }                                                                         \
      T r0 = fold_##SUF(&l0, &h0), r1 = fold_##SUF(&l1, &h1), r2 = fold_##SUF(&l2, &h2), \
        r3 = fold_##SUF(&l3, &h3);                                              \
      for (int64_t j = nb; j < n; j++) {                                        \
        T w0 = a0[j] + c0 * u[j], w1 = a1[j] + c1 * u[j];                       \
        T w2 = a2[j] + c2 * u[j], w3 = a3[j] + c3 * u[j];                       \
        a0[j] = w0; a1[j] = w1; a2[j] = w2; a3[j] = w3;                         \
        r0 += w0 * v[j];                                                        \
        r1 += w1 * v[j];                                                        \
        r2 += w2 * v[j];                                                        \
        r3 += w3 * v[j];                                                        \
      }                                                                         \
      y[i] = r0; y[i + 1] = r1; y[i + 2] = r2; y[i + 3] = r3;                   \
    }                                                                           \
    for (; i < m; i++) {                                                        \
      T *a0 = A + i * lda;                                                      \
      T c0 = alpha * x[i];                                                      \
      H l0 = {0}, h0 = {0};                                                     \
      for (int64_t j = 0; j < nb; j += NM_MV_LANES) {                           \
        H w0 = load_##SUF(a0 + j) + c0 * load_##SUF(u + j);                     \
        H g0 = load_##SUF(a0 + j + HALF) + c0 * load_##SUF(u + j + HALF);       \
        store_##SUF(a0 + j, w0);                                                \
        store_##SUF(a0 + j + HALF, g0);                                         \
        l0 += w0 * load_##SUF(v + j);                                           \
        h0 += g0 * load_##SUF(v + j + HALF);                                    \
      }                                                                         \
      T r0 = fold_##SUF(&l0, &h0);                                              \
      for (int64_t j = nb; j < n; j++) {                                        \
        T w0 = a0[j] + c0 * u[j];                                               \
        a0[j] = w0;                                                             \
        r0 += w0 * v[j];                                                        \
      }                                                                         \
      y[i] = r0;                                                                \
    }                                                                           \
  }

/* Half of the 16 lanes (H), a quarter (Q), two (D); HU for loads and stores. */
typedef float nm_hf32 __attribute__((vector_size(HALF * sizeof(float))));
typedef double nm_hf64 __attribute__((vector_size(HALF * sizeof(double))));
typedef float nm_hf32u __attribute__((vector_size(HALF * sizeof(float)),
                                      aligned(sizeof(float)), may_alias));
typedef double nm_hf64u __attribute__((vector_size(HALF * sizeof(double)),
                                       aligned(sizeof(double)), may_alias));
typedef float nm_qf32 __attribute__((vector_size(4 * sizeof(float))));
typedef double nm_qf64 __attribute__((vector_size(4 * sizeof(double))));
typedef float nm_df32 __attribute__((vector_size(2 * sizeof(float))));
typedef double nm_df64 __attribute__((vector_size(2 * sizeof(double))));

/* 64 bytes (W: one zmm, where the ISA version has them) for the kernels
** whose columns are independent (the transposed product, the rank-1
** update): measured faster than halves for float (mvt 256 x 256: 2.0
** against 2.9 us). */
typedef float nm_wf32u __attribute__((vector_size(16 * sizeof(float)),
                                      aligned(sizeof(float)), may_alias));
typedef float nm_wf32 __attribute__((vector_size(16 * sizeof(float))));
#define nm_wf64 nm_hf64
#define nm_wf64u nm_hf64u

MV_KERNELS(float, f32, nm_hf32, nm_qf32, nm_df32, nm_wf32, 16)
MV_KERNELS(double, f64, nm_hf64, nm_qf64, nm_df64, nm_wf64, 8)

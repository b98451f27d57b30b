/*
** nm_plastic.c: fused kernels for hot plasticity rules: the gated
** outer-product update and Oja's subspace rule (see nm_plastic.h).
*/
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cblas.h>

#include "nm_plastic.h"
#include "nm_math.h"
#include "nm_pool.h"
#include "nm_simd.h"
#include "nm_vmath.h"

/* ---------------------------------------------------------------------- */
/* Shapes */

/* Rows (batch size) and columns of a 1-D (one sample) or 2-D operand. */
static int64_t nrows(const nm_tensor *t) { return t->ndim == 2 ? t->size[0] : 1; }
static int64_t ncols(const nm_tensor *t) { return t->size[t->ndim - 1]; }
/* Stride between samples and between units of a 1-D or 2-D operand. */
static int64_t rstride(const nm_tensor *t) { return t->ndim == 2 ? t->stride[0] : 0; }
static int64_t cstride(const nm_tensor *t) { return t->stride[t->ndim - 1]; }

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* How cblas (row-major) sees a 2-D tensor: as stored (NoTrans) or as the
** transpose of a row-major matrix (Trans), with its leading dimension. */
typedef struct {
  CBLAS_TRANSPOSE trans;
  int64_t ld;
} blas_layout;

static int layout_of(const nm_tensor *t, blas_layout *out) {
  int64_t r = t->size[0], c = t->size[1];
  out->trans = CblasNoTrans;        /* defined even when t does not fit */
  out->ld = 0;
  int64_t s0 = t->stride[0], s1 = t->stride[1];
  if ((s1 == 1 || c <= 1) && (r <= 1 || s0 >= (c > 1 ? c : 1))) {
    out->trans = CblasNoTrans;
    out->ld = r <= 1 ? (c > 1 ? c : 1) : s0;
    return 1;
  }
  if ((s0 == 1 || r <= 1) && (c <= 1 || s1 >= (r > 1 ? r : 1))) {
    out->trans = CblasTrans;
    out->ld = c <= 1 ? (r > 1 ? r : 1) : s1;
    return 1;
  }
  return 0;
}

int nm_blas_compatible(const nm_tensor *t) {
  blas_layout l;
  return t->ndim == 2 && layout_of(t, &l) && fits_int(l.ld) &&
         fits_int(t->size[0]) && fits_int(t->size[1]);
}

/* A 1-D or 2-D operand is usable when it is a vector (any non-zero
** stride) or a cblas-compatible matrix. */
static int operand_ok(const nm_tensor *t) {
  if (t->ndim == 1) return fits_int(t->size[0]) && (t->size[0] <= 1 || t->stride[0] > 0);
  return nm_blas_compatible(t);
}

static CBLAS_TRANSPOSE flip(CBLAS_TRANSPOSE t, int logical_trans) {
  int tr = (t == CblasTrans) ^ (logical_trans != 0);
  return tr ? CblasTrans : CblasNoTrans;
}

/* C = alpha op(A) op(B) + beta C, where op transposes when ta/tb is set;
** the operands are 2-D and cblas-compatible, shapes already checked. */
static void gemm(nm_dtype dt, int64_t M, int64_t N, int64_t K, double alpha,
                 const nm_tensor *A, int ta, const nm_tensor *B, int tb,
                 double beta, const nm_tensor *C) {
  blas_layout la, lb, lc;
  if (M == 0 || N == 0) return;
  layout_of(A, &la);
  layout_of(B, &lb);
  layout_of(C, &lc);
  CBLAS_TRANSPOSE opa = flip(la.trans, ta), opb = flip(lb.trans, tb);
  if (lc.trans == CblasNoTrans)
    nm_blas_gemm(dt, opa == CblasTrans, opb == CblasTrans, (int)M, (int)N, (int)K, alpha,
                 A->data, (int)la.ld, B->data, (int)lb.ld, beta, C->data, (int)lc.ld);
  else   /* C is stored transposed: compute C^T = op(B)^T op(A)^T */
    nm_blas_gemm(dt, flip(lb.trans, !tb) == CblasTrans, flip(la.trans, !ta) == CblasTrans,
                 (int)N, (int)M, (int)K, alpha, B->data, (int)lb.ld, A->data, (int)la.ld, beta,
                 C->data, (int)lc.ld);
}

/* W (m x n) += alpha x y^T for vectors given by pointer and stride: nm_ger
** (nm_matvec.h's rank-1 update, the bits nm_mlp.h's fused step repeats). */
static int ger(const nm_tensor *W, double alpha, const void *x, int64_t incx, const void *y,
               int64_t incy) {
  nm_tensor w = *W, xv, yv;
  int64_t m = W->size[0], n = W->size[1];
  nm_init_contiguous(&xv, W->dtype, 1, &m);
  nm_init_contiguous(&yv, W->dtype, 1, &n);
  xv.data = (void *)(uintptr_t)x;
  yv.data = (void *)(uintptr_t)y;
  xv.stride[0] = incx;
  yv.stride[0] = incy;
  return nm_ger(&w, alpha, &xv, &yv);
}

/* A scratch matrix header over `mem`, contiguous rows x cols. */
static nm_tensor scratch_matrix(nm_dtype dt, void *mem, int64_t rows, int64_t cols) {
  nm_tensor s;
  int64_t size[2] = {rows, cols};
  nm_init_contiguous(&s, dt, 2, size);
  s.data = mem;
  return s;
}

/* ---------------------------------------------------------------------- */
/* Element loops, written once per element type. */

#define DEFINE_LOOPS(T, SUF)                                                     \
  /* G = post .* gate into contiguous B x m. */                                  \
  NM_HOT static void gate_##SUF(T *G, const nm_tensor *post, const nm_tensor *gate) {  \
    int64_t B = nrows(post), m = ncols(post);                                   \
    const T *p = (const T *)post->data, *g = (const T *)gate->data;             \
    int64_t pr = rstride(post), pc = cstride(post);                             \
    int64_t gr = rstride(gate), gc = cstride(gate);                             \
    for (int64_t s = 0; s < B; s++)                                              \
      for (int64_t i = 0; i < m; i++)                                            \
        G[s * m + i] = p[s * pr + i * pc] * g[s * gr + i * gc];                  \
  }                                                                              \
  /* b += alpha * column sums of the B x m operand G, each summed in double  \
  ** from row 0 down; a block of columns at a time, row by row, so that a     \
  ** row-major G is read along its rows (vectorised), not down each column. */\
  NM_HOT static void bias_##SUF(const nm_tensor *b, double alpha, const T *G,          \
                         int64_t B, int64_t m, int64_t gr, int64_t gc) {         \
    enum { BLOCK = 256 };                                                        \
    double acc[BLOCK];                                                           \
    T *bd = (T *)b->data;                                                        \
    int64_t bs = b->stride[0];                                                   \
    for (int64_t i0 = 0; i0 < m; i0 += BLOCK) {                                  \
      int64_t len = m - i0 < BLOCK ? m - i0 : BLOCK;                             \
      for (int64_t j = 0; j < len; j++) acc[j] = 0;                              \
      for (int64_t s = 0; s < B; s++) {                                          \
        const T *g = G + s * gr + i0 * gc;                                       \
        if (gc == 1)                                                             \
          for (int64_t j = 0; j < len; j++) acc[j] += g[j];                      \
        else                                                                     \
          for (int64_t j = 0; j < len; j++) acc[j] += g[j * gc];                 \
      }                                                                          \
      for (int64_t j = 0; j < len; j++) bd[(i0 + j) * bs] += (T)(alpha * acc[j]); \
    }                                                                            \
  }                                                                              \
  /* W += alpha * S .* mask (mask may be NULL); S contiguous m x n. */          \
  NM_HOT static void add_masked_##SUF(const nm_tensor *W, double alpha, const T *S,    \
                               const nm_tensor *mask) {                          \
    int64_t m = W->size[0], n = W->size[1];                                      \
    T *w = (T *)W->data;                                                         \
    int64_t w0 = W->stride[0], w1 = W->stride[1];                                \
    T a = (T)alpha;                                                              \
    if (mask == NULL) {                                                          \
      for (int64_t i = 0; i < m; i++) {                                          \
        T *wr = w + i * w0;                                                      \
        const T *sr = S + i * n;                                                 \
        if (w1 == 1)                                                             \
          for (int64_t j = 0; j < n; j++) wr[j] += a * sr[j];                    \
        else                                                                     \
          for (int64_t j = 0; j < n; j++) wr[j * w1] += a * sr[j];               \
      }                                                                          \
      return;                                                                    \
    }                                                                            \
    const T *k = (const T *)mask->data;                                          \
    int64_t k0 = mask->stride[0], k1 = mask->stride[1];                          \
    for (int64_t i = 0; i < m; i++) {                                            \
      T *wr = w + i * w0;                                                        \
      const T *sr = S + i * n, *kr = k + i * k0;                                 \
      if (w1 == 1 && k1 == 1)                                                    \
        for (int64_t j = 0; j < n; j++) wr[j] += a * sr[j] * kr[j];              \
      else                                                                       \
        for (int64_t j = 0; j < n; j++) wr[j * w1] += a * sr[j] * kr[j * k1];    \
    }                                                                            \
  }                                                                              \
  /* W += alpha * (x y^T) .* mask for strided vectors x (m), y (n). */          \
  NM_HOT static void ger_masked_##SUF(const nm_tensor *W, double alpha, const T *x,    \
                               int64_t incx, const T *y, int64_t incy,          \
                               const nm_tensor *mask) {                          \
    int64_t m = W->size[0], n = W->size[1];                                      \
    T *w = (T *)W->data;                                                         \
    const T *k = (const T *)mask->data;                                          \
    int64_t w0 = W->stride[0], w1 = W->stride[1];                                \
    int64_t k0 = mask->stride[0], k1 = mask->stride[1];                          \
    for (int64_t i = 0; i < m; i++) {                                            \
      T ax = (T)alpha * x[i * incx];                                             \
      T *wr = w + i * w0;                                                        \
      const T *kr = k + i * k0;                                                  \
      if (ax == 0) continue;                                                     \
      if (w1 == 1 && k1 == 1 && incy == 1)                                       \
        for (int64_t j = 0; j < n; j++) wr[j] += ax * y[j] * kr[j];              \
      else                                                                       \
        for (int64_t j = 0; j < n; j++) wr[j * w1] += ax * y[j * incy] * kr[j * k1]; \
    }                                                                            \
  }                                                                              \
  /* r = x (strided) copied into contiguous r. */                                \
  static void copy_vec_##SUF(T *r, const T *x, int64_t n, int64_t incx) {       \
    for (int64_t j = 0; j < n; j++) r[j] = x[j * incx];                          \
  }

DEFINE_LOOPS(float, f)
DEFINE_LOOPS(double, d)

/* ---------------------------------------------------------------------- */
/* Gated outer-product update */

const char *nm_plastic_outer_check(const nm_tensor *W, const nm_tensor *post,
                                   const nm_tensor *gate, const nm_tensor *pre,
                                   const nm_tensor *mask, const nm_tensor *b, int *which) {
#define FAIL(k, msg) do { *which = (k); return (msg); } while (0)
  if (W->ndim != 2) FAIL(0, "weight must be a 2-D tensor");
  if (post->ndim < 1 || post->ndim > 2) FAIL(1, "post must be 1-D or 2-D");
  if (pre->ndim != post->ndim) FAIL(3, "pre and post must both be 1-D or both 2-D");
  if (ncols(post) != W->size[0]) FAIL(1, "post size differs from the weight's rows");
  if (ncols(pre) != W->size[1]) FAIL(3, "pre size differs from the weight's columns");
  if (nrows(pre) != nrows(post)) FAIL(3, "pre and post have different batch sizes");
  if (gate != NULL && !nm_same_shape(gate, post)) FAIL(2, "gate must have the shape of post");
  if (mask != NULL && !nm_same_shape(mask, W)) FAIL(4, "mask must have the shape of the weight");
  if (b != NULL && (b->ndim != 1 || b->size[0] != W->size[0]))
    FAIL(5, "bias must be a vector of the weight's rows");
  if (post->dtype != W->dtype || pre->dtype != W->dtype ||
      (gate != NULL && gate->dtype != W->dtype) ||
      (mask != NULL && mask->dtype != W->dtype) || (b != NULL && b->dtype != W->dtype))
    FAIL(1, "all operands must have the weight's dtype");
  if (!nm_blas_compatible(W)) FAIL(0, "weight needs a unit stride");
  if (!operand_ok(post) || !operand_ok(pre)) FAIL(operand_ok(post) ? 3 : 1, "pre and post need a unit stride (use :contiguous())");
  *which = -1;
  return NULL;
#undef FAIL
}

size_t nm_plastic_outer_scratch(const nm_tensor *W, const nm_tensor *post,
                                const nm_tensor *gate, const nm_tensor *mask) {
  int64_t B = nrows(post), m = W->size[0], n = W->size[1];
  size_t need = 0;
  if (gate != NULL) need += (size_t)(B * m);
  if (mask != NULL && B > 1) need += (size_t)(m * n);
  return need;
}

void nm_plastic_outer_bias(const nm_tensor *b, double alpha, const nm_tensor *post) {
  int64_t B = nrows(post), m = ncols(post), gr = rstride(post), gc = cstride(post);
  if (B == 0) return;
  if (b->dtype == NM_FLOAT32) bias_f(b, alpha, (const float *)post->data, B, m, gr, gc);
  else bias_d(b, alpha, (const double *)post->data, B, m, gr, gc);
}

int nm_plastic_outer(const nm_tensor *W, double alpha, const nm_tensor *post,
                     const nm_tensor *gate, const nm_tensor *pre,
                     const nm_tensor *mask, const nm_tensor *b, void *scratch) {
  nm_dtype dt = W->dtype;
  size_t es = nm_dtype_size(dt);
  int64_t B = nrows(post), m = W->size[0], n = W->size[1];
  /* No samples: nothing to add (and the scratch may be absent). */
  if (B == 0) return NM_OK;
  char *mem = (char *)scratch;
  /* G: the (gated) postsynaptic factor, B x m, with its strides. */
  const void *G = post->data;
  int64_t gr = rstride(post), gc = cstride(post);
  nm_tensor Gt = *post;
  if (gate != NULL) {
    if (dt == NM_FLOAT32) gate_f((float *)mem, post, gate);
    else gate_d((double *)mem, post, gate);
    G = mem;
    gr = m;
    gc = 1;
    Gt = scratch_matrix(dt, mem, B, m);   /* only used as a matrix when B > 1 */
    mem += (size_t)(B * m) * es;
  }
  if (b != NULL) {
    if (dt == NM_FLOAT32) bias_f(b, alpha, (const float *)G, B, m, gr, gc);
    else bias_d(b, alpha, (const double *)G, B, m, gr, gc);
  }
  if (B == 1) {
    int64_t incp = cstride(pre);
    if (mask == NULL)
      return ger(W, alpha, G, gc, pre->data, incp);
    else if (dt == NM_FLOAT32)
      ger_masked_f(W, alpha, (const float *)G, gc, (const float *)pre->data, incp, mask);
    else
      ger_masked_d(W, alpha, (const double *)G, gc, (const double *)pre->data, incp, mask);
    return NM_OK;
  }
  if (mask == NULL) {
    gemm(dt, m, n, B, alpha, &Gt, 1, pre, 0, 1.0, W);
    return NM_OK;
  }
  nm_tensor S = scratch_matrix(dt, mem, m, n);
  gemm(dt, m, n, B, 1.0, &Gt, 1, pre, 0, 0.0, &S);
  if (dt == NM_FLOAT32) add_masked_f(W, alpha, (const float *)S.data, mask);
  else add_masked_d(W, alpha, (const double *)S.data, mask);
  return NM_OK;
}

/* ---------------------------------------------------------------------- */
/* Oja's subspace rule */

const char *nm_plastic_oja_check(const nm_tensor *W, const nm_tensor *Y,
                                 const nm_tensor *X, const nm_tensor *mask, int *which) {
#define FAIL(k, msg) do { *which = (k); return (msg); } while (0)
  if (W->ndim != 2) FAIL(0, "weight must be a 2-D tensor");
  if (Y->ndim < 1 || Y->ndim > 2) FAIL(1, "y must be 1-D or 2-D");
  if (X->ndim != Y->ndim) FAIL(2, "x and y must both be 1-D or both 2-D");
  if (ncols(Y) != W->size[0]) FAIL(1, "y size differs from the weight's rows");
  if (ncols(X) != W->size[1]) FAIL(2, "x size differs from the weight's columns");
  if (nrows(X) != nrows(Y)) FAIL(2, "x and y have different batch sizes");
  if (mask != NULL && !nm_same_shape(mask, W)) FAIL(3, "mask must have the shape of the weight");
  if (Y->dtype != W->dtype || X->dtype != W->dtype ||
      (mask != NULL && mask->dtype != W->dtype))
    FAIL(1, "all operands must have the weight's dtype");
  if (!nm_blas_compatible(W)) FAIL(0, "weight needs a unit stride");
  if (!operand_ok(Y) || !operand_ok(X)) FAIL(operand_ok(Y) ? 2 : 1, "x and y need a unit stride (use :contiguous())");
  *which = -1;
  return NULL;
#undef FAIL
}

size_t nm_plastic_oja_scratch(const nm_tensor *W, const nm_tensor *Y) {
  int64_t B = nrows(Y), m = W->size[0], n = W->size[1];
  if (B == 1) return (size_t)n;
  return (size_t)(m * m + m * n);
}

int nm_plastic_oja(const nm_tensor *W, double alpha, const nm_tensor *Y,
                   const nm_tensor *X, const nm_tensor *mask, void *scratch) {
  nm_dtype dt = W->dtype;
  int64_t B = nrows(Y), m = W->size[0], n = W->size[1];
  if (m == 0 || n == 0) return NM_OK;
  if (B == 1) {
    /* r = x - W^T y (nm_gemv on W's transposed header), then
    ** W += alpha y r^T: r uses the old W. */
    int64_t incy = cstride(Y) ? cstride(Y) : 1, incx = cstride(X);
    nm_tensor wt = *W, yv, rv;
    wt.size[0] = n; wt.size[1] = m;
    wt.stride[0] = W->stride[1]; wt.stride[1] = W->stride[0];
    nm_init_contiguous(&yv, dt, 1, &m);
    yv.data = Y->data;
    yv.stride[0] = incy;
    nm_init_contiguous(&rv, dt, 1, &n);
    rv.data = scratch;
    if (dt == NM_FLOAT32) copy_vec_f((float *)scratch, (const float *)X->data, n, incx);
    else copy_vec_d((double *)scratch, (const double *)X->data, n, incx);
    int st = nm_gemv(&rv, -1.0, &wt, &yv, 1.0);
    if (st != NM_OK) return st;
    if (mask == NULL) return ger(W, alpha, Y->data, incy, scratch, 1);
    if (dt == NM_FLOAT32)
      ger_masked_f(W, alpha, (const float *)Y->data, incy, (const float *)scratch, 1, mask);
    else
      ger_masked_d(W, alpha, (const double *)Y->data, incy, (const double *)scratch, 1, mask);
    return NM_OK;
  }
  size_t es = nm_dtype_size(dt);
  nm_tensor C = scratch_matrix(dt, scratch, m, m);
  nm_tensor S = scratch_matrix(dt, (char *)scratch + (size_t)(m * m) * es, m, n);
  gemm(dt, m, m, B, 1.0, Y, 1, Y, 0, 0.0, &C);     /* C = Y^T Y */
  gemm(dt, m, n, B, 1.0, Y, 1, X, 0, 0.0, &S);     /* S = Y^T X */
  gemm(dt, m, n, m, -1.0, &C, 0, W, 0, 1.0, &S);   /* S -= C W  */
  if (dt == NM_FLOAT32) add_masked_f(W, alpha, (const float *)S.data, mask);
  else add_masked_d(W, alpha, (const double *)S.data, mask);
  return NM_OK;
}

/* ---------------------------------------------------------------------- */
/* Adam */

#define DEFINE_ADAM(T, SUF, SQRT)                                                 \
  NM_HOT static void adam_##SUF(T *p, const T *d, T *m, T *v, int64_t n, T sign, T b1,  \
                         T b2, T eps, T step, T inv_sqrt_bc2) {                  \
    T c1 = (T)1 - b1, c2 = (T)1 - b2;                                            \
    for (int64_t i = 0; i < n; i++) {                                            \
      T g = d[i];                                                                \
      T mi = b1 * m[i] + c1 * sign * g;                                          \
      T vi = b2 * v[i] + c2 * g * g;                                             \
      m[i] = mi;                                                                 \
      v[i] = vi;                                                                 \
      p[i] += step * mi / (SQRT(vi) * inv_sqrt_bc2 + eps);                       \
    }                                                                            \
  }

DEFINE_ADAM(float, f, sqrtf)
DEFINE_ADAM(double, d, sqrt)

/* One Adam step's operands and a part count: the tensors are cut into
** `parts` slices of the flat index range, each updated by adam_f/adam_d. */
typedef struct adam_job {
  nm_dtype dt;
  char *p, *m, *v;
  const char *d;
  int64_t n, parts;
  double sign, b1, b2, eps, step, inv_sqrt_bc2;
} adam_job;

static void adam_part(void *ctx, int64_t part) {
  const adam_job *j = ctx;
  int64_t lo, hi;
  nm_elementwise_slice(j->n, j->parts, part, &lo, &hi);
  if (hi <= lo) return;
  size_t off = (size_t)lo * nm_dtype_size(j->dt);
  if (j->dt == NM_FLOAT32)
    adam_f((float *)(j->p + off), (const float *)(j->d + off), (float *)(j->m + off),
           (float *)(j->v + off), hi - lo, (float)j->sign, (float)j->b1, (float)j->b2,
           (float)j->eps, (float)j->step, (float)j->inv_sqrt_bc2);
  else
    adam_d((double *)(j->p + off), (const double *)(j->d + off), (double *)(j->m + off),
           (double *)(j->v + off), hi - lo, j->sign, j->b1, j->b2, j->eps, j->step,
           j->inv_sqrt_bc2);
}

int nm_adam_update(const nm_tensor *p, const nm_tensor *d, const nm_tensor *m,
                   const nm_tensor *v, double sign, double b1, double b2, double eps,
                   double step, double inv_sqrt_bc2) {
  const nm_tensor *all[4] = {p, d, m, v};
  for (int i = 0; i < 4; i++) {
    if (!nm_same_shape(all[i], p) || all[i]->dtype != p->dtype || !nm_is_contiguous(all[i]))
      return NM_EINVAL;
  }
  adam_job j = {p->dtype, p->data, m->data, v->data, d->data, nm_numel(p), 1,
                sign, b1, b2, eps, step, inv_sqrt_bc2};
  /* elementwise: cut as nm_unary cuts a line (each element's arithmetic is
  ** the same in any part, so the bits do not depend on the thread count);
  ** whole in the caller, a 784 x 256 layer's steps cost a two-thread
  ** Adam epoch about 3% */
  j.parts = nm_elementwise_parts(j.n);
  nm_pool_run(j.parts, adam_part, &j);
  return NM_OK;
}

/* ---------------------------------------------------------------------- */
/* Activation derivatives */

/* sigmoid and tanh use the forward output (y (1 - y), 1 - y^2): no exp;
** NaN inputs stay NaN, as in the elementwise derivative kernels. */
#define DEFINE_DACT(T, SUF, SIGMOID)                                              \
  NM_HOT static void dact_##SUF(T *e, const T *a, const T *y, int64_t n, int act,       \
                         T beta) {                                                \
    switch (act) {                                                               \
      case NM_ACT_RELU: /* selects, not branches (signs are unpredictable) */   \
        for (int64_t i = 0; i < n; i++) {                                        \
          T ai = a[i], kept = ai > 0 ? e[i] : (T)0;                              \
          e[i] = ai != ai ? ai : kept;                                           \
        }                                                                        \
        break;                                                                   \
      case NM_ACT_SIGMOID:                                                       \
        for (int64_t i = 0; i < n; i++) e[i] *= y[i] * ((T)1 - y[i]);           \
        break;                                                                   \
      case NM_ACT_TANH:                                                          \
        for (int64_t i = 0; i < n; i++) e[i] *= (T)1 - y[i] * y[i];              \
        break;                                                                   \
      case NM_ACT_SOFTPLUS:                                                      \
        for (int64_t i = 0; i < n; i++) e[i] *= SIGMOID(beta * a[i]);           \
        break;                                                                   \
      default:                                                                   \
        break;                                                                   \
    }                                                                            \
  }

DEFINE_DACT(float, f, vsigmoid_f32)
DEFINE_DACT(double, d, vsigmoid_f64)

typedef struct dact_job {
  nm_dtype dt;
  void *e;
  const void *a, *y;
  int64_t n;
  int act;
  double beta;
  int64_t parts;
} dact_job;

static void dact_part(void *ctx, int64_t part) {
  const dact_job *j = ctx;
  int64_t lo, hi;
  nm_elementwise_slice(j->n, j->parts, part, &lo, &hi);
  if (hi <= lo) return;
  if (j->dt == NM_FLOAT32)
    dact_f((float *)j->e + lo, (const float *)j->a + lo,
           j->y != NULL ? (const float *)j->y + lo : NULL, hi - lo, j->act, (float)j->beta);
  else
    dact_d((double *)j->e + lo, (const double *)j->a + lo,
           j->y != NULL ? (const double *)j->y + lo : NULL, hi - lo, j->act, j->beta);
}

int nm_mul_dact(const nm_tensor *E, const nm_tensor *A, const nm_tensor *Y, int act,
                double beta) {
  int needs_y = act == NM_ACT_SIGMOID || act == NM_ACT_TANH;
  if (act < NM_ACT_IDENTITY || act > NM_ACT_SOFTPLUS || (needs_y && Y == NULL)) return NM_EINVAL;
  const nm_tensor *all[3] = {E, A, Y};
  for (int i = 0; i < 3; i++) {
    if (all[i] == NULL) continue;
    if (!nm_same_shape(all[i], E) || all[i]->dtype != E->dtype || !nm_is_contiguous(all[i]))
      return NM_EINVAL;
  }
  dact_job j = {E->dtype, E->data, A->data, Y != NULL ? Y->data : NULL, nm_numel(E), act,
                beta, 1};
  /* long ones in parts that depend on the length only (nm_math.h) */
  j.parts = nm_elementwise_parts(j.n);
  nm_pool_run(j.parts, dact_part, &j);
  return NM_OK;
}

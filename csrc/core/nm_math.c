/*
** nm_math.c: tensor math kernels over nm_tensor (see nm_math.h). The loop
** machinery lives here; the typed kernels are in nm_math_gen.h, included
** once for float and once for double.
*/
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <cblas.h>

#include "nm_math.h"
#include "nm_matvec.h"
#include "nm_pool.h"
#include "nm_simd.h"
#include "nm_vmath.h"

/* ---------------------------------------------------------------------- */
/* Iteration over up to three operands of one shape */

/* The operands' common shape with size-1 dimensions dropped and adjacent
** dimensions merged wherever every operand steps over them as one (so a
** contiguous tensor, or a narrowed block of rows, becomes a single line).
** Row-major order is preserved, so positions can be counted (NM_FLAT). */
typedef struct nm_iter {
  int ndim;                            /* >= 1 */
  int64_t size[NM_MAXDIM];
  int64_t stride[3][NM_MAXDIM];        /* per operand, in elements */
} nm_iter;

/* t1 and t2 may repeat t0 when fewer operands take part; the shape is t0's
** (the callers have checked that the others match). */
static void iter_init(nm_iter *it, const nm_tensor *t0, const nm_tensor *t1,
                      const nm_tensor *t2) {
  const nm_tensor *ts[3] = {t0, t1, t2};
  int k = 0;
  for (int d = 0; d < t0->ndim; d++) {
    int64_t n = t0->size[d];
    if (n == 0) { k = 0; it->size[0] = 0; goto single; }
    if (n == 1) continue;                /* never moves a pointer */
    if (k > 0) {
      int merge = 1;
      for (int o = 0; o < 3; o++)
        if (it->stride[o][k - 1] != ts[o]->stride[d] * n) merge = 0;
      if (merge) {
        it->size[k - 1] *= n;
        for (int o = 0; o < 3; o++) it->stride[o][k - 1] = ts[o]->stride[d];
        continue;
      }
    }
    it->size[k] = n;
    for (int o = 0; o < 3; o++) it->stride[o][k] = ts[o]->stride[d];
    k++;
  }
  if (k > 0) { it->ndim = k; return; }
  it->size[0] = 1;                       /* a scalar, or all sizes 1 */
single:
  it->ndim = 1;
  for (int o = 0; o < 3; o++) it->stride[o][0] = 1;
}

/* Elements between two polls of nm_interrupted; also the longest stretch
** of a line handled without polling. */
#define NM_CHUNK 32768

/* Runs the statements in __VA_ARGS__ once per element; they name the
** current elements EL0, EL1, EL2 (lvalues of types T0, T1, T2) and the
** row-major position NM_FLAT. The innermost line is compiled twice, once
** with unit strides known to the compiler (vectorised) and once strided.
** Returns NM_EINTR from the enclosing function when interrupted. */
#define NM_LOOP(it, T0, P0, T1, P1, T2, P2, ...) do {                            \
    const nm_iter *it_ = (it);                                                   \
    T0 *b0_ = (P0); T1 *b1_ = (P1); T2 *b2_ = (P2);                              \
    const int last_ = it_->ndim - 1;                                             \
    const int64_t n_ = it_->size[last_];                                         \
    const int64_t st0_ = it_->stride[0][last_], st1_ = it_->stride[1][last_],    \
                  st2_ = it_->stride[2][last_];                                  \
    int64_t ctr_[NM_MAXDIM] = {0, 0, 0, 0};                                      \
    int64_t o0_ = 0, o1_ = 0, o2_ = 0, polled_ = 0;                              \
    int64_t outer_ = n_ > 0 ? 1 : 0;                                             \
    for (int d_ = 0; d_ < last_; d_++) outer_ *= it_->size[d_];                  \
    for (int64_t out_ = 0; out_ < outer_; out_++) {                              \
      for (int64_t c_ = 0; c_ < n_; c_ += NM_CHUNK) {                            \
        const int64_t len_ = n_ - c_ < NM_CHUNK ? n_ - c_ : NM_CHUNK;            \
        T0 *q0_ = b0_ + o0_ + c_ * st0_;                                         \
        T1 *q1_ = b1_ + o1_ + c_ * st1_;                                         \
        T2 *q2_ = b2_ + o2_ + c_ * st2_;                                         \
        (void)q0_; (void)q1_; (void)q2_;                                         \
        if (st0_ == 1 && st1_ == 1 && st2_ == 1) {                               \
          const int64_t s0_ = 1, s1_ = 1, s2_ = 1;                               \
          (void)s0_; (void)s1_; (void)s2_;                                       \
          for (int64_t i_ = 0; i_ < len_; i_++) { __VA_ARGS__ }                  \
        } else {                                                                 \
          const int64_t s0_ = st0_, s1_ = st1_, s2_ = st2_;                      \
          (void)s0_; (void)s1_; (void)s2_;                                       \
          for (int64_t i_ = 0; i_ < len_; i_++) { __VA_ARGS__ }                  \
        }                                                                        \
        if ((polled_ += len_) >= NM_CHUNK) {                                     \
          polled_ = 0;                                                           \
          if (nm_interrupted) return NM_EINTR;                                   \
        }                                                                        \
      }                                                                          \
      for (int d_ = last_ - 1; d_ >= 0; d_--) {                                  \
        o0_ += it_->stride[0][d_]; o1_ += it_->stride[1][d_];                    \
        o2_ += it_->stride[2][d_];                                               \
        if (++ctr_[d_] < it_->size[d_]) break;                                   \
        o0_ -= it_->stride[0][d_] * it_->size[d_];                               \
        o1_ -= it_->stride[1][d_] * it_->size[d_];                               \
        o2_ -= it_->stride[2][d_] * it_->size[d_];                               \
        ctr_[d_] = 0;                                                            \
      }                                                                          \
    }                                                                            \
  } while (0)

#define EL0 (q0_[i_ * s0_])
#define EL1 (q1_[i_ * s1_])
#define EL2 (q2_[i_ * s2_])
#define NM_FLAT (out_ * n_ + c_ + i_)

/* How a matrix goes to row-major CBLAS: as stored (trans = 0, leading
** dimension ld = stride[0]) or as the transpose of a row-major matrix
** (trans = 1, ld = stride[1]). */
typedef struct nm_blasmat { int trans; int ld; } nm_blasmat;

static int blas_layout(const nm_tensor *t, nm_blasmat *out) {
  int64_t rows = t->size[0], cols = t->size[1];
  int64_t s0 = t->stride[0], s1 = t->stride[1];
  if (rows > INT_MAX || cols > INT_MAX) return 0;
  int64_t need = cols > 1 ? cols : 1;
  int64_t ld = rows > 1 ? s0 : need;
  if ((cols <= 1 || s1 == 1) && ld >= need && ld <= INT_MAX) {
    out->trans = 0; out->ld = (int)ld;
    return 1;
  }
  need = rows > 1 ? rows : 1;
  ld = cols > 1 ? s1 : need;
  if ((rows <= 1 || s0 == 1) && ld >= need && ld <= INT_MAX) {
    out->trans = 1; out->ld = (int)ld;
    return 1;
  }
  return 0;
}

/* ---------------------------------------------------------------------- */
/* The typed kernels */

#define real float
#define NM_T(name) name##_f32
#define NM_M(fn) fn##f
#define NM_BLAS(fn) cblas_s##fn
/* No BLAS for float dot products: cblas_sdot sums in float, and OpenBLAS's
** dsdot was measured to lose float-level precision too; the loop sums in
** double. */
#define NM_DOT_BLAS 0
#include "nm_math_gen.h"
#undef real
#undef NM_T
#undef NM_M
#undef NM_BLAS
#undef NM_DOT_BLAS

#define real double
#define NM_T(name) name##_f64
#define NM_M(fn) fn
#define NM_BLAS(fn) cblas_d##fn
#define NM_DOT_BLAS 1
#include "nm_math_gen.h"
#undef real
#undef NM_T
#undef NM_M
#undef NM_BLAS
#undef NM_DOT_BLAS

/* Calls the kernel for the dtype dt. */
#define TYPED(dt, fn, ...) \
  ((dt) == NM_FLOAT64 ? fn##_f64(__VA_ARGS__) : fn##_f32(__VA_ARGS__))

static int same2(const nm_tensor *a, const nm_tensor *b) {
  return a->dtype == b->dtype && nm_same_shape(a, b);
}

/* ---------------------------------------------------------------------- */
/* Fill and copy */

int nm_fill(nm_tensor *r, double v) {
  nm_iter it;
  iter_init(&it, r, r, r);
  return TYPED(r->dtype, fill, &it, r->data, v);
}

/* Advances a row-major position in t by one element; returns the new
** element offset. */
static int64_t next_offset(const nm_tensor *t, int64_t *idx, int64_t off) {
  for (int d = t->ndim - 1; d >= 0; d--) {
    off += t->stride[d];
    if (++idx[d] < t->size[d]) return off;
    off -= t->stride[d] * t->size[d];
    idx[d] = 0;
  }
  return off;
}

#define COPY_LOOP(TD, TS) \
  NM_LOOP(&it, TD, r->data, const TS, s->data, const TS, s->data, EL0 = (TD)EL1;)

static int copy_same_shape(nm_tensor *r, const nm_tensor *s) {
  nm_iter it;
  /* Dense blocks of one type (minibatch rows gathered from a data set):
  ** the C library's copy beats an element loop. */
  if (r->dtype == s->dtype && nm_is_contiguous(r) && nm_is_contiguous(s)) {
    size_t bytes = (size_t)nm_numel(r) * nm_dtype_size(r->dtype);
    if (bytes > 0) memmove(r->data, s->data, bytes);
    return NM_OK;
  }
  iter_init(&it, r, s, s);
  if (r->dtype == NM_FLOAT32) {
    if (s->dtype == NM_FLOAT32) COPY_LOOP(float, float); else COPY_LOOP(float, double);
  } else {
    if (s->dtype == NM_FLOAT32) COPY_LOOP(double, float); else COPY_LOOP(double, double);
  }
  return NM_OK;
}

int nm_copy(nm_tensor *r, const nm_tensor *src) {
  int64_t n = nm_numel(r);
  if (n != nm_numel(src)) return NM_EINVAL;
  if (nm_same_shape(r, src)) return copy_same_shape(r, src);
  /* Different shapes: a contiguous side can take the other's shape. */
  if (nm_is_contiguous(src)) {
    nm_tensor s = *src;
    nm_init_contiguous(&s, src->dtype, r->ndim, r->size);
    s.data = src->data;
    return copy_same_shape(r, &s);
  }
  if (nm_is_contiguous(r)) {
    nm_tensor d = *r;
    nm_init_contiguous(&d, r->dtype, src->ndim, src->size);
    d.data = r->data;
    return copy_same_shape(&d, src);
  }
  /* Both strided: walk both positions element by element. */
  int64_t ri[NM_MAXDIM] = {0, 0, 0, 0}, si[NM_MAXDIM] = {0, 0, 0, 0};
  int64_t roff = 0, soff = 0;
  for (int64_t k = 0; k < n; k++) {
    double v = src->dtype == NM_FLOAT64 ? ((const double *)src->data)[soff]
                                        : ((const float *)src->data)[soff];
    if (r->dtype == NM_FLOAT64) ((double *)r->data)[roff] = v;
    else ((float *)r->data)[roff] = (float)v;
    roff = next_offset(r, ri, roff);
    soff = next_offset(src, si, soff);
    if ((k & (NM_CHUNK - 1)) == NM_CHUNK - 1 && nm_interrupted) return NM_EINTR;
  }
  return NM_OK;
}

/* ---------------------------------------------------------------------- */
/* Elementwise */

int nm_binary(nm_tensor *r, const nm_tensor *a, const nm_tensor *b, nm_binop op) {
  if (!same2(r, a) || !same2(r, b) || op > NM_DIV) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, r, a, b);
  return TYPED(r->dtype, binary, &it, r->data, a->data, b->data, op);
}

int nm_binary_scalar(nm_tensor *r, const nm_tensor *a, double s, nm_binop op) {
  if (!same2(r, a) || op > NM_RDIV) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, r, a, a);
  return TYPED(r->dtype, binary_scalar, &it, r->data, a->data, s, op);
}

/* One part of a split elementwise job: a slice of one line. */
typedef struct unary_job {
  nm_iter it;
  nm_dtype dt;
  char *r;
  const char *a;
  nm_unop op;
  double p, q;
  int64_t parts;
  _Atomic int status;
} unary_job;

static void unary_part(void *ctx, int64_t part) {
  unary_job *j = ctx;
  int64_t lo, hi;
  nm_elementwise_slice(j->it.size[0], j->parts, part, &lo, &hi);
  if (hi <= lo) return;
  nm_iter it = j->it;
  it.size[0] = hi - lo;
  size_t es = nm_dtype_size(j->dt);
  char *r = j->r + (size_t)(lo * it.stride[0][0]) * es;
  const char *a = j->a + (size_t)(lo * it.stride[1][0]) * es;
  int st = TYPED(j->dt, unary, &it, (void *)r, (const void *)a, j->op, j->p, j->q);
  if (st != NM_OK) j->status = st;
}

int64_t nm_elementwise_parts(int64_t n) {
  if (n < 2 * NM_PAR_ELEMS) return 1;
  return n / NM_PAR_ELEMS < NM_PAR_PARTS ? n / NM_PAR_ELEMS : NM_PAR_PARTS;
}

void nm_elementwise_slice(int64_t n, int64_t parts, int64_t part, int64_t *lo, int64_t *hi) {
  *lo = nm_pool_bound(n, parts, 64, part);
  *hi = nm_pool_bound(n, parts, 64, part + 1);
}

int nm_unary(nm_tensor *r, const nm_tensor *a, nm_unop op, double p, double q) {
  if (!same2(r, a)) return NM_EINVAL;
  if ((op == NM_SOFTPLUS || op == NM_DSOFTPLUS) && !(p > 0)) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, r, a, a);
  /* One long line with non-negative steps (the usual case: contiguous
  ** tensors) is cut into parts whose number depends on its length only. */
  if (it.ndim == 1 && it.size[0] >= 2 * NM_PAR_ELEMS && it.stride[0][0] >= 0 &&
      it.stride[1][0] >= 0) {
    unary_job j = {it, r->dtype, r->data, a->data, op, p, q, 0, NM_OK};
    j.parts = nm_elementwise_parts(it.size[0]);
    nm_pool_run(j.parts, unary_part, &j);
    return j.status;
  }
  return TYPED(r->dtype, unary, &it, r->data, a->data, op, p, q);
}

int nm_axpy(nm_tensor *y, double alpha, const nm_tensor *x) {
  if (!same2(y, x)) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, y, x, x);
  return TYPED(y->dtype, axpy, &it, y->data, alpha, x->data);
}

int nm_compare(nm_tensor *r, const nm_tensor *a, const nm_tensor *b, nm_cmpop op) {
  if (!same2(r, a) || !same2(r, b)) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, r, a, b);
  return TYPED(r->dtype, compare, &it, r->data, a->data, b->data, op);
}

int nm_compare_scalar(nm_tensor *r, const nm_tensor *a, double s, nm_cmpop op) {
  if (!same2(r, a)) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, r, a, a);
  return TYPED(r->dtype, compare_scalar, &it, r->data, a->data, s, op);
}

int nm_masked_fill(nm_tensor *r, const nm_tensor *mask, double v) {
  if (!same2(r, mask)) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, r, mask, mask);
  return TYPED(r->dtype, masked_fill, &it, r->data, mask->data, v);
}

int nm_masked_copy(nm_tensor *r, const nm_tensor *mask, const nm_tensor *src) {
  if (!same2(r, mask) || !same2(r, src)) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, r, mask, src);
  return TYPED(r->dtype, masked_copy, &it, r->data, mask->data, src->data);
}

/* ---------------------------------------------------------------------- */
/* Reductions */

static int valid_norm(nm_redop op, double p) {
  return op != NM_RNORM || p >= 0;      /* false for NaN too */
}

int nm_reduce_all(const nm_tensor *a, nm_redop op, double p, double *value,
                  int64_t *index) {
  if (!valid_norm(op, p) || op > NM_RNORM) return NM_EINVAL;
  int64_t n = nm_numel(a);
  if (n == 0 && (op == NM_RMAX || op == NM_RMIN)) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, a, a, a);
  int st = TYPED(a->dtype, reduce_all, &it, a->data, op, p, value, index);
  if (st == NM_OK && op == NM_RMEAN) *value /= (double)n;
  return st;
}

int nm_all_finite(const nm_tensor *a, int *finite) {
  nm_iter it;
  iter_init(&it, a, a, a);
  return TYPED(a->dtype, all_finite, &it, a->data, finite);
}

/* Shapes `res` as a with size 1 at dim, into out; 0 when res fits neither
** accepted shape. */
static int reduced_view(nm_tensor *out, const nm_tensor *res, const nm_tensor *a, int dim) {
  *out = *res;
  if (res->ndim == a->ndim) {
    for (int d = 0; d < a->ndim; d++)
      if (res->size[d] != (d == dim ? 1 : a->size[d])) return 0;
    return 1;
  }
  if (res->ndim != a->ndim - 1) return 0;
  out->ndim = a->ndim;
  for (int d = 0; d < a->ndim; d++) {
    if (d == dim) { out->size[d] = 1; out->stride[d] = 0; continue; }
    int from = d < dim ? d : d - 1;
    if (res->size[from] != a->size[d]) return 0;
    out->size[d] = res->size[from];
    out->stride[d] = res->stride[from];
  }
  return 1;
}

int nm_reduce_dim(nm_tensor *r, nm_tensor *ri, const nm_tensor *a, int dim,
                  nm_redop op, double p, int64_t index_base) {
  if (dim < 0 || dim >= a->ndim || (r == NULL && ri == NULL)) return NM_EINVAL;
  if (!valid_norm(op, p) || op > NM_RNORM) return NM_EINVAL;
  int64_t n = a->size[dim];
  if (n == 0 && (op == NM_RMAX || op == NM_RMIN)) return NM_EINVAL;
  /* An absent output is a stride-0 header over a local: written, never read. */
  union { float f; double d; } dummy_val;
  double dummy_index;
  nm_tensor av = *a, rv, iv;
  av.size[dim] = 1;
  if (r != NULL) {
    if (r->dtype != a->dtype || !reduced_view(&rv, r, a, dim)) return NM_EINVAL;
  } else {
    rv = av;
    memset(rv.stride, 0, sizeof rv.stride);
    rv.data = &dummy_val;
  }
  if (ri != NULL) {
    if (ri->dtype != NM_FLOAT64 || !reduced_view(&iv, ri, a, dim)) return NM_EINVAL;
  } else {
    iv = av;
    iv.dtype = NM_FLOAT64;
    memset(iv.stride, 0, sizeof iv.stride);
    iv.data = &dummy_index;
  }
  nm_iter it;
  iter_init(&it, &rv, &av, &iv);
  return TYPED(a->dtype, reduce_dim, &it, rv.data, a->data, iv.data, n,
               a->stride[dim], op, p, index_base);
}

/* ---------------------------------------------------------------------- */
/* Softmax */

int nm_softmax(nm_tensor *r, const nm_tensor *a, int take_log) {
  if (!same2(r, a) || a->ndim < 1 || a->ndim > 2) return NM_EINVAL;
  int64_t rows = 1, cols = a->size[0], as0 = 0, as1 = a->stride[0];
  int64_t rs0 = 0, rs1 = r->stride[0];
  if (a->ndim == 2) {
    rows = a->size[0]; cols = a->size[1];
    as0 = a->stride[0]; as1 = a->stride[1];
    rs0 = r->stride[0]; rs1 = r->stride[1];
  }
  /* the exponentials can be kept in r between the passes when r is a or
  ** shares no memory with it */
  int keep = (r->data == a->data && rs0 == as0 && rs1 == as1) || !nm_overlap(r, a);
  return TYPED(a->dtype, softmax, r->data, rs0, rs1, a->data, as0, as1, rows, cols, take_log,
               keep);
}

/* ---------------------------------------------------------------------- */
/* BLAS products */

static int is_matrix(const nm_tensor *t) { return t->ndim == 2; }
static int is_vector(const nm_tensor *t) { return t->ndim == 1; }

static nm_tensor transposed(const nm_tensor *t) {
  nm_tensor u = *t;
  nm_view_transpose(&u, 0, 1);
  return u;
}

/* C = beta C, the whole product when the inner size is 0. */
static int scale_only(nm_tensor *C, double beta) {
  return beta == 0 ? nm_fill(C, 0) : nm_unary(C, C, NM_SCALE, beta, 0);
}

int nm_gemm(nm_tensor *C, double alpha, const nm_tensor *A, const nm_tensor *B,
            double beta) {
  if (!is_matrix(C) || !is_matrix(A) || !is_matrix(B)) return NM_EINVAL;
  if (A->dtype != C->dtype || B->dtype != C->dtype) return NM_EINVAL;
  int64_t m = A->size[0], k = A->size[1], n = B->size[1];
  if (B->size[0] != k || C->size[0] != m || C->size[1] != n) return NM_EINVAL;
  if (m == 0 || n == 0) return NM_OK;
  if (k == 0) return scale_only(C, beta);
  nm_tensor c = *C, a = *A, b = *B;
  nm_blasmat lc, la, lb;
  if (blas_layout(&c, &lc) && lc.trans) {
    /* A column-major C: compute C^T = B^T A^T into it instead. */
    c = transposed(C); a = transposed(B); b = transposed(A);
    int64_t t = m; m = n; n = t;
    blas_layout(&c, &lc);
  }
  if (blas_layout(&c, &lc) && !lc.trans && blas_layout(&a, &la) && blas_layout(&b, &lb) &&
      k <= INT_MAX) {
    nm_blas_gemm(C->dtype, la.trans, lb.trans, (int)m, (int)n, (int)k, alpha, a.data, la.ld,
                 b.data, lb.ld, beta, c.data, lc.ld);
    return NM_OK;
  }
  return TYPED(C->dtype, gemm_loops, m, n, k, alpha, a.data, a.stride[0], a.stride[1],
               b.data, b.stride[0], b.stride[1], beta, c.data, c.stride[0], c.stride[1]);
}

/* A vector the matvec kernels take: unit stride (any stride for one
** element). */
static int unit_vector(const nm_tensor *v) { return v->size[0] <= 1 || v->stride[0] == 1; }

int nm_gemv(nm_tensor *y, double alpha, const nm_tensor *A, const nm_tensor *x,
            double beta) {
  if (!is_vector(y) || !is_matrix(A) || !is_vector(x)) return NM_EINVAL;
  if (A->dtype != y->dtype || x->dtype != y->dtype) return NM_EINVAL;
  int64_t m = A->size[0], n = A->size[1];
  if (x->size[0] != n || y->size[0] != m) return NM_EINVAL;
  if (m == 0) return NM_OK;
  if (n == 0) return scale_only(y, beta);
  nm_blasmat la;
  if (blas_layout(A, &la) && unit_vector(x) && unit_vector(y)) {
    int f64 = y->dtype == NM_FLOAT64;
    if (!la.trans) {
      if (f64) nm_mv_f64(m, n, alpha, A->data, la.ld, x->data, beta, y->data);
      else nm_mv_f32(m, n, (float)alpha, A->data, la.ld, x->data, (float)beta, y->data);
    } else if (f64) {           /* the storage is A^T [n x m] row-major */
      nm_mvt_f64(n, m, alpha, A->data, la.ld, x->data, beta, y->data);
    } else {
      nm_mvt_f32(n, m, (float)alpha, A->data, la.ld, x->data, (float)beta, y->data);
    }
    return NM_OK;
  }
  return TYPED(y->dtype, gemv_loops, m, n, alpha, A->data, A->stride[0], A->stride[1],
               x->data, x->stride[0], beta, y->data, y->stride[0]);
}

int nm_ger(nm_tensor *A, double alpha, const nm_tensor *x, const nm_tensor *y) {
  if (!is_matrix(A) || !is_vector(x) || !is_vector(y)) return NM_EINVAL;
  if (x->dtype != A->dtype || y->dtype != A->dtype) return NM_EINVAL;
  int64_t m = A->size[0], n = A->size[1];
  if (x->size[0] != m || y->size[0] != n) return NM_EINVAL;
  if (m == 0 || n == 0) return NM_OK;
  nm_blasmat la;
  if (blas_layout(A, &la) && !la.trans && unit_vector(x) && unit_vector(y)) {
    if (A->dtype == NM_FLOAT64) nm_rank1_f64(m, n, alpha, x->data, y->data, A->data, la.ld);
    else nm_rank1_f32(m, n, (float)alpha, x->data, y->data, A->data, la.ld);
    return NM_OK;
  }
  return TYPED(A->dtype, ger_loops, m, n, alpha, x->data, x->stride[0], y->data,
               y->stride[0], A->data, A->stride[0], A->stride[1]);
}

int nm_ger_masked(nm_tensor *A, double alpha, const nm_tensor *x, const nm_tensor *y,
                  const nm_tensor *mask) {
  if (!is_matrix(A) || !is_vector(x) || !is_vector(y) || !same2(A, mask)) return NM_EINVAL;
  if (x->dtype != A->dtype || y->dtype != A->dtype) return NM_EINVAL;
  int64_t m = A->size[0], n = A->size[1];
  if (x->size[0] != m || y->size[0] != n) return NM_EINVAL;
  return TYPED(A->dtype, ger_masked, m, n, alpha, x->data, x->stride[0], y->data,
               y->stride[0], A->data, A->stride[0], A->stride[1], mask->data,
               mask->stride[0], mask->stride[1]);
}

int nm_dot(const nm_tensor *x, const nm_tensor *y, double *out) {
  if (!same2(x, y)) return NM_EINVAL;
  nm_iter it;
  iter_init(&it, x, y, y);
  return TYPED(x->dtype, dot, &it, x->data, y->data, out);
}

/* One part of a split product: a block of C's rows or columns. */
typedef struct gemm_job {
  nm_dtype dt;
  int ta, tb, m, n, k, lda, ldb, ldc, by_cols;
  double alpha, beta;
  const char *A, *B;
  char *C;
  int64_t parts;
} gemm_job;

static void gemm_call(const gemm_job *j, int m, int n, const char *A, const char *B, char *C) {
  CBLAS_TRANSPOSE ta = j->ta ? CblasTrans : CblasNoTrans, tb = j->tb ? CblasTrans : CblasNoTrans;
  if (j->dt == NM_FLOAT32)
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, j->k, (float)j->alpha, (const float *)(const void *)A,
                j->lda, (const float *)(const void *)B, j->ldb, (float)j->beta,
                (float *)(void *)C, j->ldc);
  else
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, j->k, j->alpha, (const double *)(const void *)A,
                j->lda, (const double *)(const void *)B, j->ldb, j->beta,
                (double *)(void *)C, j->ldc);
}

static void gemm_part(void *ctx, int64_t part) {
  const gemm_job *j = ctx;
  size_t es = nm_dtype_size(j->dt);
  int64_t dim = j->by_cols ? j->n : j->m;
  int64_t lo = nm_pool_bound(dim, j->parts, 16, part), hi = nm_pool_bound(dim, j->parts, 16, part + 1);
  if (hi <= lo) return;
  if (j->by_cols) {     /* C[:, lo:hi] = op(A) op(B)[:, lo:hi] */
    size_t boff = (size_t)(j->tb ? lo * j->ldb : lo) * es;
    gemm_call(j, j->m, (int)(hi - lo), j->A, j->B + boff, j->C + (size_t)lo * es);
  } else {              /* C[lo:hi, :] = op(A)[lo:hi, :] op(B) */
    size_t aoff = (size_t)(j->ta ? lo : lo * j->lda) * es;
    gemm_call(j, (int)(hi - lo), j->n, j->A + aoff, j->B, j->C + (size_t)(lo * j->ldc) * es);
  }
}

void nm_blas_gemm(nm_dtype dt, int ta, int tb, int m, int n, int k, double alpha,
                  const void *A, int lda, const void *B, int ldb, double beta, void *C,
                  int ldc) {
  gemm_job j = {dt, ta, tb, m, n, k, lda, ldb, ldc, n >= m, alpha, beta, A, B, C, 1};
  double madds = (double)m * (double)n * (double)k;
  if (madds >= NM_PAR_MADDS) {
    /* cut the larger output dimension: the other operand is read by every
    ** part (BLAS packs it again in each), the smaller one of the two */
    int64_t dim = j.by_cols ? n : m;
    j.parts = madds >= 3 * NM_PAR_PART_MADDS ? (int64_t)(madds / NM_PAR_PART_MADDS) : 2;
    if (j.parts > NM_PAR_PARTS) j.parts = NM_PAR_PARTS;
    if (j.parts > dim / 32) j.parts = dim / 32;
    if (j.parts < 1) j.parts = 1;
  }
  if (j.parts == 1) gemm_call(&j, m, n, j.A, j.B, j.C);
  else nm_pool_run(j.parts, gemm_part, &j);
}

const char *nm_blas_core_hint(void) { return nm_blas_core_for(openblas_get_corename()); }

const char *nm_blas_core_for(const char *core) {
#if defined(__x86_64__) && defined(__GNUC__)
  /* the cores OpenBLAS falls back to when it does not know the CPU model */
  static const char *const fallback[] = {"prescott", "katmai", "coppermine", "northwood",
                                         "banias", "core2", "penryn", "dunnington", "nehalem",
                                         "atom", "nano", "sandybridge", "unknown"};
  /* the cores whose kernels use AVX-512 */
  static const char *const avx512_cores[] = {"skylakex", "cooperlake", "sapphirerapids"};
  int weak = core == NULL, wide = 0;
  for (size_t i = 0; !weak && i < sizeof fallback / sizeof fallback[0]; i++)
    weak = strcasecmp(core, fallback[i]) == 0;
  for (size_t i = 0; core != NULL && i < sizeof avx512_cores / sizeof avx512_cores[0]; i++)
    wide |= strcasecmp(core, avx512_cores[i]) == 0;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512cd"))
    /* also in place of an AVX2 family's kernels (Haswell's, Zen's): on
    ** AMD Zen 5 SkylakeX's sgemm runs 1.8x faster than Haswell's */
    return wide ? NULL : "SKYLAKEX";
  if (weak && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "HASWELL";
#else
  (void)core;
#endif
  return NULL;
}

int nm_set_threads(int n) {
  openblas_set_num_threads(1);
  return nm_pool_set_threads(n);
}

int nm_blas_matrix_ok(const nm_tensor *m) {
  nm_blasmat l;
  return is_matrix(m) && blas_layout(m, &l);
}

/* [lo, hi) byte addresses an element of t can occupy; empty when numel 0. */
static void span(const nm_tensor *t, uintptr_t *lo, uintptr_t *hi) {
  int64_t last = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (t->size[d] == 0) { *lo = *hi = 0; return; }
    last += (t->size[d] - 1) * t->stride[d];
  }
  size_t es = nm_dtype_size(t->dtype);
  *lo = (uintptr_t)t->data;
  *hi = *lo + (uintptr_t)(last + 1) * es;
}

int nm_overlap(const nm_tensor *a, const nm_tensor *b) {
  uintptr_t alo, ahi, blo, bhi;
  span(a, &alo, &ahi);
  span(b, &blo, &bhi);
  if (alo == ahi || blo == bhi) return 0;
  return alo < bhi && blo < ahi;
}

/*
** nm_folded.c: fused kernels of the energy-based folded autoencoder (see
** nm_folded.h).
*/
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "nm_folded.h"
#include "nm_simd.h"
#include "nm_vmath.h"

/* A 1-D or 2-D operand as rows x cols with its two strides (a 1-D tensor
** is one row); p == NULL for an absent operand. */
typedef struct {
  void *p;
  int64_t rs, cs;
} view2;

static view2 view_of(const nm_tensor *t) {
  view2 v = {NULL, 0, 0};
  if (t == NULL) return v;
  v.p = t->data;
  v.rs = t->ndim == 2 ? t->stride[0] : 0;
  v.cs = t->stride[t->ndim - 1];
  return v;
}

/* The element (i, j) of view v as an lvalue of type T. */
#define AT(T, v) (((T *)(v).p)[i * (v).rs + j * (v).cs])
/* Runs body for every (i, j) of rows x cols. */
#define FOR2(...) \
  for (int64_t i = 0; i < rows; i++) \
    for (int64_t j = 0; j < cols; j++) { __VA_ARGS__ }

#define real float
#define NM_T(name) name##_f32
#define NM_M(fn) fn##f
#include "nm_folded_gen.h"
#undef real
#undef NM_T
#undef NM_M

#define real double
#define NM_T(name) name##_f64
#define NM_M(fn) fn
#include "nm_folded_gen.h"
#undef real
#undef NM_T
#undef NM_M

/* 1 when every present operand has the shape and dtype of ref (1-D or
** 2-D); fills rows and cols. */
static int compatible(const nm_tensor *ref, const nm_tensor *const *ops, int n,
                      int64_t *rows, int64_t *cols) {
  if (ref == NULL || ref->ndim < 1 || ref->ndim > 2) return 0;
  for (int k = 0; k < n; k++) {
    const nm_tensor *t = ops[k];
    if (t != NULL && (t->dtype != ref->dtype || !nm_same_shape(t, ref))) return 0;
  }
  *rows = ref->ndim == 2 ? ref->size[0] : 1;
  *cols = ref->size[ref->ndim - 1];
  return 1;
}

int nm_folded_rates(const nm_tensor *r, const nm_tensor *d, const nm_tensor *u,
                    nm_folded_phi phi, double beta) {
  const nm_tensor *ops[2] = {d, u};
  int64_t rows, cols;
  if (!compatible(r, ops, 2, &rows, &cols) || u == NULL) return NM_EINVAL;
  if ((int)phi < NM_FOLDED_IDENTITY || (int)phi > NM_FOLDED_RELU) return NM_EINVAL;
  if (phi == NM_FOLDED_SOFTPLUS && !(beta > 0)) return NM_EINVAL;
  if (r->dtype == NM_FLOAT32)
    rates_f32(rows, cols, view_of(r), view_of(d), view_of(u), phi, (float)beta);
  else
    rates_f64(rows, cols, view_of(r), view_of(d), view_of(u), phi, beta);
  return NM_OK;
}

int nm_folded_mismatch(const nm_tensor *e, const nm_tensor *u, const nm_tensor *p,
                       double *sumsq) {
  const nm_tensor *ops[2] = {u, p};
  int64_t rows, cols;
  if (!compatible(e, ops, 2, &rows, &cols) || u == NULL || p == NULL) return NM_EINVAL;
  *sumsq = e->dtype == NM_FLOAT32 ? mismatch_f32(rows, cols, view_of(e), view_of(u), view_of(p))
                                  : mismatch_f64(rows, cols, view_of(e), view_of(u), view_of(p));
  return NM_OK;
}

int nm_folded_velocity(const nm_tensor *v, const nm_tensor *ew, double a_w,
                       const nm_tensor *eg, double a_g, const nm_tensor *n, double a_n,
                       const nm_tensor *d, const nm_tensor *back, double scale,
                       double *maxabs) {
  const nm_tensor *ops[5] = {ew, eg, n, d, back};
  int64_t rows, cols;
  if (!compatible(v, ops, 5, &rows, &cols)) return NM_EINVAL;
  if ((d == NULL) != (back == NULL)) return NM_EINVAL;
  if (v->dtype == NM_FLOAT32)
    *maxabs = velocity_f32(rows, cols, view_of(v), view_of(ew), (float)a_w, view_of(eg),
                           (float)a_g, view_of(n), (float)a_n, view_of(d), view_of(back),
                           (float)scale);
  else
    *maxabs = velocity_f64(rows, cols, view_of(v), view_of(ew), a_w, view_of(eg), a_g,
                           view_of(n), a_n, view_of(d), view_of(back), scale);
  return NM_OK;
}

int nm_folded_step(const nm_tensor *u, const nm_tensor *m, const nm_tensor *v,
                   double dt, double mom) {
  const nm_tensor *ops[2] = {m, v};
  int64_t rows, cols;
  if (!compatible(u, ops, 2, &rows, &cols) || v == NULL) return NM_EINVAL;
  if (u->dtype == NM_FLOAT32)
    step_f32(rows, cols, view_of(u), view_of(m), view_of(v), (float)dt, (float)mom);
  else
    step_f64(rows, cols, view_of(u), view_of(m), view_of(v), dt, mom);
  return NM_OK;
}

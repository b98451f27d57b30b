/*
** nm_bmvr.c: BMVR and backprop training loops, forward pass and
** measures (see nm_bmvr.h; the eigensolver and the RRR solver are in
** csrc/core/nm_linalg.c).
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "nm_bmvr.h"
#include "nm_matvec.h"
#include "nm_simd.h"

/* Rows per block in the blocked (gemm) forward passes. */
#define NM_BMVR_BLOCK 256

/* The kernels, once per element type. */
#define real float
#define FN(name) name##_f32
#define GEMM cblas_sgemm
#include "nm_bmvr_gen.h"
#undef real
#undef FN
#undef GEMM

#define real double
#define FN(name) name##_f64
#define GEMM cblas_dgemm
#include "nm_bmvr_gen.h"
#undef real
#undef FN
#undef GEMM

int64_t nm_bmvr_work_size(int64_t k, int64_t m) {
  return 5 * k + 2 * m;
}

static int is_matrix(const nm_tensor *t, int64_t rows, int64_t cols, nm_dtype dt) {
  return t != NULL && t->data != NULL && t->ndim == 2 && t->dtype == dt &&
         t->size[0] == rows && t->size[1] == cols && nm_is_contiguous(t);
}

/* Rows of a data matrix: 2-D, unit column stride, row stride >= cols. */
static int is_rows(const nm_tensor *t, int64_t cols, nm_dtype dt) {
  return t->ndim == 2 && t->dtype == dt && t->size[1] == cols &&
         (t->size[1] <= 1 || t->stride[1] == 1) &&
         (t->size[0] <= 1 || t->stride[0] >= cols) && t->stride[0] <= INT32_MAX;
}

int nm_bmvr_check(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                  const nm_tensor *X, const nm_tensor *Y, int need_q) {
  if (net->W1 == NULL || net->W1->ndim != 2 || net->W2T == NULL || net->W2T->ndim != 2)
    return NM_EINVAL;
  const nm_dtype dt = net->W1->dtype;
  const int64_t k = net->W1->size[0], n = net->W1->size[1], m = net->W2T->size[1];
  if (k < 1 || n < 1 || m < 1 || k > INT32_MAX / 8 || n > INT32_MAX / 8 || m > INT32_MAX / 8)
    return NM_EINVAL;
  if (!is_matrix(net->W1, k, n, dt) || !is_matrix(net->W2T, k, m, dt)) return NM_EINVAL;
  if (need_q && !is_matrix(net->Q, k, k, dt)) return NM_EINVAL;
  if (need_q && o->decoupled && !is_matrix(net->R, k, k, dt)) return NM_EINVAL;
  if (o->relu && (net->zbar == NULL || net->zbar->ndim != 1 || net->zbar->size[0] != k ||
                  net->zbar->dtype != dt || !nm_is_contiguous(net->zbar)))
    return NM_EINVAL;
  if (net->work != NULL && (net->work->dtype != dt || !nm_is_contiguous(net->work) ||
                            nm_numel(net->work) < nm_bmvr_work_size(k, m)))
    return NM_EINVAL;
  if (X != NULL && !is_rows(X, n, dt)) return NM_EINVAL;
  if (Y != NULL && !is_rows(Y, m, dt)) return NM_EINVAL;
  if (X != NULL && Y != NULL && X->size[0] != Y->size[0]) return NM_EINVAL;
  return NM_OK;
}

static int train_any(const nm_bmvr_net *net, const nm_bmvr_opts *o, const nm_tensor *X,
                     const nm_tensor *Y, const nm_tensor *order, int64_t count, int64_t *t,
                     int backprop) {
  int st = nm_bmvr_check(net, o, X, Y, !backprop);
  if (st != NM_OK || net->work == NULL) return NM_EINVAL;
  if (order != NULL && (order->ndim != 1 || order->size[0] < count)) return NM_EINVAL;
  if (order == NULL && count > X->size[0]) return NM_EINVAL;
  if (net->W1->dtype == NM_FLOAT64)
    return train_f64(net, o, X, Y, order, count, t, backprop);
  return train_f32(net, o, X, Y, order, count, t, backprop);
}

int nm_bmvr_train(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                  const nm_tensor *X, const nm_tensor *Y,
                  const nm_tensor *order, int64_t count, int64_t *t) {
  return train_any(net, o, X, Y, order, count, t, 0);
}

int nm_bmvr_backprop_train(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                           const nm_tensor *X, const nm_tensor *Y,
                           const nm_tensor *order, int64_t count, int64_t *t) {
  return train_any(net, o, X, Y, order, count, t, 1);
}

int nm_bmvr_forward(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                    const nm_tensor *X, const nm_tensor *Z, const nm_tensor *Yhat) {
  if (nm_bmvr_check(net, o, X, NULL, 0) != NM_OK) return NM_EINVAL;
  const int64_t k = net->W1->size[0], m = net->W2T->size[1], T = X->size[0];
  const nm_dtype dt = net->W1->dtype;
  if (Z != NULL && (Z->ndim != 2 || Z->dtype != dt || Z->size[0] != T || Z->size[1] != k))
    return NM_EINVAL;
  if (Yhat != NULL && !(is_rows(Yhat, m, dt) && Yhat->size[0] == T)) return NM_EINVAL;
  if (dt == NM_FLOAT64) return forward_f64(net, o, X, Z, Yhat);
  return forward_f32(net, o, X, Z, Yhat);
}

int nm_bmvr_evaluate(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                     const nm_tensor *X, const nm_tensor *Y,
                     double *sq_error, int64_t *correct) {
  if (nm_bmvr_check(net, o, X, Y, 0) != NM_OK) return NM_EINVAL;
  if (net->W1->dtype == NM_FLOAT64) return evaluate_f64(net, o, X, Y, sq_error, correct);
  return evaluate_f32(net, o, X, Y, sq_error, correct);
}

int nm_bmvr_hidden_cov(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                       const nm_tensor *X, const nm_tensor *C) {
  if (nm_bmvr_check(net, o, X, NULL, 0) != NM_OK) return NM_EINVAL;
  const int64_t k = net->W1->size[0];
  if (!is_matrix(C, k, k, NM_FLOAT64)) return NM_EINVAL;
  if (net->W1->dtype == NM_FLOAT64) return hidden_cov_f64(net, o, X, C);
  return hidden_cov_f32(net, o, X, C);
}

int nm_bmvr_alignment(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                      const nm_tensor *X, const nm_tensor *Y,
                      double *mean_cos, double *update_cos) {
  if (nm_bmvr_check(net, o, X, Y, 1) != NM_OK) return NM_EINVAL;
  if (net->W1->dtype == NM_FLOAT64)
    return alignment_f64(net, o, X, Y, mean_cos, update_cos);
  return alignment_f32(net, o, X, Y, mean_cos, update_cos);
}

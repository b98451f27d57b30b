/*
** nm_mlp.c: one training step of a layered network on one sample or one
** minibatch (see nm_mlp.h): the sequence of nn.lua's step over the core
** kernels, without the interpreter between them.
*/
#include <math.h>
#include <string.h>

#include "nm_mlp.h"
#include "nm_math.h"
#include "nm_matvec.h"
#include "nm_plastic.h"

/* [B x n], contiguous. */
static int is_rows(const nm_tensor *t, int64_t B, int64_t n) {
  return t != NULL && t->ndim == 2 && t->size[0] == B && t->size[1] == n && nm_is_contiguous(t);
}
static int is_vec(const nm_tensor *t, int64_t n) {
  return t != NULL && t->ndim == 1 && t->size[0] == n && nm_is_contiguous(t);
}
/* One sample of n values: [n] or [1 x n]. */
static int one_sample(const nm_tensor *t, int64_t n) {
  return (t->ndim == 1 && t->size[0] == n) ||
         (t->ndim == 2 && t->size[0] == 1 && t->size[1] == n);
}
/* A buffer of B rows with its 1-D view (B = 1) or without one (B > 1). */
static int buffer_ok(const nm_tensor *t, const nm_tensor *view, int64_t B, int64_t n) {
  if (!is_rows(t, B, n)) return 0;
  if (B > 1) return view == NULL;
  return is_vec(view, n) && view->data == t->data;
}
/* The header of t transposed (W^T for the forward product, M from Mt). */
static nm_tensor transposed(const nm_tensor *t) {
  nm_tensor u = *t;
  nm_view_transpose(&u, 0, 1);
  return u;
}

const char *nm_mlp_check(const nm_mlp *net) {
  if (net->L < 1) return "no layers";
  if (net->loss != NM_MLP_XENT && net->loss != NM_MLP_MSE) return "unknown loss";
  nm_dtype dt = net->X->dtype;
  int64_t B = net->X->ndim == 2 ? net->X->size[0] : -1;
  int64_t n0 = net->X->ndim == 2 ? net->X->size[1] : -1;
  if (B < 1) return "input buffer must be [B x n_0] with B >= 1";
  if (!buffer_ok(net->X, net->x1, B, n0))
    return B == 1 ? "input buffers must be [1 x n_0] with their [n_0] view"
                  : "input buffer must be [B x n_0] without a view";
  int biased = 0;
  int64_t prev = n0;
  for (int l = 0; l < net->L; l++) {
    const nm_mlp_layer *ly = &net->layer[l];
    int last = l == net->L - 1;
    if (ly->W == NULL || ly->W->ndim != 2 || ly->W->size[1] != prev)
      return "weights must be [n_l x n_{l-1}]";
    int64_t n = ly->W->size[0];
    const nm_tensor *all[] = {ly->W, ly->b, ly->mask, ly->Mt, ly->A, ly->Y, ly->E,
                              ly->a1, ly->y1, ly->e1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
      if (all[i] != NULL && all[i]->dtype != dt) return "all operands must have one dtype";
    if (!nm_blas_compatible(ly->W)) return "weights need a unit stride";
    nm_tensor Wt = transposed(ly->W);
    if (B > 1 && !nm_blas_matrix_ok(&Wt)) return "weights must suit BLAS";
    if (ly->b != NULL && (ly->b->ndim != 1 || ly->b->size[0] != n)) return "bias must be [n_l]";
    biased |= ly->b != NULL;
    if (ly->mask != NULL && !nm_same_shape(ly->mask, ly->W)) return "mask must be shaped like W";
    if (ly->mask != NULL && B > 1) return "a batch step takes no masks";
    if (!buffer_ok(ly->A, ly->a1, B, n) || !buffer_ok(ly->Y, ly->y1, B, n) ||
        !buffer_ok(ly->E, ly->e1, B, n))
      return B == 1 ? "layer buffers must be [1 x n_l] with their [n_l] views"
                    : "layer buffers must be [B x n_l] without views";
    if (ly->act < NM_ACT_IDENTITY || ly->act > NM_MLP_SOFTMAX) return "unknown activation";
    if (ly->act == NM_MLP_SOFTMAX && !last) return "softmax only on the output layer";
    if (ly->act == NM_ACT_SOFTPLUS && !(ly->beta > 0 && isfinite(ly->beta)))
      return "softplus beta must be positive and finite";
    if (last) {
      if (net->loss == NM_MLP_XENT && ly->act != NM_MLP_SOFTMAX) return "xent needs softmax";
      if (net->loss == NM_MLP_MSE && ly->act == NM_MLP_SOFTMAX) return "mse with softmax";
      if (!buffer_ok(net->T, net->t1, B, n))
        return B == 1 ? "target buffers must be [1 x n_L] with their [n_L] view"
                      : "target buffer must be [B x n_L] without a view";
      if (net->T->dtype != dt) return "all operands must have one dtype";
    } else {
      int64_t src = net->from_output ? net->layer[net->L - 1].W->size[0]
                                     : net->layer[l + 1].W->size[0];
      if (ly->Mt == NULL || ly->Mt->ndim != 2 || ly->Mt->size[0] != n ||
          ly->Mt->size[1] != src || !nm_blas_compatible(ly->Mt))
        return "feedback matrix must be [n_l x n_src] with a unit stride";
      nm_tensor M = transposed(ly->Mt);
      if (B > 1 && !nm_blas_matrix_ok(&M)) return "feedback matrix must suit BLAS";
    }
    prev = n;
  }
  if (net->ones != NULL && net->ones->dtype != dt) return "all operands must have one dtype";
  if (B > 1 && biased && !is_vec(net->ones, B)) return "ones must be [B] (the bias product)";
  return NULL;
}

#define TRY(call) do { int st_ = (call); if (st_ != NM_OK) return st_; } while (0)

/* The activation of layer ly: Y = f(A). */
static int activate(nm_mlp_layer *ly) {
  switch (ly->act) {
    case NM_ACT_IDENTITY:
      if (ly->Y->data != ly->A->data) return nm_copy(ly->Y, ly->A);
      return NM_OK;
    case NM_ACT_RELU: return nm_unary(ly->Y, ly->A, NM_RELU, 0, 0);
    case NM_ACT_SIGMOID: return nm_unary(ly->Y, ly->A, NM_SIGMOID, 0, 0);
    case NM_ACT_TANH: return nm_unary(ly->Y, ly->A, NM_TANH, 0, 0);
    case NM_ACT_SOFTPLUS: return nm_unary(ly->Y, ly->A, NM_SOFTPLUS, ly->beta, 0);
    default: return nm_softmax(ly->Y, ly->A, 0);
  }
}

/* MLP:backward for target t (one sample, or B > 1 rows: targets_of's
** copy, then E_l = E_src M_l through the transpose of Mt), then nothing
** else. */
static int backward(const nm_mlp *net, const nm_tensor *t) {
  int L = net->L, batch = net->X->size[0] > 1;
  nm_mlp_layer *out = &net->layer[L - 1];
  const nm_tensor *T = t;
  if (t->ndim == 1) {
    TRY(nm_copy(net->t1, t));
    T = net->T;
  } else if (t->dtype != net->T->dtype) {
    TRY(nm_copy(net->T, t));
    T = net->T;
  }
  TRY(nm_binary(out->E, out->Y, T, NM_SUB));
  if (net->loss == NM_MLP_MSE && out->act != NM_ACT_IDENTITY)
    TRY(nm_mul_dact(out->E, out->A, out->Y, out->act, out->beta));
  for (int l = L - 2; l >= 0; l--) {
    nm_mlp_layer *ly = &net->layer[l];
    const nm_mlp_layer *src = net->from_output ? out : &net->layer[l + 1];
    if (batch) {
      nm_tensor M = transposed(ly->Mt);
      TRY(nm_gemm(ly->E, 1.0, src->E, &M, 0.0));
    } else {
      TRY(nm_gemv(ly->e1, 1.0, ly->Mt, src->e1, 0.0));
    }
    if (ly->act != NM_ACT_IDENTITY) TRY(nm_mul_dact(ly->E, ly->A, ly->Y, ly->act, ly->beta));
  }
  return NM_OK;
}

/* MLP:update: the fused delta rule (alpha -eta/B), layer by layer, the
** first layer's input `in` (no scratch is needed without a gate and, for
** B > 1, without a mask). */
static int update(const nm_mlp *net, const nm_tensor *in, const double *eta, const int *learn) {
  double B = (double)net->X->size[0];
  const nm_tensor *pre = in;
  for (int l = 0; l < net->L; l++) {
    nm_mlp_layer *ly = &net->layer[l];
    if (learn[l])
      TRY(nm_plastic_outer(ly->W, -eta[l] / B, ly->E, NULL, pre, ly->mask, ly->b, NULL));
    pre = ly->Y;
  }
  return NM_OK;
}

/* The step on one sample (nn.lua's path over the 1-D views). */
static int sample_step(const nm_mlp *net, const nm_tensor *x, const nm_tensor *t,
                       const double *eta, const int *learn) {
  int L = net->L;
  nm_mlp_layer *out = &net->layer[L - 1];
  if (!one_sample(x, net->X->size[1]) || !one_sample(t, out->W->size[0])) return NM_EINVAL;
  /* MLP:forward, one sample */
  TRY(nm_copy(x->ndim == 1 ? net->x1 : net->X, x));
  const nm_tensor *prev = net->x1;
  for (int l = 0; l < L; l++) {
    nm_mlp_layer *ly = &net->layer[l];
    TRY(nm_gemv(ly->a1, 1.0, ly->W, prev, 0.0));
    if (ly->b != NULL) TRY(nm_binary(ly->a1, ly->a1, ly->b, NM_ADD));
    TRY(activate(ly));
    prev = ly->y1;
  }
  TRY(backward(net, t));
  return update(net, net->X, eta, learn);
}

/* The step on a batch of B > 1 rows (nn.lua's 2-D path). */
static int batch_step(const nm_mlp *net, const nm_tensor *x, const nm_tensor *t,
                      const double *eta, const int *learn) {
  int L = net->L;
  nm_mlp_layer *out = &net->layer[L - 1];
  int64_t B = net->X->size[0];
  nm_dtype dt = net->X->dtype;
  if (x->ndim != 2 || x->size[0] != B || x->size[1] != net->X->size[1] || t->ndim != 2 ||
      t->size[0] != B || t->size[1] != out->W->size[0])
    return NM_EINVAL;
  /* MLP:forward: the input read in place, or copied as bind_input does */
  const nm_tensor *in = x;
  if (x->dtype != dt || !nm_is_contiguous(x)) {
    TRY(nm_copy(net->X, x));
    in = net->X;
  }
  const nm_tensor *prev = in;
  for (int l = 0; l < L; l++) {
    nm_mlp_layer *ly = &net->layer[l];
    nm_tensor Wt = transposed(ly->W);
    TRY(nm_gemm(ly->A, 1.0, prev, &Wt, 0.0));
    if (ly->b != NULL) TRY(nm_ger(ly->A, 1.0, net->ones, ly->b));
    TRY(activate(ly));
    prev = ly->Y;
  }
  TRY(backward(net, t));
  return update(net, in, eta, learn);
}

int nm_mlp_step(const nm_mlp *net, const nm_tensor *x, const nm_tensor *t, const double *eta,
                const int *learn) {
  if (net->X->size[0] == 1) return sample_step(net, x, t, eta, learn);
  return batch_step(net, x, t, eta, learn);
}

/* ---------------------------------------------------------------------- */
/* Steps over rows, each update fused with the next sample's forward pass */

/* The layers' inputs n_{l-1}, summed: the scratch nm_mlp_rows needs, in
** elements of the net's dtype. */
size_t nm_mlp_rows_scratch(const nm_mlp *net) {
  size_t n = 0;
  for (int l = 0; l < net->L; l++) n += (size_t)net->layer[l].W->size[1];
  return n;
}

int nm_mlp_rows_fit(const nm_mlp *net) {
  if (net->X->size[0] != 1) return 0;
  for (int l = 0; l < net->L; l++) {
    const nm_tensor *W = net->layer[l].W;
    if (net->layer[l].mask != NULL || W->stride[1] != 1 ||
        (W->size[0] > 1 && W->stride[0] < W->size[1]))
      return 0;
  }
  return 1;
}

/* A [1 x n] header over row r of M. */
static nm_tensor row_of(const nm_tensor *M, int64_t r) {
  nm_tensor v = *M;
  v.size[0] = 1;
  v.data = (char *)M->data + (size_t)(r * M->stride[0]) * nm_dtype_size(M->dtype);
  return v;
}

/* Layer l's pending update (the delta rule of the last step: e_l in E,
** its input saved in u) and then its product a1 = W v, in one pass over
** W: nm_plastic_outer's bias part and nm_ger's rank-1 kernel, then
** nm_gemv's product, with their bits (nm_matvec.h). */
static void fused_layer(nm_mlp_layer *ly, double alpha, const void *u, const nm_tensor *v) {
  const nm_tensor *W = ly->W;
  int64_t m = W->size[0], n = W->size[1], lda = m > 1 ? W->stride[0] : n;
  if (ly->b != NULL) nm_plastic_outer_bias(ly->b, alpha, ly->E);
  if (W->dtype == NM_FLOAT64)
    nm_rank1_mv_f64(m, n, alpha, ly->E->data, u, W->data, lda, v->data, ly->a1->data);
  else
    nm_rank1_mv_f32(m, n, (float)alpha, ly->E->data, u, W->data, lda, v->data, ly->a1->data);
}

/* The rows first .. first + count - 1, or those listed at order[first ..]
** (checked here, before any step runs), all in 0 .. rows - 1. */
static int rows_in(int64_t rows, int64_t first, int64_t count, const int64_t *order) {
  if (first < 0 || count < 0) return 0;
  if (order == NULL) return first <= rows && count <= rows - first;
  for (int64_t s = 0; s < count; s++)
    if (order[first + s] < 0 || order[first + s] >= rows) return 0;
  return 1;
}

int nm_mlp_rows(const nm_mlp *net, const nm_tensor *X, const nm_tensor *Tg, int64_t first,
                int64_t count, const int64_t *order, const double *eta, const int *learn,
                void *scratch, int64_t *done) {
  int L = net->L;
  nm_mlp_layer *out = &net->layer[L - 1];
  *done = 0;
  if (X->ndim != 2 || Tg->ndim != 2 || X->size[1] != net->X->size[1] ||
      Tg->size[1] != out->W->size[0] || !rows_in(X->size[0], first, count, order) ||
      !rows_in(Tg->size[0], first, count, order) || !nm_mlp_rows_fit(net))
    return NM_EINVAL;
  if (count == 0) return NM_OK;
  size_t es = nm_dtype_size(net->X->dtype);
  int pending = 0;             /* the last step's update is not yet applied */
  for (int64_t s = 0; s < count; s++) {
    int64_t r = order != NULL ? order[first + s] : first + s;
    nm_tensor x = row_of(X, r), t = row_of(Tg, r);
    /* forward, each learning layer's pending update fused with its product */
    TRY(nm_copy(net->X, &x));
    const nm_tensor *prev = net->x1;
    char *u = (char *)scratch;
    for (int l = 0; l < L; l++) {
      nm_mlp_layer *ly = &net->layer[l];
      if (pending && learn[l]) fused_layer(ly, -eta[l] / 1.0, u, prev);
      else TRY(nm_gemv(ly->a1, 1.0, ly->W, prev, 0.0));
      if (ly->b != NULL) TRY(nm_binary(ly->a1, ly->a1, ly->b, NM_ADD));
      TRY(activate(ly));
      u += (size_t)ly->W->size[1] * es;
      prev = ly->y1;
    }
    TRY(backward(net, &t));
    /* the inputs of this step's update, which the next forward overwrites */
    u = (char *)scratch;
    prev = net->x1;
    for (int l = 0; l < L; l++) {
      size_t bytes = (size_t)net->layer[l].W->size[1] * es;
      memcpy(u, prev->data, bytes);
      u += bytes;
      prev = net->layer[l].y1;
    }
    pending = 1;
    *done = s + 1;
    if (nm_interrupted && s + 1 < count) break;
  }
  /* the last update, as MLP:update applies it (its inputs are still in the
  ** buffers) */
  TRY(update(net, net->X, eta, learn));
  return nm_interrupted && *done < count ? NM_EINTR : NM_OK;
}

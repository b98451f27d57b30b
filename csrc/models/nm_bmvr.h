/*
** nm_bmvr.h: biological multivariate regression (BMVR, Golkar et al.
** 2020, "A biologically plausible neural network for local supervision
** in cortical microcircuits") and its backprop baseline on the same
** two-layer network; measures of the gain-control constraint and of the
** BMVR teaching signal (the optimum of the linear problem, the RRR
** solver, is in csrc/core/nm_linalg.h). Never includes lua.h.
**
** Shapes (n inputs, m labels, k hidden units, rows are samples):
**   X [T x n], Y [T x m], W1 [k x n], W2T [k x m] (= W2^T), Q, R [k x k],
**   zbar [k] (running mean of relu(W1 x), ReLU networks only).
** Weights are contiguous and share one dtype with X and Y, whose rows
** must be contiguous (column stride 1); any row stride is allowed.
*/
#ifndef NM_BMVR_H
#define NM_BMVR_H

#include <stdint.h>
#include "nm_tensor.h"

/* Which units' proximal weights W1 learn (ReLU networks): where the
** ReLU's derivative is 1 ("u": u = W1 x > 0, or u > zbar when the mean is
** subtracted before the ReLU), where z > 0, or everywhere ("none", a
** straight-through variant the paper does not use). */
typedef enum { NM_BMVR_GATE_U = 0, NM_BMVR_GATE_Z = 1, NM_BMVR_GATE_NONE = 2 } nm_bmvr_gate;

/* The network. Q is unused by backprop; R is used only when the options
** ask for the decoupled variant; zbar only for ReLU networks. `work` is
** scratch of the same dtype with at least nm_bmvr_work_size(k, m)
** elements, so the training loops allocate nothing. */
typedef struct nm_bmvr_net {
  const nm_tensor *W1, *W2T, *Q, *R, *zbar, *work;
} nm_bmvr_net;

typedef struct nm_bmvr_opts {
  int relu;          /* 0: linear z = W1 x; 1: z = relu(W1 x) - zbar */
  int mean_before;   /* ReLU: z = relu(W1 x - zbar), zbar the running mean of u */
  nm_bmvr_gate gate; /* ReLU: which units' W1 learn (see nm_bmvr_gate) */
  int decoupled;     /* n = R z with R learnt by its own Hebbian rule */
  int track_mean;    /* ReLU: update zbar += mean_eps (relu(u) - zbar), or
                     ** zbar += mean_eps (u - zbar) when mean_before */
  double mean_eps;
  double eta_w1, eta_w2, eta_q;
  double t0;         /* eta(t) = eta / (1 + t / t0); t0 <= 0: constant */
} nm_bmvr_opts;

/* Elements of scratch the training and measure loops need. */
int64_t nm_bmvr_work_size(int64_t k, int64_t m);

/* Checks shapes and dtypes of the network against X/Y (either may be
** NULL); returns NM_OK or NM_EINVAL. The Lua binding checks first and
** names the culprit; this guards direct C callers. */
int nm_bmvr_check(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                  const nm_tensor *X, const nm_tensor *Y, int need_q);

/* One pass of online BMVR over `count` samples: rows order[0..count-1]
** of X and Y (1-based row numbers stored in a 1-D tensor), or rows
** 0..count-1 when order is NULL. Per sample, with all right-hand sides
** taken before any update:
**   z = W1 x  (ReLU: u = W1 x, zbar += eps (relu(u) - zbar), z = relu(u) - zbar)
**   a = W2T y, n = Q^T z (decoupled: n = R z)
**   W1  += eta_w1 [g ⊙ (a - Q n)] x^T   (g: the gate, nm_bmvr_gate; 1 for linear)
**   W2T += eta_w2 (z y^T - W2T)
**   Q   += eta_q  (z n^T - Q)
**   R   += eta_q  (n z^T - R)                (decoupled only)
** with each eta divided by (1 + t/t0); *t counts samples seen and is
** advanced. Polls nm_interrupted after every sample (NM_EINTR leaves a
** consistent state, *t counting the samples done). Returns
** NM_ENONFINITE when a weight became NaN or infinite. Allocates nothing. */
int nm_bmvr_train(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                  const nm_tensor *X, const nm_tensor *Y,
                  const nm_tensor *order, int64_t count, int64_t *t);

/* The same loop for per-sample backprop on the same network and the
** squared loss 1/2 ||y - W2T^T z||^2 (ReLU: zbar tracked the same way and
** treated as a constant):
**   e = y - W2T^T z, d = W2T e (ReLU: d ⊙= relu', i.e. 1(u > 0) or 1(z > 0))
**   W1 += eta_w1 d x^T, W2T += eta_w2 z e^T. Q, R, gate, eta_q unused. */
int nm_bmvr_backprop_train(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                           const nm_tensor *X, const nm_tensor *Y,
                           const nm_tensor *order, int64_t count, int64_t *t);

/* Hidden activity Z [T x k] (z of every row, zbar frozen) and the
** prediction Yhat [T x m] = Z W2T; either output may be NULL. */
int nm_bmvr_forward(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                    const nm_tensor *X, const nm_tensor *Z, const nm_tensor *Yhat);

/* Mean over rows of ||y - yhat||^2 (objective (1)) and the number of
** rows whose argmax of yhat equals the argmax of y. Allocates a block
** buffer (freed before returning); NM_ENOMEM when that fails. */
int nm_bmvr_evaluate(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                     const nm_tensor *X, const nm_tensor *Y,
                     double *sq_error, int64_t *correct);

/* C [k x k] (float64, contiguous) = (1/T) sum_t z_t z_t^T, the hidden
** covariance that the gain-control constraint bounds by the identity. */
int nm_bmvr_hidden_cov(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                       const nm_tensor *X, const nm_tensor *C);

/* How well BMVR's teaching signal c = g ⊙ (a - Q n) matches the
** backpropagated error d = W2T (y - yhat) (ReLU: ⊙ 1(u > 0)) on the rows
** of X, Y: the mean over samples of cos(c, d) (samples where either is 0
** skipped) and the cosine between the summed W1 updates sum_t c x^T and
** sum_t d x^T. Allocates block buffers (freed before returning). */
int nm_bmvr_alignment(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                      const nm_tensor *X, const nm_tensor *Y,
                      double *mean_cos, double *update_cos);

#endif

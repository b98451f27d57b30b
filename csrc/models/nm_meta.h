/*
** nm_meta.h: the fused motif plasticity rule of Shervani-Tabar & Rosenbaum
** (Nat. Commun. 14, 1805, 2023): one online step of
**   W_l += sum_r theta_r F^r_l      (r = 0..9, l = 1..L)
** on a softplus network with feedback-alignment (or backprop) errors, and
** its hand-derived adjoint (reverse-mode derivative), used for exact
** meta-gradients through an unrolled inner loop (lua/nm/models/meta.lua,
** rules/motifs.lua, doc/autograd.md).
**
** Network: y_0 = x, z_l = W_l y_{l-1}, y_l = softplus_beta(z_l) for l < L,
** y_L = softmax(z_L). Errors: e_L = y_L - onehot(label),
** e_l = (B_{l+1}^T e_{l+1}) .* (1 - exp(-beta y_l)) for l = L-1..0 (e_0 is
** the synthetic input error, with y_0 = x). B_l = W_l in backprop mode.
** Motifs (cheap forms, all from the pre-update weights):
**   F0 = -e_l y_{l-1}^T           F5 = -(sum y_l) e_l y_{l-1}^T
**   F1 = -y_l e_{l-1}^T           F6 = -(y_l^T W e_{l-1}) y_l e_{l-1}^T
**   F2 = -e_l e_{l-1}^T           F7 = -(y_l^T W e_{l-1}) e_l y_{l-1}^T
**   F3 = -W_l                     F8 = -(e_l^T W y_{l-1}) y_l e_{l-1}^T
**   F4 = -1 e_{l-1}^T             F9 = y_l y_{l-1}^T - y_l (W^T y_l)^T
** so W_out = (1 - theta_3) W + a y_{l-1}^T + b e_{l-1}^T - theta_9 y_l q^T
** with q = W^T y_l, a = -(theta_0 + theta_5 S + theta_7 c) e_l + theta_9 y_l,
** b = -(theta_1 + theta_6 c + theta_8 d) y_l - theta_2 e_l - theta_4 1,
** S = sum y_l, c = q . e_{l-1}, d = e_l . z_l.
**
** Weights are contiguous row-major n_l x n_{l-1} matrices of the net's
** dtype. Nothing here allocates: the caller provides a trace buffer (the
** forward's vectors, which the adjoint reads) and a work buffer.
*/
#ifndef NM_META_H
#define NM_META_H

#include "nm_tensor.h"

#define NM_META_MOTIFS 10
#define NM_META_MAXLAYERS 8

typedef enum {
  NM_FEEDBACK_FA = 0,          /* fixed feedback matrices B_l */
  NM_FEEDBACK_BP = 1,          /* B_l = W_l; derivatives through both uses */
  NM_FEEDBACK_BP_DETACHED = 2  /* B_l = W_l, treated as a constant copy
                                  in the adjoint (as the authors' code does) */
} nm_feedback;

typedef struct nm_motif_net {
  int layers;                                   /* L, 1..NM_META_MAXLAYERS */
  int64_t sizes[NM_META_MAXLAYERS + 1];         /* n_0 .. n_L */
  nm_dtype dtype;
  double beta;                                  /* softplus sharpness, > 0 */
  nm_feedback feedback;
} nm_motif_net;

/* NM_OK or NM_EINVAL for a bad description. */
int nm_motif_check(const nm_motif_net *net);
/* Elements (of the net's dtype) of a trace and of a work buffer. */
int64_t nm_motif_trace_size(const nm_motif_net *net);
int64_t nm_motif_work_size(const nm_motif_net *net);

/* One online step on the sample x (n_0 values, any stride) with class
** `label` (0-based, < n_L): W_out[l] = W_in[l] + sum_r theta[r] F^r_l for
** l = 0..L-1 (array indices). W_out may be W_in (in place). B is ignored
** in backprop modes. Writes the trace (needed by nm_motif_backward). */
int nm_motif_forward(const nm_motif_net *net, const nm_tensor *const *W_out,
                     const nm_tensor *const *W_in, const nm_tensor *const *B,
                     const nm_tensor *x, int64_t label, const double *theta, void *trace);

/* The adjoint of that step. On entry G[l] holds dLoss/dW_out[l]; on exit
** dLoss/dW_in[l] (in place). theta_bar[r] += dLoss/dtheta_r for each r
** with need[r] != 0 (need may be NULL: all). Bbar, when not NULL (FA),
** receives dLoss/dB_l added to it (entries may be NULL). W_in, B and the
** trace must be those the forward used; the trace may be completed here
** (q = W^T y, skipped by a forward whose theta did not need it). work:
** nm_motif_work_size(net) elements. */
int nm_motif_backward(const nm_motif_net *net, const nm_tensor *const *G,
                      const nm_tensor *const *W_in, const nm_tensor *const *B,
                      void *trace, const double *theta, const int *need,
                      double *theta_bar, const nm_tensor *const *Bbar, void *work);

/* The query loss: mean cross-entropy of the network's softmax output on
** the rows of X (m x n_0) against labels (0-based), and, when G is not
** NULL, its gradient with respect to each W_l (overwritten). *correct
** (when not NULL) gets the number of rows whose arg-max is the label.
** work: nm_motif_query_work_size(net, m) elements. */
int64_t nm_motif_query_work_size(const nm_motif_net *net, int64_t m);
int nm_motif_query(const nm_motif_net *net, const nm_tensor *const *W, const nm_tensor *X,
                   const int64_t *labels, double *loss, int64_t *correct,
                   const nm_tensor *const *G, void *work);

#endif

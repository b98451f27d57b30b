/*
** nm_rcn.h: recurrent chemical network (RCN) synapses (after
** McMillan, "Efficient learning in biological neural networks", Cambridge
** IB report, after Shervani-Tabar & Rosenbaum, Nat. Commun. 14, 1805,
** 2023): one online step of the chemical update on the motif network of
** nm_meta.h, and its hand-derived adjoint, for exact meta-gradients
** through an unrolled inner loop (rules/rcn.lua).
**
** Every synapse of layer l holds L chemicals h_c (c = 0..L-1); the layer's
** state is a contiguous L x n_l x n_{l-1} tensor H and its weight W:
**   h_c' = y_c h_c + z_c tanh(sum_k K[c,k] h_k + sum_r P[c,r] F^r + b_c)
**   W'   = sum_c v_c h_c'              (plain RCN)
**   W'   = W + sum_c v_c h_c'          (momentum RCN)
** with the motifs F^r of nm_meta.h computed from W (the weight the network
** used in this step). Every combination sum_r P[c,r] F^r has the rank-3
** form A_c = a_c y_{l-1}^T + b_c e_{l-1}^T - P[c,9] y_l q^T - P[c,3] W
** (q = W^T y_l), so a chemical costs three outer products, not ten:
**   a_c = -(P0 + P5 S + P7 c) e_l + P9 y_l,
**   b_c = -(P1 + P6 c + P8 d) y_l - P2 e_l - P4 1,
**   S = sum y_l, c = q . e_{l-1}, d = e_l . z_l.
** Only the motifs marked in `use` take part (the others count as P = 0).
** The bias b is one number per chemical and layer, or (neuron_bias) one
** per chemical and synapse: an L x n_l x n_{l-1} tensor per layer.
**
** Meta-parameters are doubles, given per layer with a layer stride; a
** stride of 0 shares one set across layers (gradients then sum over the
** layers). Nothing here allocates: the caller gives a trace (the step's
** vectors, which the adjoint reads) and a work buffer.
*/
#ifndef NM_RCN_H
#define NM_RCN_H

#include "nm_tensor.h"
#include "nm_meta.h"

#define NM_RCN_MAXCHEM 16

typedef struct nm_rcn {
  nm_motif_net net;               /* sizes, beta, feedback, dtype */
  int chemicals;                  /* L, 1..NM_RCN_MAXCHEM */
  int momentum;                   /* W' = W + v.h' instead of v.h' */
  int neuron_bias;                /* bias per synapse instead of per layer */
  int use[NM_META_MOTIFS];        /* motifs taking part */
  double decay[NM_RCN_MAXCHEM];   /* y_c, fixed */
  double gain[NM_RCN_MAXCHEM];    /* z_c, fixed, not 0 */
} nm_rcn;

/* Meta-parameters: layer l reads P + l P_stride (L x 10, row-major: P[c
** 10 + r]), K + l K_stride (L x L: K[c L + k]), v + l v_stride (L) and
** b + l b_stride (L; unused with neuron_bias, where bias[l] is the layer's
** L x n_l x n_{l-1} tensor of the net's dtype). */
typedef struct nm_rcn_params {
  const double *P, *K, *v, *b;
  int64_t P_stride, K_stride, v_stride, b_stride;
  const nm_tensor *const *bias;
} nm_rcn_params;

/* Their gradients, added to (same layout; NULL pointers are skipped). */
typedef struct nm_rcn_grads {
  double *P, *K, *v, *b;
  int64_t P_stride, K_stride, v_stride, b_stride;
  const nm_tensor *const *bias;
} nm_rcn_grads;

/* NM_OK or NM_EINVAL for a bad description. */
int nm_rcn_check(const nm_rcn *rcn);
/* Elements (of the net's dtype) of a trace and of a work buffer. */
int64_t nm_rcn_trace_size(const nm_rcn *rcn);
int64_t nm_rcn_work_size(const nm_rcn *rcn);

/* One online step on sample x (n_0 values, any stride), class `label`
** (0-based): (H_out[l], W_out[l]) from (H_in[l], W_in[l]) for every layer
** l (array index). H_out may be H_in and W_out may be W_in (in place). B
** is ignored in backprop modes. Writes the trace. */
int nm_rcn_forward(const nm_rcn *rcn, const nm_tensor *const *H_out,
                   const nm_tensor *const *W_out, const nm_tensor *const *H_in,
                   const nm_tensor *const *W_in, const nm_tensor *const *B,
                   const nm_tensor *x, int64_t label, const nm_rcn_params *p, void *trace,
                   void *work);

/* The adjoint of that step. On entry Hbar[l], Wbar[l] hold dLoss/dH_out,
** dLoss/dW_out; on exit dLoss/dH_in, dLoss/dW_in (in place). The
** meta-parameter gradients are added into *g. H_in, W_in, B, p and the
** trace must be those of the forward. H_out (may be NULL) are the step's
** output chemicals: with them tanh(pre_c) = (h_c' - y_c h_c) / z_c is read
** off instead of recomputed (no chemical mixing, no tanh); without, it is
** recomputed from H_in. */
int nm_rcn_backward(const nm_rcn *rcn, const nm_tensor *const *Hbar,
                    const nm_tensor *const *Wbar, const nm_tensor *const *H_in,
                    const nm_tensor *const *W_in, const nm_tensor *const *H_out,
                    const nm_tensor *const *B, const void *trace, const nm_rcn_params *p,
                    const nm_rcn_grads *g, void *work);

#endif

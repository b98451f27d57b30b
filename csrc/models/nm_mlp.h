/*
** nm_mlp.h: one training step of a layered network (lua/nm/nn.lua's MLP)
** as one call: forward pass, output error, hidden errors through a fixed
** error pathway, the delta rule's update of every layer, on one sample
** (buffers of one row) or on a minibatch of B rows (buffers of B rows).
** It calls the core kernels that the step of nn.lua calls one at a time
** (one sample: nm_gemv, nm_binary, nm_unary, nm_softmax, nm_mul_dact,
** nm_plastic_outer; a batch: nm_gemm and nm_ger in place of nm_gemv), in
** the same order on the same tensor headers, so its results are that
** step's bit for bit; what it saves is the interpreter and the bindings'
** checks between the calls. Never includes lua.h.
*/
#ifndef NM_MLP_H
#define NM_MLP_H

#include "nm_tensor.h"

/* Activations: the elementwise ones of nm_mul_dact (nm_plastic.h,
** same codes) and softmax (output layer only). */
enum { NM_MLP_SOFTMAX = 5 };
enum { NM_MLP_XENT = 0, NM_MLP_MSE = 1 };

/* Layer l (1-based in nn.lua) of a network of one dtype and batch size B
** (the rows of every buffer). The 2-D operands are [B x n_l] (n_{l-1} for
** the input); for B = 1, a1, y1, e1 are the 1-D views of the first row of
** A, Y, E (nn.lua's one-sample buffers), for B > 1 NULL. */
typedef struct nm_mlp_layer {
  nm_tensor *W, *b, *mask;          /* weights [n_l x n_{l-1}]; b, mask may be NULL */
  nm_tensor *Mt;                    /* errors into this layer: e_l = Mt e_src (NULL for L) */
  nm_tensor *A, *Y, *E;             /* pre-activations, outputs, errors [B x n_l] */
  nm_tensor *a1, *y1, *e1;          /* B = 1: their [n_l] views; else NULL */
  int act;                          /* NM_ACT_* or NM_MLP_SOFTMAX */
  double beta;                      /* softplus */
} nm_mlp_layer;

typedef struct nm_mlp {
  int L, loss;                      /* layers; NM_MLP_XENT or NM_MLP_MSE */
  int from_output;                  /* errors of every layer come from e_L (dfa) */
  nm_tensor *X, *x1;                /* the input buffer [B x n_0]; B = 1: its view */
  nm_tensor *T, *t1;                /* the target buffer [B x n_L]; B = 1: its view */
  nm_tensor *ones;                  /* B > 1 with biases: [B] ones (the bias product) */
  nm_mlp_layer *layer;              /* layer[0 .. L-1] */
} nm_mlp;

/* The step on input x and target t with learning rate eta[l] for layer
** l where learn[l] is non-zero: MLP:forward, MLP:backward and MLP:update
** of nn.lua with the fused delta rule (W += -eta/B E_l^T Y_{l-1},
** b += -eta/B E_l^T 1).
** B = 1: x [n_0] or [1 x n_0] (any dtype: copied into X), t [n_L] or
** [1 x n_L] (copied into T unless it has the net's dtype and 2
** dimensions, then read in place); matrix-vector products.
** B > 1: x [B x n_0], read in place when it has the net's dtype and is
** contiguous, else copied into X (as nn.lua's bind_input); t [B x n_L],
** read in place when of the net's dtype, else copied into T; products
** A_l = Y_{l-1} W_l^T (nm_gemm), the bias as A_l += 1 b^T (nm_ger with
** ones), E_l = E_src M_l with M_l the transpose of Mt (nm_gemm).
** Returns NM_OK, NM_EINVAL when x or t does not fit (nothing written
** then), or a kernel's status. */
int nm_mlp_step(const nm_mlp *net, const nm_tensor *x, const nm_tensor *t, const double *eta,
                const int *learn);

/* Steps over rows first .. first + count - 1 (0-based) of X [N x n_0] and
** targets T [N x n_L] (any dtype: copied as nm_mlp_step copies [1 x n]
** rows), in order; with order non-NULL, over rows order[first] ..
** order[first + count - 1] instead (0-based row numbers, in that order;
** a shuffled epoch). The network's weights, biases and buffers after it are
** those after `count` calls of nm_mlp_step on those rows, bit for bit, but
** each learning layer's update is applied in one pass with the next
** sample's product through the layer (nm_matvec.h's fused kernel), so
** the weights are read once per step instead of twice; the last update is
** applied before returning, so no deferred change outlives the call.
** scratch: nm_mlp_rows_scratch(net) elements of the net's dtype. *done is
** the steps run. NM_EINVAL, having run none, when the shapes do not fit, a
** row is out of range (every listed one is checked first) or the network
** does not fit (nm_mlp_rows_fit); NM_EINTR when interrupted between steps
** (the steps run are complete, their updates applied). */
int nm_mlp_rows(const nm_mlp *net, const nm_tensor *X, const nm_tensor *T, int64_t first,
                int64_t count, const int64_t *order, const double *eta, const int *learn,
                void *scratch, int64_t *done);
size_t nm_mlp_rows_scratch(const nm_mlp *net);
/* Non-zero when nm_mlp_rows can run the network: one-sample buffers, no
** masks, weights with contiguous rows. */
int nm_mlp_rows_fit(const nm_mlp *net);

/* NULL when the network's operands fit nm_mlp_step, else a message
** naming what does not (static text). For B > 1 the layers may have no
** mask (nn.lua's batch update with a mask needs scratch: its general
** path). */
const char *nm_mlp_check(const nm_mlp *net);

#endif

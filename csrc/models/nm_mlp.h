/*
** nm_mlp.h: one training step of a layered network (lua/nm/nn.lua's MLP)
** on one sample as one call: forward pass, output error, hidden errors
** through a fixed error pathway, the delta rule's update of every layer.
** It calls the core kernels that the step of nn.lua calls one at a time
** (nm_gemv, nm_binary, nm_unary, nm_softmax, nm_mul_dact,
** nm_plastic_outer), in the same order on the same tensor headers, so its
** results are that step's bit for bit; what it saves is the interpreter
** between the calls. Never includes lua.h.
*/
#ifndef NM_MLP_H
#define NM_MLP_H

#include "nm_tensor.h"

/* Activations: the elementwise ones of nm_mul_dact (nm_plastic.h,
** same codes) and softmax (output layer only). */
enum { NM_MLP_SOFTMAX = 5 };
enum { NM_MLP_XENT = 0, NM_MLP_MSE = 1 };

/* Layer l (1-based in nn.lua) of a network of one dtype. The 2-D operands
** are [1 x n_l] (n_{l-1} for the input); a1, y1, e1 the 1-D views of the
** first row of A, Y, E (nn.lua's one-sample buffers). */
typedef struct nm_mlp_layer {
  nm_tensor *W, *b, *mask;          /* weights [n_l x n_{l-1}]; b, mask may be NULL */
  nm_tensor *Mt;                    /* errors into this layer: e_l = Mt e_src (NULL for L) */
  nm_tensor *A, *Y, *E;             /* pre-activations, outputs, errors [1 x n_l] */
  nm_tensor *a1, *y1, *e1;          /* their [n_l] views */
  int act;                          /* NM_ACT_* or NM_MLP_SOFTMAX */
  double beta;                      /* softplus */
} nm_mlp_layer;

typedef struct nm_mlp {
  int L, loss;                      /* layers; NM_MLP_XENT or NM_MLP_MSE */
  int from_output;                  /* errors of every layer come from e_L (dfa) */
  nm_tensor *X, *x1;                /* the input buffer [1 x n_0] and its view */
  nm_tensor *T, *t1;                /* the target buffer [1 x n_L] and its view */
  nm_mlp_layer *layer;              /* layer[0 .. L-1] */
} nm_mlp;

/* The step on input x ([n_0] or [1 x n_0], any dtype: copied into X)
** and target t ([n_L], or [1 x n_L]: copied into T unless it has the
** net's dtype and 2 dimensions, then read in place), with learning rate
** eta[l] for layer l where learn[l] is non-zero. Mirrors
** MLP:forward, MLP:backward and MLP:update of nn.lua for one sample and
** the fused delta rule (W += -eta e_l y_{l-1}^T, b += -eta e_l).
** Returns NM_OK, NM_EINVAL when an operand does not fit (nothing written
** then), or a kernel's status. */
int nm_mlp_step(const nm_mlp *net, const nm_tensor *x, const nm_tensor *t, const double *eta,
                const int *learn);

/* NULL when the network's operands fit nm_mlp_step, else a message
** naming what does not (static text). */
const char *nm_mlp_check(const nm_mlp *net);

#endif

/*
** nm_plastic.h: fused kernels for hot plasticity rules (outer-product
** updates with gates and masks, Oja's subspace rule) over nm_tensor,
** calling cblas. Never includes lua.h.
**
** Conventions: a minibatch is stored as rows, so `post` is B x m and
** `pre` is B x n for a weight W of shape m x n (post x pre); a 1-D
** `post`/`pre` is one sample (B = 1). Updates are sums over the batch:
** callers that want the batch mean pass alpha / B. All tensors of one
** call share W's dtype. 2-D operands must have one unit stride (any
** contiguous tensor or its transpose); the binding copies the others.
*/
#ifndef NM_PLASTIC_H
#define NM_PLASTIC_H

#include <stddef.h>

#include "nm_tensor.h"

/* Gated outer-product update, the common form of delta, Hebbian and
** three-factor rules:
**   W += alpha * ((post .* gate)^T pre) .* mask
**   b += alpha * sum over rows of (post .* gate)
** gate, mask and b may be NULL (no gate, dense, no bias). Entries where
** mask is 0 never change; mask entries are used as multipliers. `scratch`
** holds nm_plastic_outer_scratch(...) elements of W's dtype. */
int nm_plastic_outer(const nm_tensor *W, double alpha, const nm_tensor *post,
                     const nm_tensor *gate, const nm_tensor *pre,
                     const nm_tensor *mask, const nm_tensor *b, void *scratch);
/* Its bias part alone: b += alpha * sum over rows of post (no gate), the
** bits nm_plastic_outer writes into b. */
void nm_plastic_outer_bias(const nm_tensor *b, double alpha, const nm_tensor *post);
size_t nm_plastic_outer_scratch(const nm_tensor *W, const nm_tensor *post,
                                const nm_tensor *gate, const nm_tensor *mask);

/* Oja's subspace rule (Oja 1989), summed over the batch:
**   W += alpha * (Y^T X - (Y^T Y) W) .* mask
** one sample: W += alpha * y (x - W^T y)^T .* mask. Y is B x m (or m),
** X is B x n (or n), W is m x n; mask may be NULL. */
int nm_plastic_oja(const nm_tensor *W, double alpha, const nm_tensor *Y,
                   const nm_tensor *X, const nm_tensor *mask, void *scratch);
size_t nm_plastic_oja_scratch(const nm_tensor *W, const nm_tensor *Y);

/* One Adam step over same-shaped contiguous tensors (the optimiser's hot
** loop in one pass), with d the ascent direction scaled by sign:
**   m = b1 m + (1 - b1) sign d;   v = b2 v + (1 - b2) d^2
**   p += step m / (sqrt(v) inv_sqrt_bc2 + eps)
** where step = lr / (1 - b1^k) and inv_sqrt_bc2 = 1 / sqrt(1 - b2^k).
** Returns NM_EINVAL when shapes, dtypes or contiguity do not fit. */
int nm_adam_update(const nm_tensor *p, const nm_tensor *d, const nm_tensor *m,
                   const nm_tensor *v, double sign, double b1, double b2, double eps,
                   double step, double inv_sqrt_bc2);

/* Backward through an elementwise activation, in place:
**   E .*= f'(A)   (Y = f(A), from the forward pass)
** in one pass without a derivative buffer. act: NM_ACT_* below; beta is
** softplus's. E, A, Y contiguous and of one shape and dtype (Y may be
** NULL for relu, softplus and identity). Returns NM_EINVAL otherwise. */
enum { NM_ACT_IDENTITY = 0, NM_ACT_RELU, NM_ACT_SIGMOID, NM_ACT_TANH, NM_ACT_SOFTPLUS };
int nm_mul_dact(const nm_tensor *E, const nm_tensor *A, const nm_tensor *Y, int act,
                double beta);

/* Check the operands of a call; return NULL when they fit, or a message
** naming what is wrong (static text; the binding adds the shapes) and set
** *which to the offending operand's position in the call's parameter
** list, counting W as 0 and leaving out alpha. */
const char *nm_plastic_outer_check(const nm_tensor *W, const nm_tensor *post,
                                   const nm_tensor *gate, const nm_tensor *pre,
                                   const nm_tensor *mask, const nm_tensor *b, int *which);
const char *nm_plastic_oja_check(const nm_tensor *W, const nm_tensor *Y,
                                 const nm_tensor *X, const nm_tensor *mask, int *which);

/* 1 when a 2-D tensor can be handed to cblas directly (a unit stride in
** one dimension and a leading dimension that covers the other). */
int nm_blas_compatible(const nm_tensor *t);

#endif

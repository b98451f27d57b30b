/*
** nm_folded.h: fused kernels of the energy-based folded autoencoder
** (lua/nm/models/folded_ae.lua): rates with their derivatives in one pass,
** dendritic mismatches with their squared norm, the velocity of the
** energy form with its largest magnitude, and the settling step. Never
** includes lua.h.
**
** Operands are 1-D or 2-D tensors of one shape and one dtype with any
** strides; optional operands may be NULL. The result may be the same
** tensor as an input (same elements), not a shifted view of one. Nothing
** allocates. Shapes and dtypes are checked (NM_EINVAL); the Lua binding
** checks first, with messages.
*/
#ifndef NM_FOLDED_H
#define NM_FOLDED_H

#include "nm_tensor.h"

typedef enum {
  NM_FOLDED_IDENTITY = 0,
  NM_FOLDED_TANH = 1,
  NM_FOLDED_SIGMOID = 2,
  NM_FOLDED_SOFTPLUS = 3,   /* log(1 + exp(beta u)) / beta */
  NM_FOLDED_RELU = 4
} nm_folded_phi;

/* r = phi(u) and, when d is not NULL, d = phi'(u), from one evaluation of
** phi per element (tanh: d = 1 - r^2; sigmoid: d = r (1 - r)). */
int nm_folded_rates(const nm_tensor *r, const nm_tensor *d, const nm_tensor *u,
                    nm_folded_phi phi, double beta);

/* e = u - p and *sumsq = sum of e^2 (accumulated in double). */
int nm_folded_mismatch(const nm_tensor *e, const nm_tensor *u, const nm_tensor *p,
                       double *sumsq);

/* v = scale (a_w ew + a_g eg + a_n n + d .* back), leaving out the terms
** whose operand is NULL (d and back come together); *maxabs = max |v|
** (0 for an empty tensor). With a_w = -lambda, a_g = lambda - 1,
** a_n = -2 beta, back = lambda W_{i+1}^T e^W_{i+1} + (1-lambda) G_{i-1}^T e^G_{i-1}
** and scale = 1/tau this is du_i/dt = -dE/du_i / tau. */
int nm_folded_velocity(const nm_tensor *v, const nm_tensor *ew, double a_w,
                       const nm_tensor *eg, double a_g, const nm_tensor *n, double a_n,
                       const nm_tensor *d, const nm_tensor *back, double scale,
                       double *maxabs);

/* One settling step: u += dt v when m is NULL (Euler), else the heavy ball
** m = mom m + dt v, u += m. */
int nm_folded_step(const nm_tensor *u, const nm_tensor *m, const nm_tensor *v,
                   double dt, double mom);

#endif

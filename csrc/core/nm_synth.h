/*
** nm_synth.h: synthetic data generators (random-teacher-network
** regression, low-rank linear regression). Every draw comes from an
** nm_rng, so a seed gives the same data everywhere. Never includes lua.h.
*/
#ifndef NM_SYNTH_H
#define NM_SYNTH_H

#include <stdint.h>
#include "nm_tensor.h"
#include "nm_random.h"

/* A distribution for inputs or weights: uniform on [a, b), or normal
** with mean a and standard deviation b. */
typedef enum { NM_DIST_UNIFORM = 0, NM_DIST_NORMAL = 1 } nm_dist_kind;
typedef struct nm_dist {
  nm_dist_kind kind;
  double a, b;
} nm_dist;

/* A teacher's rate function. NM_PHI_SOFTPLUS is the soft rectifier
** gamma * log(1 + exp(beta * (u - theta))) of the dendritic-microcircuit
** regression task; the others ignore gamma, beta, theta. */
typedef enum {
  NM_PHI_IDENTITY = 0, NM_PHI_SIGMOID, NM_PHI_TANH, NM_PHI_RELU, NM_PHI_SOFTPLUS
} nm_phi_kind;
typedef struct nm_phi {
  nm_phi_kind kind;
  double gamma, beta, theta;
} nm_phi;

/* phi(u) for one value (the reference the kernels use). */
double nm_phi_apply(const nm_phi *phi, double u);

/* Fills t (any shape, strides, dtype) in row-major order from d.
** NM_EINVAL for bad parameters, NM_EINTR when interrupted. */
int nm_synth_draw(nm_rng *g, const nm_tensor *t, nm_dist d);

/* Teacher network with `nlayers` weight matrices: for every row x of X
** (N x n_0), h_0 = x, h_l = phi(gain[l] * W[l] h_{l-1}), Y = h_nlayers.
** W[l] is n_l x n_{l-1}; hidden[l] (l < nlayers-1) are N x n_{l+1}
** buffers for the hidden rates; Y is N x n_L. All tensors 2-D, one dtype,
** contiguous (the binding checks; NM_EINVAL here otherwise). Allocates
** nothing; one GEMM per layer. */
int nm_synth_teacher_forward(int nlayers, const nm_tensor *const *W, const double *gain,
                             const nm_phi *phi, const nm_tensor *X,
                             const nm_tensor *const *hidden, const nm_tensor *Y);

/* Low-rank matrix A (m x n) = U diag(sv) V^T with U (m x k) and V (n x k)
** orthonormal columns: Gaussian draws made orthonormal by two passes of
** modified Gram-Schmidt (k <= min(m, n)). U and V are written (they are
** the exact factors); sv[0..k-1] the singular values (any order).
** Contiguous tensors of one dtype; products accumulated in double.
** NM_EINVAL for bad shapes or non-finite sv. */
int nm_synth_lowrank_matrix(nm_rng *g, const nm_tensor *A, int64_t k, const double *sv,
                            const nm_tensor *U, const nm_tensor *V);

/* Y (N x m) = X A^T + noise_std * N(0, 1), X (N x n) drawn from `input`
** first (row-major), then the noise in row-major order (no noise draws
** when noise_std is 0). Contiguous tensors of one dtype; one GEMM. */
int nm_synth_lowrank_sample(nm_rng *g, const nm_tensor *A, nm_dist input, double noise_std,
                            const nm_tensor *X, const nm_tensor *Y);

#endif

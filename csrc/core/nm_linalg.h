/*
** nm_linalg.h: dense linear algebra on tensors beyond BLAS, from LAPACK:
** the symmetric eigendecomposition and the exact reduced-rank-regression
** (RRR) solver. Used by the models (BMVR's gain-control constraint and
** optimum, the folded autoencoder's principal angles) and bound as
** nm.symeig / nm.rrr. Never includes lua.h.
*/
#ifndef NM_LINALG_H
#define NM_LINALG_H

#include <stdint.h>
#include "nm_tensor.h"

/* Eigenvalues (ascending) of the symmetric float64 matrix A [p x p]
** into w [p] (float64); eigenvectors into the columns of V [p x p]
** (float64) when V is not NULL. LAPACK dsyevd. A is not modified. */
int nm_symeig(const nm_tensor *A, const nm_tensor *w, const nm_tensor *V);

/* Reduced-rank regression min_{rank B <= k} (1/T) sum_t ||y_t - B x_t||^2
** (no intercept), exactly: with Cxx = X^T X/T, Cxy = X^T Y/T, the
** pseudo-inverse Cxx^+ (eigenvalues below rtol * largest dropped; rtol <= 0
** picks n * DBL_EPSILON) and G = Cyx Cxx^+ Cxy with eigenpairs
** (mu_i, u_i) descending, the optimum is tr Cyy - sum_{i<=k} mu_i and
** B = U_k U_k^T Cyx Cxx^+. */
typedef struct nm_rrr_result {
  double objective;      /* the rank-k optimum */
  double ols_objective;  /* the unconstrained least-squares optimum */
  double trace_cyy;      /* objective of B = 0 */
  int64_t rank;          /* numerical rank of Cxx */
} nm_rrr_result;

/* Outputs, all float64 contiguous and optional (NULL): B [m x n]; the
** factorisation W1 [k x n], W2T [k x m] with W2T^T W1 = B and
** W1 Cxx W1^T = I_k (the gain-control constraint saturated, as BMVR's
** fixed point); mu [m], the eigenvalues of G in descending order.
** k must be <= min(m, rank); NM_EINVAL otherwise. Allocates (freed). */
int nm_rrr_solve(const nm_tensor *X, const nm_tensor *Y, int64_t k, double rtol,
                 nm_rrr_result *res, const nm_tensor *B, const nm_tensor *W1,
                 const nm_tensor *W2T, const nm_tensor *mu);

#endif

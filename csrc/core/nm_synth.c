/*
** nm_synth.c: synthetic regression data (random teacher networks,
** low-rank linear maps) and the row gather used by minibatch buffers.
*/
#include <math.h>
#include <string.h>
#include <cblas.h>

#include "nm_synth.h"

/* Element i of a contiguous tensor, read or written as double. */
static double ld(const nm_tensor *t, int64_t i) {
  return t->dtype == NM_FLOAT64 ? ((const double *)t->data)[i]
                                : (double)((const float *)t->data)[i];
}

static void st(const nm_tensor *t, int64_t i, double v) {
  if (t->dtype == NM_FLOAT64) ((double *)t->data)[i] = v;
  else ((float *)t->data)[i] = (float)v;
}

static int is_matrix(const nm_tensor *t, nm_dtype dt) {
  return t->ndim == 2 && t->dtype == dt && nm_is_contiguous(t);
}

double nm_phi_apply(const nm_phi *phi, double u) {
  switch (phi->kind) {
    case NM_PHI_SIGMOID:
      return u >= 0 ? 1.0 / (1.0 + exp(-u)) : exp(u) / (1.0 + exp(u));
    case NM_PHI_TANH:
      return tanh(u);
    case NM_PHI_RELU:
      return u > 0 ? u : 0.0;
    case NM_PHI_SOFTPLUS: {
      /* log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for large z */
      double z = phi->beta * (u - phi->theta);
      return phi->gamma * (fmax(z, 0.0) + log1p(exp(-fabs(z))));
    }
    case NM_PHI_IDENTITY:
    default:
      return u;
  }
}

int nm_synth_draw(nm_rng *g, const nm_tensor *t, nm_dist d) {
  if (d.kind == NM_DIST_NORMAL) return nm_rng_fill_normal(g, t, d.a, d.b);
  return nm_rng_fill_uniform(g, t, d.a, d.b);
}

/* out (N x n_out) = phi(gain * in W^T): one GEMM, then phi in place. */
static void teacher_layer(const nm_tensor *W, double gain, const nm_phi *phi,
                          const nm_tensor *in, const nm_tensor *out) {
  int n = (int)in->size[0], n_in = (int)in->size[1], n_out = (int)out->size[1];
  if (W->dtype == NM_FLOAT64)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n_out, n_in, gain,
                (const double *)in->data, n_in, (const double *)W->data, n_in, 0.0,
                (double *)out->data, n_out);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n_out, n_in, (float)gain,
                (const float *)in->data, n_in, (const float *)W->data, n_in, 0.0f,
                (float *)out->data, n_out);
  if (phi->kind == NM_PHI_IDENTITY) return;
  int64_t total = (int64_t)n * n_out;
  for (int64_t i = 0; i < total; i++) st(out, i, nm_phi_apply(phi, ld(out, i)));
}

int nm_synth_teacher_forward(int nlayers, const nm_tensor *const *W, const double *gain,
                             const nm_phi *phi, const nm_tensor *X,
                             const nm_tensor *const *hidden, const nm_tensor *Y) {
  if (nlayers < 1) return NM_EINVAL;
  nm_dtype dt = X->dtype;
  if (!is_matrix(X, dt) || !is_matrix(Y, dt) || X->size[0] != Y->size[0])
    return NM_EINVAL;
  const nm_tensor *in = X;
  for (int l = 0; l < nlayers; l++) {
    const nm_tensor *out = (l == nlayers - 1) ? Y : hidden[l];
    if (!is_matrix(W[l], dt) || !is_matrix(out, dt) || out->size[0] != X->size[0] ||
        W[l]->size[0] != out->size[1] || W[l]->size[1] != in->size[1] ||
        out->size[1] > INT32_MAX || in->size[1] > INT32_MAX || X->size[0] > INT32_MAX)
      return NM_EINVAL;
    teacher_layer(W[l], gain[l], phi, in, out);
    in = out;
  }
  return NM_OK;
}

/* Makes the k columns of Q (rows x k, contiguous) orthonormal, in place,
** by two passes of modified Gram-Schmidt ("twice is enough" for
** orthogonality to rounding). A column that collapses against the earlier
** ones (probability zero for Gaussian draws) is drawn again. */
static int orthonormalize(nm_rng *g, const nm_tensor *Q) {
  int64_t rows = Q->size[0], k = Q->size[1];
  for (int64_t j = 0; j < k; j++) {
    for (int attempt = 0;; attempt++) {
      double before = 0.0, after = 0.0;
      for (int64_t i = 0; i < rows; i++) before += ld(Q, i * k + j) * ld(Q, i * k + j);
      for (int pass = 0; pass < 2; pass++) {
        for (int64_t r = 0; r < j; r++) {
          double dot = 0.0;
          for (int64_t i = 0; i < rows; i++) dot += ld(Q, i * k + r) * ld(Q, i * k + j);
          for (int64_t i = 0; i < rows; i++)
            st(Q, i * k + j, ld(Q, i * k + j) - dot * ld(Q, i * k + r));
        }
      }
      for (int64_t i = 0; i < rows; i++) after += ld(Q, i * k + j) * ld(Q, i * k + j);
      if (after > 1e-6 * before && after > 0.0) {
        double inv = 1.0 / sqrt(after);
        for (int64_t i = 0; i < rows; i++) st(Q, i * k + j, ld(Q, i * k + j) * inv);
        break;
      }
      if (attempt == 100) return NM_EINVAL;
      for (int64_t i = 0; i < rows; i++) st(Q, i * k + j, nm_rng_normal(g));
    }
  }
  return NM_OK;
}

int nm_synth_lowrank_matrix(nm_rng *g, const nm_tensor *A, int64_t k, const double *sv,
                            const nm_tensor *U, const nm_tensor *V) {
  nm_dtype dt = A->dtype;
  if (!is_matrix(A, dt) || !is_matrix(U, dt) || !is_matrix(V, dt)) return NM_EINVAL;
  int64_t m = A->size[0], n = A->size[1];
  if (k < 0 || k > m || k > n || U->size[0] != m || U->size[1] != k ||
      V->size[0] != n || V->size[1] != k)
    return NM_EINVAL;
  for (int64_t r = 0; r < k; r++)
    if (!isfinite(sv[r])) return NM_EINVAL;
  int status = nm_rng_fill_normal(g, U, 0.0, 1.0);
  if (status == NM_OK) status = nm_rng_fill_normal(g, V, 0.0, 1.0);
  if (status == NM_OK) status = orthonormalize(g, U);
  if (status == NM_OK) status = orthonormalize(g, V);
  if (status != NM_OK) return status;
  for (int64_t i = 0; i < m; i++) {
    if (nm_interrupted) return NM_EINTR;
    for (int64_t j = 0; j < n; j++) {
      double s = 0.0;
      for (int64_t r = 0; r < k; r++) s += ld(U, i * k + r) * sv[r] * ld(V, j * k + r);
      st(A, i * n + j, s);
    }
  }
  return NM_OK;
}

int nm_synth_lowrank_sample(nm_rng *g, const nm_tensor *A, nm_dist input, double noise_std,
                            const nm_tensor *X, const nm_tensor *Y) {
  nm_dtype dt = A->dtype;
  if (!is_matrix(A, dt) || !is_matrix(X, dt) || !is_matrix(Y, dt)) return NM_EINVAL;
  int64_t rows = X->size[0], n = A->size[1], m = A->size[0];
  if (X->size[1] != n || Y->size[0] != rows || Y->size[1] != m || rows > INT32_MAX ||
      n > INT32_MAX || m > INT32_MAX || !isfinite(noise_std) || noise_std < 0)
    return NM_EINVAL;
  int status = nm_synth_draw(g, X, input);
  if (status != NM_OK) return status;
  if (dt == NM_FLOAT64)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)m, (int)n, 1.0,
                (const double *)X->data, (int)n, (const double *)A->data, (int)n, 0.0,
                (double *)Y->data, (int)m);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)m, (int)n, 1.0f,
                (const float *)X->data, (int)n, (const float *)A->data, (int)n, 0.0f,
                (float *)Y->data, (int)m);
  if (noise_std > 0) {
    int64_t total = rows * m;
    for (int64_t i = 0; i < total; i++)
      st(Y, i, ld(Y, i) + noise_std * nm_rng_normal(g));
  }
  return NM_OK;
}

/*
** nm_linalg.c: symmetric eigendecomposition (LAPACK dsyevd) and the exact
** reduced-rank-regression solver (see nm_linalg.h).
*/
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "nm_linalg.h"

/* Rows per block when the covariances are accumulated. */
#define NM_LINALG_BLOCK 256

/* A [rows x cols] matrix of dtype dt with contiguous rows (any row stride). */
static int is_rows(const nm_tensor *t, int64_t cols, nm_dtype dt) {
  return t->ndim == 2 && t->dtype == dt && t->size[1] == cols &&
         (t->size[1] <= 1 || t->stride[1] == 1) &&
         (t->size[0] <= 1 || t->stride[0] >= cols) && t->stride[0] <= INT32_MAX;
}

/* LAPACK from OpenBLAS (Fortran calling convention: everything by
** reference, hidden lengths of the character arguments at the end). */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a,
                    const int *lda, double *w, double *work, const int *lwork,
                    int *iwork, const int *liwork, int *info, size_t jobz_len,
                    size_t uplo_len);

/* dsyevd on a p x p row-major symmetric matrix `a` of which the upper
** triangle is read (LAPACK sees the transpose: its lower triangle).
** Overwrites a: row i becomes eigenvector i, since LAPACK's column-major
** columns are our rows. Eigenvalues ascending into w. */
static int syevd(int p, double *a, double *w) {
  int info = 0, lwork = -1, liwork = -1, iwork_query = 0;
  double work_query = 0;
  dsyevd_("V", "L", &p, a, &p, w, &work_query, &lwork, &iwork_query, &liwork, &info, 1, 1);
  if (info != 0) return NM_EINVAL;
  lwork = (int)work_query + 1;
  liwork = iwork_query + 1;
  double *work = malloc((size_t)lwork * sizeof(double));
  int *iwork = malloc((size_t)liwork * sizeof(int));
  if (work == NULL || iwork == NULL) { free(work); free(iwork); return NM_ENOMEM; }
  dsyevd_("V", "L", &p, a, &p, w, work, &lwork, iwork, &liwork, &info, 1, 1);
  free(work);
  free(iwork);
  return info == 0 ? NM_OK : NM_ENONFINITE;
}

int nm_symeig(const nm_tensor *A, const nm_tensor *w, const nm_tensor *V) {
  if (A->ndim != 2 || A->size[0] != A->size[1] || A->dtype != NM_FLOAT64) return NM_EINVAL;
  const int64_t p = A->size[0];
  if (p < 1 || p > 46340) return NM_EINVAL;
  if (w->ndim != 1 || w->size[0] != p || w->dtype != NM_FLOAT64) return NM_EINVAL;
  if (V != NULL && !(V->ndim == 2 && V->size[0] == p && V->size[1] == p &&
                     V->dtype == NM_FLOAT64))
    return NM_EINVAL;
  double *a = malloc((size_t)(p * p + p) * sizeof(double));
  if (a == NULL) return NM_ENOMEM;
  double *ev = a + p * p;
  const double *Ad = (const double *)A->data;
  for (int64_t i = 0; i < p; i++)
    for (int64_t j = 0; j < p; j++) {
      double v = Ad[i * A->stride[0] + j * A->stride[1]];
      if (!isfinite(v)) { free(a); return NM_ENONFINITE; }
      a[i * p + j] = v;
    }
  int st = syevd((int)p, a, ev);
  if (st == NM_OK) {
    double *wd = (double *)w->data;
    for (int64_t i = 0; i < p; i++) wd[i * w->stride[0]] = ev[i];
    if (V != NULL) {
      double *Vd = (double *)V->data;
      for (int64_t i = 0; i < p; i++)       /* column i of V = eigenvector i */
        for (int64_t j = 0; j < p; j++) Vd[j * V->stride[0] + i * V->stride[1]] = a[i * p + j];
    }
  }
  free(a);
  return st;
}

/* Rows i0..i0+rows-1 of a data matrix as doubles into buf [rows x cols]. */
static void rows_to_double(const nm_tensor *t, int64_t i0, int rows, double *buf) {
  const int64_t cols = t->size[1];
  for (int i = 0; i < rows; i++) {
    if (t->dtype == NM_FLOAT64) {
      memcpy(buf + i * cols, (const double *)t->data + (i0 + i) * t->stride[0],
             (size_t)cols * sizeof(double));
    } else {
      const float *src = (const float *)t->data + (i0 + i) * t->stride[0];
      for (int64_t j = 0; j < cols; j++) buf[i * cols + j] = src[j];
    }
  }
}

static void write_matrix(const nm_tensor *out, const double *src, int64_t rows, int64_t cols) {
  double *d = (double *)out->data;
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++)
      d[i * out->stride[0] + j * out->stride[1]] = src[i * cols + j];
}

int nm_rrr_solve(const nm_tensor *X, const nm_tensor *Y, int64_t k, double rtol,
                 nm_rrr_result *res, const nm_tensor *B, const nm_tensor *W1,
                 const nm_tensor *W2T, const nm_tensor *mu_out) {
  if (X->ndim != 2 || Y->ndim != 2 || X->size[0] != Y->size[0] || X->size[0] < 1)
    return NM_EINVAL;
  const int64_t T = X->size[0], n64 = X->size[1], m64 = Y->size[1];
  if (n64 < 1 || m64 < 1 || n64 > 46340 || m64 > 46340 || k < 1 || k > m64) return NM_EINVAL;
  if (!is_rows(X, n64, X->dtype) || !is_rows(Y, m64, Y->dtype)) return NM_EINVAL;
  const int n = (int)n64, m = (int)m64, kk = (int)k;
  if (B != NULL && !(B->ndim == 2 && B->size[0] == m && B->size[1] == n && B->dtype == NM_FLOAT64))
    return NM_EINVAL;
  if (W1 != NULL && !(W1->ndim == 2 && W1->size[0] == k && W1->size[1] == n &&
                      W1->dtype == NM_FLOAT64))
    return NM_EINVAL;
  if (W2T != NULL && !(W2T->ndim == 2 && W2T->size[0] == k && W2T->size[1] == m &&
                       W2T->dtype == NM_FLOAT64))
    return NM_EINVAL;
  if (mu_out != NULL && !(mu_out->ndim == 1 && mu_out->size[0] == m &&
                          mu_out->dtype == NM_FLOAT64))
    return NM_EINVAL;

  /* one allocation: Cxx (becomes eigenvectors), lambda, Cxy, VC, Bt,
  ** G (becomes eigenvectors), mu, Ukt, P, and the row blocks */
  const size_t nn = (size_t)n * n, nm_ = (size_t)n * m, mm = (size_t)m * m;
  const size_t blk = NM_LINALG_BLOCK;
  size_t total = nn + n + 3 * nm_ + mm + m + (size_t)kk * m + (size_t)kk * n + blk * (n + m);
  double *buf = calloc(total, sizeof(double));
  if (buf == NULL) return NM_ENOMEM;
  double *Cxx = buf, *lam = Cxx + nn, *Cxy = lam + n, *VC = Cxy + nm_, *Bt = VC + nm_;
  double *G = Bt + nm_, *mu = G + mm, *Ukt = mu + m, *P = Ukt + (size_t)kk * m;
  double *Xb = P + (size_t)kk * n, *Yb = Xb + blk * n;
  double trace_yy = 0;
  int st = NM_OK;

  for (int64_t i0 = 0; i0 < T; i0 += NM_LINALG_BLOCK) {
    if (nm_interrupted) { st = NM_EINTR; goto done; }
    int rows = (int)(T - i0 < NM_LINALG_BLOCK ? T - i0 : NM_LINALG_BLOCK);
    rows_to_double(X, i0, rows, Xb);
    rows_to_double(Y, i0, rows, Yb);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, rows, 1.0 / (double)T, Xb, n,
                1.0, Cxx, n);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, m, rows, 1.0 / (double)T, Xb, n,
                Yb, m, 1.0, Cxy, m);
    for (size_t i = 0; i < (size_t)rows * m; i++) trace_yy += Yb[i] * Yb[i] / (double)T;
  }
  for (size_t i = 0; i < nn; i++)
    if (!isfinite(Cxx[i])) { st = NM_ENONFINITE; goto done; }
  if (!isfinite(trace_yy)) { st = NM_ENONFINITE; goto done; }

  /* Cxx = sum_i lam_i v_i v_i^T; row i of Cxx now holds v_i */
  if ((st = syevd(n, Cxx, lam)) != NM_OK) goto done;
  double lam_max = lam[n - 1];
  double thr = (rtol > 0 ? rtol : (double)n * DBL_EPSILON) * (lam_max > 0 ? lam_max : 0);
  int first = 0;                          /* eigenvalues kept: first..n-1 */
  while (first < n && !(lam[first] > thr)) first++;
  const int r = n - first;
  res->rank = r;
  res->trace_cyy = trace_yy;
  if (r < 1) { st = NM_EINVAL; goto done; }
  const double *Vr = Cxx + (size_t)first * n;

  /* VC = Vr Cxy [r x m]; A = diag(lam^-1/2) VC; G = A^T A = Cyx Cxx^+ Cxy */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, m, n, 1, Vr, n, Cxy, m, 0, VC, m);
  for (int i = 0; i < r; i++) {
    double s = 1 / sqrt(lam[first + i]);
    for (int j = 0; j < m; j++) VC[(size_t)i * m + j] *= s;
  }
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, m, r, 1, VC, m, VC, m, 0, G, m);
  /* Bt = Cxx^+ Cxy = Vr^T diag(lam^-1/2) A [n x m] */
  for (int i = 0; i < r; i++) {
    double s = 1 / sqrt(lam[first + i]);
    for (int j = 0; j < m; j++) VC[(size_t)i * m + j] *= s;
  }
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, m, r, 1, Vr, n, VC, m, 0, Bt, m);

  if ((st = syevd(m, G, mu)) != NM_OK) goto done;
  double top = 0, all = 0;
  for (int i = 0; i < m; i++) {
    double v = mu[m - 1 - i] > 0 ? mu[m - 1 - i] : 0;   /* descending; G is PSD */
    all += v;
    if (i < kk) {
      top += v;
      memcpy(Ukt + (size_t)i * m, G + (size_t)(m - 1 - i) * m, (size_t)m * sizeof(double));
    }
  }
  res->objective = trace_yy - top;
  res->ols_objective = trace_yy - all;
  if (mu_out != NULL) {
    double *md = (double *)mu_out->data;
    for (int i = 0; i < m; i++) md[i * mu_out->stride[0]] = mu[m - 1 - i];
  }

  /* P = Uk^T Cyx Cxx^+ = Ukt Bt^T [k x n]; B = Uk P */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kk, n, m, 1, Ukt, m, Bt, m, 0, P, n);
  if (B != NULL) {
    double *Bd = Xb;                         /* reuse: needs m*n <= blk*(n+m) */
    if ((size_t)m * n > blk * (size_t)(n + m)) {
      Bd = malloc((size_t)m * n * sizeof(double));
      if (Bd == NULL) { st = NM_ENOMEM; goto done; }
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, kk, 1, Ukt, m, P, n, 0, Bd, n);
    write_matrix(B, Bd, m, n);
    if (Bd != Xb) free(Bd);
  }
  if (W1 != NULL || W2T != NULL) {
    /* W1 = diag(mu^-1/2) P satisfies W1 Cxx W1^T = I; W2T = diag(mu^1/2) Uk^T */
    if (!(mu[m - kk] > (double)m * DBL_EPSILON * mu[m - 1])) { st = NM_EINVAL; goto done; }
    for (int i = 0; i < kk; i++) {
      double s = sqrt(mu[m - 1 - i]);
      for (int j = 0; j < n; j++) P[(size_t)i * n + j] /= s;
      for (int j = 0; j < m; j++) Ukt[(size_t)i * m + j] *= s;
    }
    if (W1 != NULL) write_matrix(W1, P, kk, n);
    if (W2T != NULL) write_matrix(W2T, Ukt, kk, m);
  }
done:
  free(buf);
  return st;
}

/*
** nm_microcircuit.c: forward Euler dynamics of dendritic cortical
** microcircuits with low-pass filtered dendritic-prediction plasticity
** (see nm_microcircuit.h for the equations).
*/
#include <math.h>
#include <stddef.h>

#include <cblas.h>

#include "nm_microcircuit.h"

int64_t nm_mc_work_size(const nm_mc_net *net) {
  int64_t m = net->n0;
  for (int k = 1; k <= net->N; k++)
    if (net->layer[k].n > m) m = net->layer[k].n;
  return m;
}

int nm_mc_check_params(const nm_mc_params *p, const char **what) {
#define BAD(cond, name) do { if (!(cond)) { *what = name; return NM_EINVAL; } } while (0)
  BAD(isfinite(p->dt) && p->dt > 0, "dt");
  BAD(isfinite(p->g_lk) && p->g_lk >= 0, "g_lk");
  BAD(isfinite(p->g_B) && p->g_B >= 0, "g_B");
  BAD(isfinite(p->g_A) && p->g_A >= 0, "g_A");
  BAD(isfinite(p->g_D) && p->g_D >= 0, "g_D");
  BAD(isfinite(p->g_som) && p->g_som >= 0, "g_som");
  /* the attenuation factors divide by these */
  BAD(p->g_lk + p->g_B > 0, "g_lk + g_B");
  BAD(p->g_lk + p->g_D > 0, "g_lk + g_D");
  BAD(isfinite(p->sigma) && p->sigma >= 0, "sigma");
  BAD(isfinite(p->tau_in) && p->tau_in >= 0, "tau_in");
  BAD(isfinite(p->tau_w) && p->tau_w > 0, "tau_w");
  BAD(isfinite(p->gamma), "gamma");
  BAD(isfinite(p->beta) && p->beta > 0, "beta");
  BAD(isfinite(p->theta), "theta");
  BAD(p->rate == NM_MC_SOFTPLUS || p->rate == NM_MC_LOGISTIC, "rate");
  BAD(p->noise == NM_MC_NOISE_SQRT_DT || p->noise == NM_MC_NOISE_DT, "noise");
#undef BAD
  return NM_OK;
}

/* phi of one potential; the soft-plus form never overflows. */
static inline double phi1(const nm_mc_params *p, double u) {
  double x = p->beta * (u - p->theta);
  if (p->rate == NM_MC_SOFTPLUS)
    return p->gamma * (x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)));
  return x >= 0 ? p->gamma / (1 + exp(-x)) : p->gamma * exp(x) / (1 + exp(x));
}

void nm_mc_phi(const nm_mc_params *p, double *r, const double *u, int64_t n) {
  for (int64_t i = 0; i < n; i++) r[i] = phi1(p, u[i]);
}

/* y = A x (+ b): A [m x n] row-major. */
static void matvec(double *y, const double *A, const double *x, const double *b,
                   int64_t m, int64_t n) {
  if (b) {
    for (int64_t i = 0; i < m; i++) y[i] = b[i];
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)m, (int)n, 1.0, A, (int)n, x, 1, 1.0, y, 1);
  } else {
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)m, (int)n, 1.0, A, (int)n, x, 1, 0.0, y, 1);
  }
}

/* One low-pass plasticity step of an m x n connection, forward Euler:
** W += c D, then D += a (e pre^T - D), element by element in one sweep. */
static void lowpass_outer(double *restrict W, double *restrict D, const double *e,
                          const double *pre, int64_t m, int64_t n, double a, double c) {
  for (int64_t i = 0; i < m; i++) {
    double ei = e[i];
    double *restrict w = W + i * n, *restrict d = D + i * n;
    for (int64_t j = 0; j < n; j++) {
      double dj = d[j];
      w[j] += c * dj;
      d[j] = dj + a * (ei * pre[j] - dj);
    }
  }
}

/* The same for a bias (presynaptic rate 1). */
static void lowpass_bias(double *restrict b, double *restrict Db, const double *e,
                         int64_t m, double a, double c) {
  for (int64_t i = 0; i < m; i++) {
    double di = Db[i];
    b[i] += c * di;
    Db[i] = di + a * (e[i] - di);
  }
}

void nm_mc_refresh(nm_mc_net *net) {
  const nm_mc_params *p = &net->p;
  int N = net->N;
  for (int k = 1; k <= N; k++) {
    nm_mc_layer *L = &net->layer[k];
    nm_mc_phi(p, L->r, L->u, L->n);
    if (k < N) nm_mc_phi(p, L->rI, L->uI, net->layer[k + 1].n);
  }
  for (int k = 1; k <= N; k++) {
    nm_mc_layer *L = &net->layer[k];
    const double *pre = k == 1 ? net->r0 : net->layer[k - 1].r;
    int64_t npre = k == 1 ? net->n0 : net->layer[k - 1].n;
    matvec(L->vB, L->W_up, pre, L->b_up, L->n, npre);
    if (k < N) {
      int64_t nnext = net->layer[k + 1].n;
      matvec(L->vD, L->W_down, net->layer[k + 1].r, NULL, L->n, nnext);
      for (int64_t i = 0; i < L->n; i++) L->vA[i] = L->vD[i];
      cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)L->n, (int)nnext, 1.0, L->W_pi,
                  (int)nnext, L->rI, 1, 1.0, L->vA, 1);
      matvec(L->vI, L->W_ip, L->r, L->b_ip, nnext, L->n);
    }
  }
}

/* The four rules of every layer, from the rates and potentials of the
** present state (nm_mc_refresh just ran). */
static void plasticity(nm_mc_net *net) {
  const nm_mc_params *p = &net->p;
  int N = net->N;
  double a = p->dt / p->tau_w;
  double cD = p->g_D / (p->g_lk + p->g_D);
  double *e = net->work;
  for (int k = 1; k <= N; k++) {
    nm_mc_layer *L = &net->layer[k];
    const double *pre = k == 1 ? net->r0 : net->layer[k - 1].r;
    int64_t npre = k == 1 ? net->n0 : net->layer[k - 1].n;
    if (L->eta_up != 0) {
      double cB = p->g_B / (p->g_lk + p->g_B + (k < N ? p->g_A : 0.0));
      for (int64_t i = 0; i < L->n; i++) e[i] = L->r[i] - phi1(p, cB * L->vB[i]);
      double c = p->dt * L->eta_up;
      lowpass_outer(L->W_up, L->D_up, e, pre, L->n, npre, a, c);
      if (L->b_up) lowpass_bias(L->b_up, L->Db_up, e, L->n, a, c);
    }
    if (k == N) break;
    nm_mc_layer *up = &net->layer[k + 1];
    int64_t nI = up->n;
    if (L->eta_ip != 0) {
      for (int64_t j = 0; j < nI; j++) e[j] = L->rI[j] - phi1(p, cD * L->vI[j]);
      double c = p->dt * L->eta_ip;
      lowpass_outer(L->W_ip, L->D_ip, e, L->r, nI, L->n, a, c);
      if (L->b_ip) lowpass_bias(L->b_ip, L->Db_ip, e, nI, a, c);
    }
    if (L->eta_pi != 0) {
      for (int64_t i = 0; i < L->n; i++) e[i] = -L->vA[i];
      lowpass_outer(L->W_pi, L->D_pi, e, L->rI, L->n, nI, a, p->dt * L->eta_pi);
    }
    if (L->eta_down != 0) {
      for (int64_t i = 0; i < L->n; i++) e[i] = L->r[i] - phi1(p, L->vD[i]);
      lowpass_outer(L->W_down, L->D_down, e, up->r, L->n, nI, a, p->dt * L->eta_down);
    }
  }
}

/* Somatic potentials, interneurons first: they read u_{k+1} at time t. */
static void voltages(nm_mc_net *net, int nudged, nm_rng *g) {
  const nm_mc_params *p = &net->p;
  int N = net->N;
  double dt = p->dt, s = 0;
  if (p->sigma > 0) s = p->sigma * (p->noise == NM_MC_NOISE_DT ? dt : sqrt(dt));
  for (int k = 1; k < N; k++) {
    nm_mc_layer *L = &net->layer[k];
    const double *unext = net->layer[k + 1].u;
    int64_t nI = net->layer[k + 1].n;
    for (int64_t j = 0; j < nI; j++) {
      double v = L->uI[j];
      double du = -p->g_lk * v + p->g_D * (L->vI[j] - v) + p->g_som * (unext[j] - v);
      v += dt * du;
      if (s > 0) v += s * nm_rng_normal(g);
      L->uI[j] = v;
    }
  }
  for (int k = 1; k <= N; k++) {
    nm_mc_layer *L = &net->layer[k];
    for (int64_t i = 0; i < L->n; i++) {
      double v = L->u[i];
      double du = -p->g_lk * v + p->g_B * (L->vB[i] - v);
      if (k < N) du += p->g_A * (L->vA[i] - v);
      else if (nudged) du += p->g_som * (net->ut[i] - v);
      v += dt * du;
      if (s > 0) v += s * nm_rng_normal(g);
      L->u[i] = v;
    }
  }
}

static void lowpass_vector(double *y, const double *x, int64_t n, double dt, double tau) {
  if (tau > 0) {
    double a = dt / tau;
    for (int64_t i = 0; i < n; i++) y[i] += a * (x[i] - y[i]);
  } else {
    for (int64_t i = 0; i < n; i++) y[i] = x[i];
  }
}

static int all_finite(const nm_mc_net *net) {
  double acc = 0;
  for (int k = 1; k <= net->N; k++) {
    const nm_mc_layer *L = &net->layer[k];
    for (int64_t i = 0; i < L->n; i++) acc += L->u[i] * 0.0;
    if (k < net->N)
      for (int64_t j = 0; j < net->layer[k + 1].n; j++) acc += L->uI[j] * 0.0;
  }
  return acc == 0.0;   /* inf * 0 and NaN * 0 are NaN */
}

int nm_mc_run(nm_mc_net *net, int64_t steps, const double *x, const double *target,
              nm_rng *g, int learn) {
  const nm_mc_params *p = &net->p;
  int64_t nout = net->layer[net->N].n;
  if (p->sigma > 0 && g == NULL) return NM_EINVAL;
  int status = NM_OK;
  for (int64_t t = 0; t < steps; t++) {
    lowpass_vector(net->r0, x, net->n0, p->dt, p->tau_in);
    if (target) lowpass_vector(net->ut, target, nout, p->dt, p->tau_in);
    nm_mc_refresh(net);
    if (learn) plasticity(net);
    voltages(net, target != NULL, g);
    if (nm_interrupted) { status = NM_EINTR; break; }
  }
  nm_mc_refresh(net);
  if (status == NM_OK && !all_finite(net)) status = NM_ENONFINITE;
  return status;
}

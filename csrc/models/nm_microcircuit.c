/*
** nm_microcircuit.c: forward Euler dynamics of dendritic cortical
** microcircuits with low-pass filtered dendritic-prediction plasticity
** (see nm_microcircuit.h for the equations).
*/
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cblas.h>

#include "nm_microcircuit.h"
#include "nm_simd.h"
#include "nm_vmath.h"

/* The per-element loops (rates, plasticity) are written to vectorise:
** GCC at -O2 only does so with -O3's cost model and once told that
** floating-point exceptions are not observed (the selects below evaluate
** both sides); on x86-64 they are also cloned for AVX2 and AVX-512 and
** picked at load time. Contraction into fused multiply-adds stays off, so
** every clone computes the same bits. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=off")
#if defined(__x86_64__) && defined(__linux__)
#define MC_HOT NM_HOT   /* nm_simd.h: the one multiversioning rule */
#endif
#endif
#ifndef MC_HOT
#define MC_HOT
#endif

/* Noisy units: every interneuron and pyramidal cell. */
static int64_t noisy_units(const nm_mc_net *net) {
  int64_t total = 0;
  for (int k = 1; k <= net->N; k++) {
    total += net->layer[k].n;
    if (k < net->N) total += net->layer[k + 1].n;
  }
  return total;
}

/* Scratch layout: the induction factor e (largest population), then the
** step's normal deviates (noisy units, rounded up to pairs), then the
** uniforms they come from (two per pair). */
int64_t nm_mc_work_size(const nm_mc_net *net) {
  int64_t m = net->n0;
  for (int k = 1; k <= net->N; k++)
    if (net->layer[k].n > m) m = net->layer[k].n;
  int64_t pairs = (noisy_units(net) + 1) / 2;
  return m + 2 * pairs + 2 * pairs;
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
  BAD(isfinite(p->tau_trgt) && p->tau_trgt >= 0, "tau_trgt");
  BAD(isfinite(p->tau_w) && p->tau_w > 0, "tau_w");
  BAD(isfinite(p->gamma), "gamma");
  BAD(isfinite(p->beta) && p->beta > 0, "beta");
  BAD(isfinite(p->theta), "theta");
  BAD(p->rate == NM_MC_SOFTPLUS || p->rate == NM_MC_LOGISTIC, "rate");
  BAD(p->noise == NM_MC_NOISE_SQRT_DT || p->noise == NM_MC_NOISE_DT, "noise");
#undef BAD
  return NM_OK;
}

/* r[i] = phi(c u[i]) for the rate function of p; r may be u: gamma
** softplus(x) or gamma logistic(x), x = beta (c u - theta), by nm_vmath.h's
** element functions (those of the tensor operations, so the same bits as
** Net:phi in Lua), without overflow. */
MC_HOT
static void phi_scaled(const nm_mc_params *p, double *r, const double *u, double c, int64_t n) {
  double beta = p->beta, theta = p->theta, gamma = p->gamma;
  if (p->rate == NM_MC_SOFTPLUS) {
    for (int64_t i = 0; i < n; i++) r[i] = gamma * vsoftplus_f64(beta * (c * u[i] - theta), 1.0);
  } else {
    for (int64_t i = 0; i < n; i++) r[i] = gamma * vsigmoid_f64(beta * (c * u[i] - theta));
  }
}

void nm_mc_phi(const nm_mc_params *p, double *r, const double *u, int64_t n) {
  phi_scaled(p, r, u, 1.0, n);
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
MC_HOT
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

void nm_mc_plasticity(nm_mc_net *net, int k, nm_mc_pathway pathway, double eta) {
  const nm_mc_params *p = &net->p;
  int N = net->N;
  double a = p->dt / p->tau_w, c = p->dt * eta;
  double *e = net->work;
  nm_mc_layer *L = &net->layer[k];
  if (pathway == NM_MC_UP) {
    const double *pre = k == 1 ? net->r0 : net->layer[k - 1].r;
    int64_t npre = k == 1 ? net->n0 : net->layer[k - 1].n;
    double cB = p->g_B / (p->g_lk + p->g_B + (k < N ? p->g_A : 0.0));
    phi_scaled(p, e, L->vB, cB, L->n);                   /* phi(vhatB) */
    for (int64_t i = 0; i < L->n; i++) e[i] = L->r[i] - e[i];
    lowpass_outer(L->W_up, L->D_up, e, pre, L->n, npre, a, c);
    if (L->b_up) lowpass_bias(L->b_up, L->Db_up, e, L->n, a, c);
    return;
  }
  nm_mc_layer *up = &net->layer[k + 1];
  int64_t nI = up->n;
  switch (pathway) {
    case NM_MC_IP:
      phi_scaled(p, e, L->vI, p->g_D / (p->g_lk + p->g_D), nI);   /* phi(vhatI) */
      for (int64_t j = 0; j < nI; j++) e[j] = L->rI[j] - e[j];
      lowpass_outer(L->W_ip, L->D_ip, e, L->r, nI, L->n, a, c);
      if (L->b_ip) lowpass_bias(L->b_ip, L->Db_ip, e, nI, a, c);
      break;
    case NM_MC_PI:
      for (int64_t i = 0; i < L->n; i++) e[i] = -L->vA[i];
      lowpass_outer(L->W_pi, L->D_pi, e, L->rI, L->n, nI, a, c);
      break;
    default:                                             /* NM_MC_DOWN */
      phi_scaled(p, e, L->vD, 1.0, L->n);                /* phi(W_down r_{k+1}) */
      for (int64_t i = 0; i < L->n; i++) e[i] = L->r[i] - e[i];
      lowpass_outer(L->W_down, L->D_down, e, up->r, L->n, nI, a, c);
      break;
  }
}

/* One connection's step: its compiled rule, or the built-in one. */
static void connection_step(nm_mc_net *net, int k, nm_mc_pathway pathway, double eta) {
  const nm_mc_rule *r = &net->layer[k].rule[pathway];
  if (r->fn) r->fn(r->in, NULL, r->scratch, r->sc);
  else nm_mc_plasticity(net, k, pathway, eta);
}

/* The four rules of every layer, from the rates and potentials of the
** present state (nm_mc_refresh just ran). */
static void plasticity(nm_mc_net *net) {
  int N = net->N;
  for (int k = 1; k <= N; k++) {
    nm_mc_layer *L = &net->layer[k];
    if (L->eta_up != 0) connection_step(net, k, NM_MC_UP, L->eta_up);
    if (k == N) break;
    if (L->eta_ip != 0) connection_step(net, k, NM_MC_IP, L->eta_ip);
    if (L->eta_pi != 0) connection_step(net, k, NM_MC_PI, L->eta_pi);
    if (L->eta_down != 0) connection_step(net, k, NM_MC_DOWN, L->eta_down);
  }
}

/* Box-Muller on pairs (a, b) of uniforms in [0, 1): radius
** sqrt(-2 log(1 - a)), angle 2 pi b; out[2i] = radius cos, out[2i+1] =
** radius sin. The angle is reduced exactly to a quarter turn q plus
** f in [-1/8, 1/8] of a turn, whose sine and cosine are Taylor series. */
MC_HOT
static void box_muller(double *out, const double *a, const double *b, int64_t pairs) {
  const double TWO_PI = 6.28318530717958647693;
  for (int64_t i = 0; i < pairs; i++) {
    double radius = sqrt(-2.0 * vlog_f64(1.0 - a[i]));
    const double shifter = 0x1.8p52;
    double q = (4.0 * b[i] + shifter) - shifter;        /* nearest quarter, 0..4 */
    double t = TWO_PI * (b[i] - 0.25 * q);               /* |t| <= pi/4 */
    double t2 = t * t;
    /* Taylor series to t^17 (sine) and t^16 (cosine), Estrin's scheme */
    double t4 = t2 * t2, t8 = t4 * t4;
    double sn = ((1.0 - t2 * (1.0 / 6.0)) + t4 * (1.0 / 120.0 - t2 * (1.0 / 5040.0))) +
                t8 * ((1.0 / 362880.0 - t2 * (1.0 / 39916800.0)) +
                      t4 * (1.0 / 6227020800.0 - t2 * (1.0 / 1307674368000.0)) +
                      t8 * (1.0 / 355687428096000.0));
    sn = sn * t;
    double cs = ((1.0 - t2 * 0.5) + t4 * (1.0 / 24.0 - t2 * (1.0 / 720.0))) +
                t8 * ((1.0 / 40320.0 - t2 * (1.0 / 3628800.0)) +
                      t4 * (1.0 / 479001600.0 - t2 * (1.0 / 87178291200.0)) +
                      t8 * (1.0 / 20922789888000.0));
    /* rotate by q quarter turns: (cos, sin) -> (-sin, cos) -> ... */
    double quarter = q == 4.0 ? 0.0 : q;                 /* q mod 4 */
    double c = quarter == 0.0 ? cs : quarter == 1.0 ? -sn : quarter == 2.0 ? -cs : sn;
    double s = quarter == 0.0 ? sn : quarter == 1.0 ? cs : quarter == 2.0 ? -sn : -cs;
    out[2 * i] = radius * c;
    out[2 * i + 1] = radius * s;
  }
}

/* The step's deviates into out[0..count-1] (count rounded up to pairs):
** uniforms drawn as a, b, a, b, ... then transformed together. */
static void step_normals(nm_rng *g, double *out, double *uniforms, int64_t count) {
  int64_t pairs = (count + 1) / 2;
  double *a = uniforms, *b = uniforms + pairs;
  for (int64_t i = 0; i < pairs; i++) {
    a[i] = nm_rng_uniform(g);
    b[i] = nm_rng_uniform(g);
  }
  box_muller(out, a, b, pairs);
}

/* Somatic potentials, interneurons first: they read u_{k+1} at time t. */
static void voltages(nm_mc_net *net, int nudged, nm_rng *g) {
  const nm_mc_params *p = &net->p;
  int N = net->N;
  double dt = p->dt, s = 0;
  const double *xi = NULL;
  if (p->sigma > 0) {
    s = p->sigma * (p->noise == NM_MC_NOISE_DT ? dt : sqrt(dt));
    int64_t m = nm_mc_work_size(net), count = noisy_units(net), pairs = (count + 1) / 2;
    double *noise = net->work + (m - 4 * pairs);
    step_normals(g, noise, noise + 2 * pairs, count);
    xi = noise;
  }
  for (int k = 1; k < N; k++) {
    nm_mc_layer *L = &net->layer[k];
    const double *unext = net->layer[k + 1].u;
    int64_t nI = net->layer[k + 1].n;
    for (int64_t j = 0; j < nI; j++) {
      double v = L->uI[j];
      double du = -p->g_lk * v + p->g_D * (L->vI[j] - v) + p->g_som * (unext[j] - v);
      v += dt * du;
      if (xi) v += s * *xi++;
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
      if (xi) v += s * *xi++;
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

void nm_mc_begin_step(nm_mc_net *net, const double *x, const double *target) {
  const nm_mc_params *p = &net->p;
  lowpass_vector(net->r0, x, net->n0, p->dt, p->tau_in);
  if (target) lowpass_vector(net->ut, target, net->layer[net->N].n, p->dt, p->tau_trgt);
  nm_mc_refresh(net);
}

int nm_mc_end_step(nm_mc_net *net, int nudged, nm_rng *g) {
  if (net->p.sigma > 0 && g == NULL) return NM_EINVAL;
  voltages(net, nudged, g);
  return nm_interrupted ? NM_EINTR : NM_OK;
}

int nm_mc_finish(nm_mc_net *net) {
  nm_mc_refresh(net);
  return all_finite(net) ? NM_OK : NM_ENONFINITE;
}

int nm_mc_run(nm_mc_net *net, int64_t steps, const double *x, const double *target,
              nm_rng *g, int learn) {
  if (net->p.sigma > 0 && g == NULL) return NM_EINVAL;
  int status = NM_OK;
  for (int64_t t = 0; t < steps; t++) {
    nm_mc_begin_step(net, x, target);
    if (learn) plasticity(net);
    status = nm_mc_end_step(net, target != NULL, g);
    if (status != NM_OK) break;
  }
  int fin = nm_mc_finish(net);
  return status != NM_OK ? status : fin;
}

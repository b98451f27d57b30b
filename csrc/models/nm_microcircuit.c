/*
** nm_microcircuit.c: forward Euler dynamics of dendritic cortical
** microcircuits, calling the plasticity steps bound to its connections
** (see nm_microcircuit.h for the equations).
*/
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nm_matvec.h"
#include "nm_microcircuit.h"
#include "nm_simd.h"
#include "nm_vmath.h"

/* The per-element loops (rates, noise) are written to vectorise:
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

/* Scratch layout: the step's normal deviates (noisy units, rounded up to
** pairs), then the uniforms they come from (two per pair). */
int64_t nm_mc_work_size(const nm_mc_net *net) {
  int64_t pairs = (noisy_units(net) + 1) / 2;
  return 2 * pairs + 2 * pairs;
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

/* r[i] = phi(u[i]) for the rate function of p (r may be u): gamma
** softplus(x) or gamma logistic(x), x = beta (u - theta), by nm_vmath.h's
** element functions (those of the tensor operations, so the same bits as
** Net:phi in Lua), without overflow. */
MC_HOT
void nm_mc_phi(const nm_mc_params *p, double *r, const double *u, int64_t n) {
  double beta = p->beta, theta = p->theta, gamma = p->gamma;
  if (p->rate == NM_MC_SOFTPLUS) {
    for (int64_t i = 0; i < n; i++) r[i] = gamma * vsoftplus_f64(beta * (u[i] - theta), 1.0);
  } else {
    for (int64_t i = 0; i < n; i++) r[i] = gamma * vsigmoid_f64(beta * (u[i] - theta));
  }
}

/* y = A x (+ b): A [m x n] row-major, nm_matvec.h's product and order
** (the bias added last). */
static void matvec(double *y, const double *A, const double *x, const double *b,
                   int64_t m, int64_t n) {
  if (b) {
    for (int64_t i = 0; i < m; i++) y[i] = b[i];
    nm_mv_f64(m, n, 1.0, A, n, x, 1.0, y);
  } else {
    nm_mv_f64(m, n, 1.0, A, n, x, 0.0, y);
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
      nm_mv_f64(L->n, nnext, 1.0, L->W_pi, nnext, L->rI, 1.0, L->vA);
      matvec(L->vI, L->W_ip, L->r, L->b_ip, nnext, L->n);
    }
  }
}

/* One connection's step: the rule bound to it (nm_mc_rules_ready checked). */
static void connection_step(nm_mc_net *net, int k, nm_mc_pathway pathway) {
  const nm_mc_rule *r = &net->layer[k].rule[pathway];
  r->fn(r->in, NULL, r->scratch, r->sc);
}

int nm_mc_rules_ready(const nm_mc_net *net, int *k, nm_mc_pathway *pathway) {
  for (int l = 1; l <= net->N; l++) {
    const nm_mc_layer *L = &net->layer[l];
    double eta[4] = {L->eta_up, L->eta_ip, L->eta_pi, L->eta_down};
    for (int w = 0; w < (l < net->N ? 4 : 1); w++) {
      if (eta[w] != 0 && L->rule[w].fn == NULL) {
        *k = l;
        *pathway = (nm_mc_pathway)w;
        return 0;
      }
    }
  }
  return 1;
}

/* The four rules of every layer, from the rates and potentials of the
** present state (nm_mc_refresh just ran). */
static void plasticity(nm_mc_net *net) {
  int N = net->N;
  for (int k = 1; k <= N; k++) {
    nm_mc_layer *L = &net->layer[k];
    if (L->eta_up != 0) connection_step(net, k, NM_MC_UP);
    if (k == N) break;
    if (L->eta_ip != 0) connection_step(net, k, NM_MC_IP);
    if (L->eta_pi != 0) connection_step(net, k, NM_MC_PI);
    if (L->eta_down != 0) connection_step(net, k, NM_MC_DOWN);
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
    int64_t count = noisy_units(net), pairs = (count + 1) / 2;
    double *noise = net->work;
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
  int k;
  nm_mc_pathway pathway;
  if (net->p.sigma > 0 && g == NULL) return NM_EINVAL;
  if (learn && !nm_mc_rules_ready(net, &k, &pathway)) return NM_EINVAL;
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

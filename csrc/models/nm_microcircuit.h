/*
** nm_microcircuit.h: the full dynamics of dendritic cortical microcircuits
** (Sacramento, Costa, Bengio & Senn 2018, "Dendritic cortical microcircuits
** approximate the backpropagation algorithm", NeurIPS 31): forward Euler
** steps of a whole network of two- and three-compartment pyramidal cells
** and SST interneurons; the plasticity of each connection is a step bound
** to it (nm_mc_rule: compiled from a rule written in Lua). Never includes
** lua.h.
**
** Layers k = 0 (input rates), 1..N-1 (hidden), N (output). Hidden layer k
** has n_k pyramidal cells and n_{k+1} interneurons; interneuron j is nudged
** by pyramidal cell j of layer k+1. Weights (postsynaptic first):
**   W_up[k]   [n_k x n_{k-1}]   layer k-1 -> basal dendrites of layer k
**   W_down[k] [n_k x n_{k+1}]   layer k+1 -> apical dendrites of layer k
**   W_ip[k]   [n_{k+1} x n_k]   pyramidal -> interneurons (same layer)
**   W_pi[k]   [n_k x n_{k+1}]   interneurons -> apical dendrites
** Every array is a contiguous row-major float64 block owned by the caller
** (the Lua binding keeps them inside tensor storage).
*/
#ifndef NM_MICROCIRCUIT_H
#define NM_MICROCIRCUIT_H

#include <stdint.h>
#include "nm_tensor.h"
#include "nm_random.h"

/* Most weight layers N a network may have (layers 0..N). */
#define NM_MC_MAXLAYERS 8

typedef enum {
  NM_MC_SOFTPLUS = 0,   /* phi(u) = gamma log(1 + exp(beta (u - theta))) */
  NM_MC_LOGISTIC = 1    /* phi(u) = gamma / (1 + exp(-beta (u - theta))) */
} nm_mc_rate;

typedef enum {
  NM_MC_NOISE_SQRT_DT = 0,  /* Euler-Maruyama: u += ... + sigma sqrt(dt) xi */
  NM_MC_NOISE_DT = 1        /* u += ... + sigma dt xi (several reimplementations) */
} nm_mc_noise;

/* The four plastic pathways of a hidden layer (the output layer has only
** NM_MC_UP). */
typedef enum {
  NM_MC_UP = 0,     /* W_up: bottom-up onto the basal dendrite */
  NM_MC_IP = 1,     /* W_ip: pyramidal -> interneuron */
  NM_MC_PI = 2,     /* W_pi: interneuron -> apical dendrite */
  NM_MC_DOWN = 3    /* W_down: top-down onto the apical dendrite */
} nm_mc_pathway;

/* A plasticity step compiled by nm.compile (its calling convention): it
** updates the weights and traces of one connection in place from the
** arrays of the network it was bound to. NULL fn: none bound. */
typedef int (*nm_mc_rule_fn)(void *const *in, void *const *out, void *scratch, const double *sc);
typedef struct nm_mc_rule {
  nm_mc_rule_fn fn;
  void *const *in;
  void *scratch;
  const double *sc;
} nm_mc_rule;

/* Membrane and plasticity constants (times in ms, capacitance 1, rest 0). */
typedef struct nm_mc_params {
  double dt;                      /* Euler step */
  double g_lk, g_B, g_A, g_D, g_som;
  double sigma;                   /* noise amplitude */
  nm_mc_noise noise;
  double tau_in;                  /* low-pass of the input rates; 0: none */
  double tau_trgt;                /* low-pass of the target potentials; 0: none */
  double tau_w;                   /* low-pass of the plasticity induction terms (> 0) */
  nm_mc_rate rate;
  double gamma, beta, theta;
} nm_mc_params;

/* Pyramidal layer k (1..N). The hidden-only fields are NULL for k = N.
** b_up / b_ip (basal biases, a constant presynaptic rate of 1) and their
** traces may be NULL. vD holds the top-down part W_down r_{k+1} of vA. */
typedef struct nm_mc_layer {
  int64_t n;                      /* pyramidal cells n_k */
  double *u, *r, *vB;             /* [n] soma, rate, basal potential */
  double *W_up, *D_up;            /* [n x n_{k-1}] weights, low-pass trace */
  double *b_up, *Db_up;           /* [n] or NULL */
  double eta_up;
  /* hidden layers only (interneurons: n_{k+1} of them) */
  double *vA, *vD;                /* [n] apical potential, its top-down part */
  double *uI, *rI, *vI;           /* [n_{k+1}] interneuron soma, rate, dendrite */
  double *W_down, *D_down;        /* [n x n_{k+1}] */
  double *W_pi, *D_pi;            /* [n x n_{k+1}] */
  double *W_ip, *D_ip;            /* [n_{k+1} x n] */
  double *b_ip, *Db_ip;           /* [n_{k+1}] or NULL */
  double eta_down, eta_pi, eta_ip;
  nm_mc_rule rule[4];             /* by nm_mc_pathway: the bound steps, or fn NULL */
} nm_mc_layer;

typedef struct nm_mc_net {
  int N;                          /* weight layers, 1..NM_MC_MAXLAYERS */
  int64_t n0;                     /* input size */
  double *r0;                     /* [n0] low-pass filtered input rates */
  double *ut;                     /* [n_N] low-pass filtered target potentials */
  nm_mc_layer layer[NM_MC_MAXLAYERS + 1];   /* 1..N used */
  nm_mc_params p;
  double *work;                   /* nm_mc_work_size(net) doubles of scratch */
} nm_mc_net;

/* Doubles of scratch a network needs (the largest population, plus the
** deviates of one step and their uniforms). */
int64_t nm_mc_work_size(const nm_mc_net *net);

/* Checks the constants (NM_EINVAL for dt <= 0, negative conductances,
** tau_w <= 0, beta <= 0, non-finite values ...); *what gets the name of
** the first bad one. */
int nm_mc_check_params(const nm_mc_params *p, const char **what);

/* The rate function of the network, elementwise: r[i] = phi(u[i]). */
void nm_mc_phi(const nm_mc_params *p, double *r, const double *u, int64_t n);

/* Recomputes every rate and dendritic potential from the present state
** (r0, u, uI): r_k = phi(u_k), rI_k = phi(uI_k), vB_k = W_up[k] r_{k-1}
** (+ b_up), vD_k = W_down[k] r_{k+1}, vA_k = vD_k + W_pi[k] rI_k,
** vI_k = W_ip[k] r_k (+ b_ip). */
void nm_mc_refresh(nm_mc_net *net);

/* `steps` forward Euler steps with the input pattern x [n0] and the
** target potentials target [n_N] (NULL: no target; the output layer is
** then not nudged). One step, with every right-hand side taken from the
** state at time t:
**   r0 += dt/tau_in (x - r0);  ut += dt/tau_trgt (target - ut)   (tau 0: copies)
**   rates and dendritic potentials as in nm_mc_refresh
**   plasticity (when learn != 0): the rule bound to each connection with
**     eta != 0 (rule[].fn: a step nm.compile generated from the rule's
**     Lua step, e.g. rules/dendritic_prediction.lua: W += dt eta D,
**     D += dt/tau_w (T - D), T = (phi(u_k) - phi(cB_k vB_k)) r_{k-1}^T)
**   interneurons k = 1..N-1:
**     uI_k += dt (-g_lk uI + g_D (vI - uI) + g_som (u_{k+1} - uI)) + noise
**   pyramidal cells k = 1..N-1:
**     u_k += dt (-g_lk u + g_B (vB - u) + g_A (vA - u)) + noise
**   output: u_N += dt (-g_lk u + g_B (vB - u) [+ g_som (ut - u)]) + noise
** noise = sigma sqrt(dt) xi (or sigma dt xi), xi ~ N(0, 1) taken in the
** order of the updates above (interneurons of layers 1..N-1, then
** pyramidal cells of layers 1..N, each in index order). Each step draws
** ceil(units / 2) pairs of uniforms (a, b) from g, in that order, and
** turns pair i into xi_{2i} = rho cos(2 pi b), xi_{2i+1} = rho sin(2 pi b),
** rho = sqrt(-2 log(1 - a)) (Box-Muller, vectorised; an odd last deviate
** is dropped). g may be NULL only when sigma == 0. NM_EINVAL, nothing
** run, when learning and a connection with eta != 0 has no rule bound (see
** nm_mc_rules_ready). A connection with eta == 0 keeps its weights and
** its trace. After the last step the rates and potentials are refreshed
** (nm_mc_refresh), so they describe the final state. Polls nm_interrupted
** after every step (NM_EINTR leaves a consistent state); returns
** NM_ENONFINITE when a potential became NaN or infinite. Allocates
** nothing. */
int nm_mc_run(nm_mc_net *net, int64_t steps, const double *x, const double *target,
              nm_rng *g, int learn);

/* 1 when every connection with eta != 0 has a rule bound (rule[].fn);
** else 0 and the first without one in *k, *pathway. */
int nm_mc_rules_ready(const nm_mc_net *net, int *k, nm_mc_pathway *pathway);

/* nm_mc_run's step in three parts, for a caller that runs plasticity
** rules of its own in between (one step: begin, the rules, end; after the
** last step, finish):
**   begin: low-pass the input (and target) and refresh rates and potentials;
**   end:   the potentials' Euler step (nudged: the target is shown), noise
**          from g; NM_EINVAL when sigma > 0 and g is NULL, NM_EINTR when
**          interrupted (the state stays consistent);
**   finish: refresh; NM_ENONFINITE when a potential is NaN or infinite.
** nm_mc_run is exactly these with the bound rule of every connection
** whose eta is not 0 in between. */
void nm_mc_begin_step(nm_mc_net *net, const double *x, const double *target);
int nm_mc_end_step(nm_mc_net *net, int nudged, nm_rng *g);
int nm_mc_finish(nm_mc_net *net);

#endif

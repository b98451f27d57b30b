/*
** nm_rcn.c: the recurrent-chemical-network step and its adjoint (see
** nm_rcn.h), for float and double networks.
*/
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "nm_rcn.h"
#include "nm_simd.h"
#include "nm_vmath.h"

/* The row loops need the vectoriser (-O3); trapping math off lets it
** compute both branches of the tanh and select, as nm_microcircuit.c. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math")
#endif

/* Row kernels are compiled for AVX-512 and AVX2 as well as the baseline
** and picked at load time (GCC ifunc) by CPU feature, not by CPU model
** (an "arch=" clone is only picked on that maker's model). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define NM_RCN_CLONES NM_HOT   /* nm_simd.h: the one multiversioning rule */
#else
#define NM_RCN_CLONES
#endif

static int64_t max_width(const nm_motif_net *net) {
  int64_t mx = 0;
  for (int l = 0; l <= net->layers; l++) if (net->sizes[l] > mx) mx = net->sizes[l];
  return mx;
}

int64_t nm_rcn_work_size(const nm_rcn *rcn) {
  const nm_motif_net *net = &rcn->net;
  const int64_t mx = max_width(net), L = rcn->chemicals;
  int64_t adj = 0;
  for (int l = 0; l <= net->layers; l++)
    adj += 4 * net->sizes[l] + (l > 0 ? net->sizes[l - 1] : 0);
  /* a, b coefficient vectors; tanh, G and D rows; g0, g1, g2; h0, h1, h2 */
  return 2 * L * mx + 3 * L * mx + 3 * L * mx + 3 * mx + adj;
}

int nm_rcn_check(const nm_rcn *rcn) {
  if (nm_motif_check(&rcn->net) != NM_OK) return NM_EINVAL;
  if (rcn->chemicals < 1 || rcn->chemicals > NM_RCN_MAXCHEM) return NM_EINVAL;
  for (int c = 0; c < rcn->chemicals; c++)
    if (!isfinite(rcn->decay[c]) || !isfinite(rcn->gain[c]) || rcn->gain[c] == 0)
      return NM_EINVAL;
  return NM_OK;
}

/* The meta-parameters of one layer, with the motifs not in use zeroed. */
typedef struct layer_coef {
  double P[NM_RCN_MAXCHEM][NM_META_MOTIFS];
  double K[NM_RCN_MAXCHEM][NM_RCN_MAXCHEM];
  double v[NM_RCN_MAXCHEM];
  double b[NM_RCN_MAXCHEM];
} layer_coef;

static void load_layer(const nm_rcn *rcn, const nm_rcn_params *p, int l, layer_coef *lc) {
  const int L = rcn->chemicals;
  const double *P = p->P + l * p->P_stride, *K = p->K + l * p->K_stride;
  const double *v = p->v + l * p->v_stride;
  const double *b = p->b != NULL ? p->b + l * p->b_stride : NULL;
  for (int c = 0; c < L; c++) {
    for (int r = 0; r < NM_META_MOTIFS; r++) lc->P[c][r] = rcn->use[r] ? P[c * NM_META_MOTIFS + r] : 0;
    for (int k = 0; k < L; k++) lc->K[c][k] = K[c * L + k];
    lc->v[c] = v[c];
    lc->b[c] = (b != NULL && !rcn->neuron_bias) ? b[c] : 0;
  }
}

/* What the motifs in use need. */
typedef struct motif_needs {
  int b;      /* the e_{l-1} terms (motifs 1, 2, 4, 6, 8): e_0 and G e_{l-1} */
  int q;      /* q = W^T y_l (motifs 6, 7, 9) */
  int oja;    /* motif 9: the y q^T term */
  int w;      /* motif 3: the -W term */
} motif_needs;

static motif_needs needs_of(const nm_rcn *rcn) {
  const int *u = rcn->use;
  motif_needs nd;
  nd.b = u[1] || u[2] || u[4] || u[6] || u[8];
  nd.q = u[6] || u[7] || u[9];
  nd.oja = u[9];
  nd.w = u[3];
  return nd;
}

/* ------------------------------------------------------------ tanh rows */

/* tanh over a float row, vectorisable: for |x| < 0.625 the odd
** polynomial of Cephes' tanhf; above, (1 - e) / (1 + e) with e =
** exp(-2|x|) = 2^n times a degree-6 Taylor polynomial on |r| <= ln 2 / 2
** (n by the float shifter, 2^n built in the exponent bits; the argument
** clamped at -40, where tanh is 1 in float). Measured against libm's
** double tanh on [-20, 20]: relative error below 2e-7. Branch-free so
** that GCC vectorises it; NaN passes through, so guards still see it. */
NM_RCN_CLONES
static void tanh_row_f32(int64_t m, float *x) {
  for (int64_t j = 0; j < m; j++) {
    const float v = x[j];
    const float a = fabsf(v);
    const float z = v * v;
    const float small = v + v * z * ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z -
                                       5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
                                     3.33332819422e-1f);
    float y = -2.0f * a;
    y = y < -40.0f ? -40.0f : y;
    const float shifter = 0x1.8p23f;                   /* rounds to an integer */
    const float t = y * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    const float r = (y - n * 0.693359375f) + n * 2.12194440e-4f;
    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f +
                    r * (8.3333338e-3f + r * 1.3888889e-3f)))));
    uint32_t bits;                                     /* unsigned: NaN must not overflow */
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23;          /* 2^n, n in [-58, 0] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    const float e = p * scale;
    const float big = copysignf((1.0f - e) / (1.0f + e), v);
    const float res = a < 0.625f ? small : big;
    x[j] = v != v ? v : res;
  }
}

/* tanh over a double row: libm (the float64 path is the reference). */
static void tanh_row_f64(int64_t m, double *x) {
  for (int64_t j = 0; j < m; j++) x[j] = tanh(x[j]);
}

/* The kernels, once per element type. */
#define real float
#define FN(name) name##_f32
#define GEMV cblas_sgemv
#define GER cblas_sger
#define TANH_ROW tanh_row_f32
#include "nm_motif_gen.h"
#include "nm_rcn_gen.h"
#undef real
#undef FN
#undef GEMV
#undef GER
#undef TANH_ROW

#define real double
#define FN(name) name##_f64
#define GEMV cblas_dgemv
#define GER cblas_dger
#define TANH_ROW tanh_row_f64
#include "nm_motif_gen.h"
#include "nm_rcn_gen.h"
#undef real
#undef FN
#undef GEMV
#undef GER
#undef TANH_ROW

/* The RCN trace: the motif network's signals, without the motif rule's
** update vectors (nm_motif_gen.h). */
int64_t nm_rcn_trace_size(const nm_rcn *rcn) { return trace_size(&rcn->net, TR_A); }

int nm_rcn_forward(const nm_rcn *rcn, const nm_tensor *const *H_out,
                   const nm_tensor *const *W_out, const nm_tensor *const *H_in,
                   const nm_tensor *const *W_in, const nm_tensor *const *B,
                   const nm_tensor *x, int64_t label, const nm_rcn_params *p, void *trace,
                   void *work) {
  if (nm_rcn_check(rcn) != NM_OK || label < 0 || label >= rcn->net.sizes[rcn->net.layers])
    return NM_EINVAL;
  if (rcn->net.dtype == NM_FLOAT64)
    return rcn_forward_f64(rcn, H_out, W_out, H_in, W_in, B, x, label, p, trace, work);
  return rcn_forward_f32(rcn, H_out, W_out, H_in, W_in, B, x, label, p, trace, work);
}

int nm_rcn_backward(const nm_rcn *rcn, const nm_tensor *const *Hbar,
                    const nm_tensor *const *Wbar, const nm_tensor *const *H_in,
                    const nm_tensor *const *W_in, const nm_tensor *const *H_out,
                    const nm_tensor *const *B, const void *trace, const nm_rcn_params *p,
                    const nm_rcn_grads *g, void *work) {
  if (nm_rcn_check(rcn) != NM_OK) return NM_EINVAL;
  if (rcn->net.dtype == NM_FLOAT64)
    return rcn_backward_f64(rcn, Hbar, Wbar, H_in, W_in, H_out, B, trace, p, g, work);
  return rcn_backward_f32(rcn, Hbar, Wbar, H_in, W_in, H_out, B, trace, p, g, work);
}

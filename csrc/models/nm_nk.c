/*
** nm_nk.c: NK-model regression data and the random hill climber of
** neuron autoencoder networks (NN, NAN, ANN), incremental and naive.
*/
#include <math.h>
#include <string.h>

#include "nm_math.h"
#include "nm_nk.h"
#include "nm_simd.h"

/* The hot loops are written to vectorise. GCC at -O2 only vectorises
** them at -O3's cost model and once told that floating-point exceptions
** are not observed (the clamps in nk_sig are branches otherwise); on
** x86-64 the hot functions are also cloned for AVX2 and AVX-512 and
** picked at load time. None of this changes a result: the same IEEE
** operations run in the same order on each element, implicit contraction
** into fused multiply-adds stays off and the explicit ones are fmaf
** (correctly rounded everywhere), so every clone and the naive oracle
** compute the same bits (the spec checks it). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=off")
#if defined(__x86_64__) && defined(__linux__)
#define NK_HOT NM_HOT   /* nm_simd.h: the one multiversioning rule */
#endif
#endif
#ifndef NK_HOT
#define NK_HOT
#endif

/* ----------------------------------------------------------- NK model */

const char *nm_nk_check(int n, int k) {
  if (n < 1 || n > NM_NK_MAXN)
    return "N must be in [1, 16383]";
  if (k < 0 || k > NM_NK_MAXK)
    return "K must be in [0, 31]";
  if (k > n - 1)
    return "K must be at most N - 1";
  return NULL;
}

size_t nm_nk_table_entries(int n, int k) {
  return (size_t)n << (k + 1);
}

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* The hash in two steps: a key per gene (the first mix, kept in the
** model's `keys`), then one mix per pattern. */
static inline uint64_t nk_gene_key(uint64_t seed, int gene) {
  return mix64(seed + UINT64_C(0x9e3779b97f4a7c15) * ((uint64_t)gene + 1));
}

static inline double nk_keyed_entry(uint64_t key, uint32_t pattern) {
  uint64_t z = mix64(key ^ (((uint64_t)pattern + 1) * UINT64_C(0xd1342543de82ef95)));
  return (double)(z >> 11) * 0x1p-53;
}

double nm_nk_hash_entry(uint64_t seed, int gene, uint32_t pattern) {
  return nk_keyed_entry(nk_gene_key(seed, gene), pattern);
}

void nm_nk_init(nm_nk *m, int n, int k, int adjacent, nm_rng *g,
                int32_t *partners, uint64_t *keys, double *table) {
  m->n = n;
  m->k = k;
  m->adjacent = adjacent;
  m->partners = partners;
  m->keys = keys;
  m->table = table;
  m->seed = nm_rng_next(g);
  for (int i = 0; i < n; i++)
    keys[i] = nk_gene_key(m->seed, i);
  for (int i = 0; i < n; i++) {
    int32_t *p = partners + (size_t)i * k;
    for (int j = 0; j < k; j++) {
      if (adjacent) {
        p[j] = (int32_t)((i + 1 + j) % n);
        continue;
      }
      for (;;) {   /* a gene other than i, not drawn before (k <= 31) */
        int32_t cand = (int32_t)nm_rng_below(g, (uint64_t)n - 1);
        if (cand >= i)
          cand++;
        int seen = 0;
        for (int q = 0; q < j; q++)
          seen |= (p[q] == cand);
        if (!seen) {
          p[j] = cand;
          break;
        }
      }
    }
  }
  if (table) {
    size_t per = (size_t)1 << (k + 1);
    for (int i = 0; i < n; i++)
      for (size_t pat = 0; pat < per; pat++)
        table[(size_t)i * per + pat] = nk_keyed_entry(keys[i], (uint32_t)pat);
  }
}

static inline double nk_entry(const nm_nk *m, int gene, uint32_t pattern) {
  if (m->table)
    return m->table[((size_t)gene << (m->k + 1)) + pattern];
  return nk_keyed_entry(m->keys[gene], pattern);
}

double nm_nk_entry(const nm_nk *m, int gene, uint32_t pattern) {
  return nk_entry(m, gene, pattern);
}

static inline uint32_t nk_pattern(const nm_nk *m, const unsigned char *bits, int gene) {
  const int32_t *p = m->partners + (size_t)gene * m->k;
  uint32_t pat = bits[gene] ? 1u : 0u;
  for (int j = 0; j < m->k; j++)
    pat = (pat << 1) | (bits[p[j]] ? 1u : 0u);
  return pat;
}

uint32_t nm_nk_pattern(const nm_nk *m, const unsigned char *bits, int gene) {
  return nk_pattern(m, bits, gene);
}

double nm_nk_fitness(const nm_nk *m, const unsigned char *bits) {
  double sum = 0.0;
  for (int i = 0; i < m->n; i++)
    sum += nk_entry(m, i, nk_pattern(m, bits, i));
  return sum / m->n;
}

static void put(const nm_tensor *t, int64_t offset, double v) {
  if (t->dtype == NM_FLOAT64)
    ((double *)t->data)[offset] = v;
  else
    ((float *)t->data)[offset] = (float)v;
}

int nm_nk_dataset(const nm_nk *m, nm_rng *g, const nm_tensor *x,
                  const nm_tensor *f, unsigned char *bits) {
  int64_t samples = x->size[0];
  for (int64_t s = 0; s < samples; s++) {
    if (nm_interrupted)
      return NM_EINTR;
    uint64_t word = 0;
    for (int j = 0; j < m->n; j++) {
      if (j % 64 == 0)
        word = nm_rng_next(g);
      bits[j] = (unsigned char)((word >> (j % 64)) & 1u);
      put(x, s * x->stride[0] + j * x->stride[1], bits[j] ? 1.0 : -1.0);
    }
    put(f, s * f->stride[0], nm_nk_fitness(m, bits));
  }
  return NM_OK;
}

/* ----------------------------------------------------------- sigmoid */

/* The networks' transfer function, in float32: sigma(z) = 1 / (1 + e^-z)
** with e = exp(-|z|) (so it never overflows), as (z >= 0 ? 1 : e) / (1 + e).
** exp by Cody-Waite reduction (|r| <= ln2 / 2) and a degree-7 Taylor
** polynomial, with -|z| clamped at -87 so that 2^k stays a normal number:
** below -87 it returns sigma(-87) < 1.7e-38 instead of a smaller value.
** Accuracy against libm's double sigmoid: a few float ulp
** (spec/nk_spec.lua measures it). Straight-line code, so the loops calling
** it vectorise; the multiply-adds are explicit fmaf, correctly rounded on
** every instruction set (one FMA instruction on the AVX2 and AVX-512
** versions, libm's fmaf on the baseline), so every version and the naive
** oracle compute the same bits. */
static inline float nk_sig(float z) {
  float x = -fabsf(z);
  x = x < -87.0f ? -87.0f : x;
  const float shifter = 0x1.8p23f;
  float t = fmaf(x, 0x1.715476p0f, shifter);          /* round(x / ln 2) */
  float k = t - shifter;
  float r = fmaf(k, -0x1.62e4p-1f, x);                /* ln 2, high part */
  r = fmaf(k, -0x1.7f7d1cp-20f, r);                   /* ln 2, low part */
  float p = 1.0f / 5040;
  p = fmaf(p, r, 1.0f / 720);
  p = fmaf(p, r, 1.0f / 120);
  p = fmaf(p, r, 1.0f / 24);
  p = fmaf(p, r, 1.0f / 6);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  uint32_t bits;
  memcpy(&bits, &t, sizeof bits);
  bits = (bits - 0x4b400000u + 127u) << 23;           /* 2^k, k in [-126, 0] */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  float e = p * scale;
  return (z >= 0.0f ? 1.0f : e) / (1.0f + e);
}

float nm_nk_sigmoid(float z) {
  return nk_sig(z);
}

/* A hidden pre-activation in quanta (as a double: exact below 2^53) to
** its activation. */
static inline float nk_act_q(double uq) {
  return nk_sig((float)(uq * 0x1p-32));
}

static inline float nk_hidden_act(int64_t u) {
  return nk_act_q((double)u);
}

/* Reconstruction target of input x (+-1): t_scale x + t_shift, exact. */
static inline float nk_target(const nm_nkhc *c, float x) {
  return fmaf((float)c->t_scale, x, (float)c->t_shift);
}

/* The output's squared error on one sample with target f, from the
** sample's hidden activations act[0 .. H-1] (the full passes' form). */
static inline double nk_output_sqerr(const nm_nkhc *c, const float *act, double f) {
  float z = (float)c->out[c->h];
  for (int h = 0; h < c->h; h++)
    z = fmaf((float)c->out[h], act[h], z);
  double d = (double)nk_sig(z) - f;
  return d * d;
}

/* ----------------------------------------------------------- networks */

const char *nm_nkhc_check(int kind, int n, int h, int s) {
  if (kind < NM_NK_NN || kind > NM_NK_ANN)
    return "network must be NN, NAN or ANN";
  if (n < 1 || n > NM_NK_MAXN)
    return "N must be in [1, 16383]";
  if (h < 1 || h > 4096)
    return "H must be in [1, 4096]";
  if (s < 1 || s > (1 << 24))
    return "the training set must hold 1 to 2^24 samples";
  return NULL;
}

static size_t dec_count(int kind, int n, int h) {
  if (kind == NM_NK_NAN)
    return (size_t)h * 2 * n;
  if (kind == NM_NK_ANN)
    return (size_t)(h + 1) * n;
  return 0;
}

static size_t col_count(int kind, int n, int h) {
  if (kind == NM_NK_NAN)
    return (size_t)h * n;
  if (kind == NM_NK_ANN)
    return (size_t)n;
  return 0;
}

/* N rounded up to whole register blocks: the float copies of the
** decoder and the inputs have rows of this length (zero padded), so that
** the kernels run whole vectors only. */
#define NK_BLOCK 32   /* ANN decoder nodes per register block */
static int nk_padded(int n) {
  return (n + NK_BLOCK - 1) / NK_BLOCK * NK_BLOCK;
}

/* Samples per hidden-layer product of the full passes. */
#define NK_CHUNK 64

static size_t rec_count(int kind, int h) {
  return kind == NM_NK_NAN ? (size_t)h : kind == NM_NK_ANN ? 1 : 0;
}

/* Every array, in one place; each starts on a 64-byte boundary of the
** block (so 8-byte arrays stay aligned after 4-byte ones). */
#define NK_ARRAYS(X) \
  X(hid, int64_t, (size_t)h * (n + 1)) \
  X(out, double, (size_t)h + 1) \
  X(dec, double, dec_count(kind, n, h)) \
  X(decf, float, dec_count(kind, nk_padded(n), h)) \
  X(x, float, (size_t)s * nk_padded(n)) \
  X(xt, float, (size_t)n * s) \
  X(xb, float, (size_t)s * nk_padded(n)) \
  X(f, double, (size_t)s) \
  X(u, int64_t, (size_t)h * s) \
  X(a, float, (size_t)h * s) \
  X(y, float, (size_t)s) \
  X(col, double, col_count(kind, n, h)) \
  X(rec, double, rec_count(kind, h)) \
  X(u_save, int64_t, (size_t)s) \
  X(a_save, float, (size_t)s) \
  X(y_new, float, (size_t)s) \
  X(zbuf, float, (size_t)s) \
  X(terms, double, (size_t)s) \
  X(sqerr, float, (size_t)s) \
  X(part, float, col_count(kind, nk_padded(n), h)) \
  X(col_new, double, (size_t)n) \
  X(row, float, (size_t)n) \
  X(nk_a, float, (size_t)h) \
  X(nk_col, double, col_count(kind, n, h)) \
  X(nk_wd, double, (size_t)h * (n + 1)) \
  X(nk_xd, double, (size_t)NK_CHUNK * n) \
  X(nk_ud, double, (size_t)NK_CHUNK * h) \
  X(txt, float, (size_t)n * ts) \
  X(tf, double, (size_t)ts) \
  X(tu, int64_t, (size_t)h * ts)

static size_t nk_round64(size_t bytes) {
  return (bytes + 63) & ~(size_t)63;
}

size_t nm_nkhc_bytes(int kind, int n, int h, int s, int ts) {
  size_t total = 0;
#define COUNT(name, type, count) total += nk_round64((count) * sizeof(type));
  NK_ARRAYS(COUNT)
#undef COUNT
  return total;
}

void nm_nkhc_layout(nm_nkhc *c, int kind, int n, int h, int s, int ts, void *mem) {
  memset(c, 0, sizeof *c);
  c->kind = kind;
  c->n = n;
  c->h = h;
  c->s = s;
  c->np = nk_padded(n);
  c->range = 1.0;
  c->t_scale = 1.0;
  c->t_shift = 0.0;
  c->dirty = 1;
  char *p = mem;
  c->ts = ts;
  c->tdirty = 1;
  memset(mem, 0, nm_nkhc_bytes(kind, n, h, s, ts));
#define PLACE(name, type, count) \
  c->name = (type *)(void *)p; p += nk_round64((count) * sizeof(type));
  NK_ARRAYS(PLACE)
#undef PLACE
}

static int64_t quantize(double w) {
  double q = nearbyint(w * 0x1p32);
  if (q > (double)NM_NK_QMAX)
    return NM_NK_QMAX;
  if (q < -(double)NM_NK_QMAX)
    return -NM_NK_QMAX;
  return (int64_t)q;
}

static double uniform_pm1(nm_rng *g) {
  return 2.0 * nm_rng_uniform(g) - 1.0;
}

/* Decoder parameter q (flat index) to v, and its float copy (rows of np). */
static void set_dec(nm_nkhc *c, size_t q, double v) {
  size_t n = (size_t)c->n, np = (size_t)c->np, qf;
  if (c->kind == NM_NK_NAN)   /* row h: N weights, N biases */
    qf = q / (2 * n) * 2 * np + q % (2 * n) / n * np + q % n;
  else                        /* ANN: row j: N weights from hidden j; row H: biases */
    qf = q / n * np + q % n;
  c->dec[q] = v;
  c->decf[qf] = (float)v;
}

void nm_nkhc_init_weights(nm_nkhc *c, nm_rng *g) {
  size_t nh = (size_t)c->h * (c->n + 1);
  for (size_t i = 0; i < nh; i++)
    c->hid[i] = quantize(uniform_pm1(g));
  for (int i = 0; i <= c->h; i++)
    c->out[i] = uniform_pm1(g);
  size_t nd = dec_count(c->kind, c->n, c->h);
  for (size_t i = 0; i < nd; i++)
    set_dec(c, i, uniform_pm1(g));
  c->dirty = 1;
  c->tdirty = 1;
}

static double get(const nm_tensor *t, int64_t offset) {
  if (t->dtype == NM_FLOAT64)
    return ((const double *)t->data)[offset];
  return ((const float *)t->data)[offset];
}

int nm_nkhc_set_data(nm_nkhc *c, const nm_tensor *x, const nm_tensor *f) {
  for (int s = 0; s < c->s; s++)
    for (int i = 0; i < c->n; i++) {
      double v = get(x, s * x->stride[0] + i * x->stride[1]);
      if (v != 1.0 && v != -1.0)
        return NM_EINVAL;
    }
  for (int s = 0; s < c->s; s++) {
    for (int i = 0; i < c->n; i++) {
      float v = (float)get(x, s * x->stride[0] + i * x->stride[1]);
      c->x[(size_t)s * c->np + i] = v;
      c->xt[(size_t)i * c->s + s] = v;
      c->xb[(size_t)(i / NK_BLOCK) * NK_BLOCK * c->s + (size_t)s * NK_BLOCK + i % NK_BLOCK] = v;
    }
    c->f[s] = get(f, s * f->stride[0]);
  }
  c->dirty = 1;
  return NM_OK;
}

/* ----------------------------------------------- cached forward pieces */

/* The arithmetic, the same in every path (incremental, naive, test
** error): hidden pre-activations are exact integers (quanta); every
** other pre-activation is a float32 chain of fmaf from the bias, over
** the inputs in index order, with the double weights rounded to float;
** activations are nk_sig. The output's squared errors (against the
** double targets) are double and summed in double over the samples in
** order. A reconstruction column's squared errors are float32, summed in
** float over each block of NK_SBLOCK samples in order, and the block sums
** are added in double in order (nk_block_sum); the N column sums are then
** added in double in order. */

#define NK_SBLOCK 16

/* The float32 squared errors t[0 .. S-1] of one column, summed as above. */
static double nk_block_sum(const float *t, int S) {
  double sum = 0.0;
  float part = 0.0f;
  for (int s = 0; s < S; s++) {
    part += t[s];
    if (s % NK_SBLOCK == NK_SBLOCK - 1) {
      sum += part;
      part = 0.0f;
    }
  }
  return sum + part;
}

/* Column sums: the block partials part[0 .. n-1] added into cols[], and
** cleared, after sample s (every NK_SBLOCK samples, and after the last).
** The kernels call it per block of NK_BLOCK columns (n = NK_BLOCK). */
static inline void nk_flush(int s, int S, int n, float *part, double *cols) {
  if (s % NK_SBLOCK != NK_SBLOCK - 1 && s != S - 1)
    return;
  for (int i = 0; i < n; i++) {
    cols[i] += part[i];
    part[i] = 0.0f;
  }
}

/* Pre-activations of hidden neuron h over the training set. */
static void hidden_pre(const nm_nkhc *c, int h, int64_t *u) {
  int n = c->n;
  const int64_t *w = c->hid + (size_t)h * (n + 1);
  for (int s = 0; s < c->s; s++) {
    const float *xs = c->x + (size_t)s * c->np;
    int64_t acc = w[n];
    for (int i = 0; i < n; i++)
      acc += xs[i] > 0 ? w[i] : -w[i];
    u[s] = acc;
  }
}

/* Outputs from the cached activations into y; returns the training MSE.
** Each output chains bias, then weight h times a_h for h = 0..H-1. */
NK_HOT static double output_pass(nm_nkhc *c, float *y) {
  int S = c->s, H = c->h;
  float *z = c->zbuf;
  float bias = (float)c->out[H];
  for (int s = 0; s < S; s++)
    z[s] = bias;
  for (int h = 0; h < H; h++) {
    float w = (float)c->out[h];
    const float *ah = c->a + (size_t)h * S;
    for (int s = 0; s < S; s++)
      z[s] = fmaf(w, ah[s], z[s]);
  }
  for (int s = 0; s < S; s++) {
    y[s] = nk_sig(z[s]);
    double d = (double)y[s] - c->f[s];
    c->terms[s] = d * d;
  }
  double sum = 0.0;
  for (int s = 0; s < S; s++)
    sum += c->terms[s];
  return sum / S;
}

/* NAN: every decoder column of neuron h into cols, a block of NK_BLOCK
** columns at a time over all samples (each column's sums in the order of
** nk_flush), the block's partial sums kept in registers. */
NK_HOT static void nan_columns(nm_nkhc *c, int h, double *cols) {
  int S = c->s, N = c->n, np = c->np;
  const float *w0 = c->decf + (size_t)h * 2 * np, *b0 = w0 + np;
  const float *ah = c->a + (size_t)h * S;
  for (int i0 = 0; i0 < np; i0 += NK_BLOCK) {   /* the padding is computed, never read */
    const float *w = w0 + i0, *b = b0 + i0;
    float part[NK_BLOCK];
    double acc[NK_BLOCK];
    for (int k = 0; k < NK_BLOCK; k++) {
      part[k] = 0.0f;
      acc[k] = 0.0;
    }
    for (int s = 0; s < S; s++) {
      const float *xs = c->xb + (size_t)i0 * S + (size_t)s * NK_BLOCK;
      float act = ah[s];
      for (int k = 0; k < NK_BLOCK; k++) {
        float d = nk_target(c, xs[k]) - nk_sig(fmaf(w[k], act, b[k]));
        part[k] += d * d;
      }
      nk_flush(s, S, NK_BLOCK, part, acc);
    }
    for (int k = 0; k < NK_BLOCK && i0 + k < N; k++)
      cols[i0 + k] = acc[k];
  }
}

/* NAN: one decoder column (h, i). */
NK_HOT static double nan_column(nm_nkhc *c, int h, int i) {
  int S = c->s;
  size_t row = (size_t)h * 2 * c->np;
  float w = c->decf[row + i], b = c->decf[row + c->np + i];
  const float *ah = c->a + (size_t)h * S, *xi = c->xt + (size_t)i * S;
  for (int s = 0; s < S; s++) {
    float d = nk_target(c, xi[s]) - nk_sig(fmaf(w, ah[s], b));
    c->sqerr[s] = d * d;
  }
  return nk_block_sum(c->sqerr, S);
}

/* Samples per tile of the ANN kernel. */
#ifndef NK_NS
#define NK_NS 8
#endif

/* ANN: decoder nodes i0 .. i0 + NK_BLOCK - 1 of samples s .. s + ns - 1
** (ns <= NK_NS, a constant where it is inlined): their squared errors
** added to part[] sample by sample and flushed into acc[]. The ns x NK_BLOCK pre-activations are independent
** chains, so the chains of several samples overlap in the pipeline; each
** chain is still bias, then weight j times a_j for j = 0..H-1. */
static inline __attribute__((always_inline))
void ann_tile(const nm_nkhc *c, int s, int ns, int i0, float *part, double *acc) {
  enum { m = NK_BLOCK };
  int S = c->s, np = c->np, H = c->h;
  const float *bias = c->decf + (size_t)H * np + i0;
  float z[NK_NS][NK_BLOCK];
  for (int t = 0; t < ns; t++)
    for (int k = 0; k < m; k++)
      z[t][k] = bias[k];
  for (int j = 0; j < H; j++) {
    const float *wj = c->decf + (size_t)j * np + i0, *aj = c->a + (size_t)j * S + s;
    for (int t = 0; t < ns; t++) {
      float act = aj[t];
      for (int k = 0; k < m; k++)
        z[t][k] = fmaf(wj[k], act, z[t][k]);
    }
  }
  for (int t = 0; t < ns; t++) {
    const float *xs = c->xb + (size_t)i0 * S + (size_t)(s + t) * NK_BLOCK;
    for (int k = 0; k < m; k++) {
      float d = nk_target(c, xs[k]) - nk_sig(z[t][k]);
      part[k] += d * d;
    }
    nk_flush(s + t, S, m, part, acc);
  }
}

/* ANN: every decoder column into cols, a block of NK_BLOCK columns at a
** time over all samples (each column's sums in the order of nk_flush). */
NK_HOT static void ann_columns(nm_nkhc *c, double *cols) {
  int S = c->s, N = c->n, np = c->np;
  for (int i0 = 0; i0 < np; i0 += NK_BLOCK) {   /* the padding is computed, never read */
    float part[NK_BLOCK];
    double acc[NK_BLOCK];
    for (int k = 0; k < NK_BLOCK; k++) {
      part[k] = 0.0f;
      acc[k] = 0.0;
    }
    int s = 0;
    for (; s + NK_NS <= S; s += NK_NS)
      ann_tile(c, s, NK_NS, i0, part, acc);
    for (; s < S; s++)
      ann_tile(c, s, 1, i0, part, acc);
    for (int k = 0; k < NK_BLOCK && i0 + k < N; k++)
      cols[i0 + k] = acc[k];
  }
}

/* ANN: one decoder column i. */
NK_HOT static double ann_column(nm_nkhc *c, int i) {
  int S = c->s, H = c->h;
  float *z = c->zbuf;
  const float *xi = c->xt + (size_t)i * S;
  float bias = c->decf[(size_t)H * c->np + i];
  for (int s = 0; s < S; s++)
    z[s] = bias;
  for (int j = 0; j < H; j++) {
    float w = c->decf[(size_t)j * c->np + i];
    const float *aj = c->a + (size_t)j * S;
    for (int s = 0; s < S; s++)
      z[s] = fmaf(w, aj[s], z[s]);
  }
  for (int s = 0; s < S; s++) {
    float d = nk_target(c, xi[s]) - nk_sig(z[s]);
    c->sqerr[s] = d * d;
  }
  return nk_block_sum(c->sqerr, S);
}

/* Reconstruction error from N column sums, optionally with column i
** replaced by `value` (i < 0: none). */
static double rec_error(const nm_nkhc *c, const double *cols, int i, double value) {
  double sum = 0.0;
  for (int q = 0; q < c->n; q++)
    sum += q == i ? value : cols[q];
  return sum / ((double)c->s * c->n);
}

void nm_nkhc_refresh(nm_nkhc *c) {
  int S = c->s, N = c->n;
  for (int h = 0; h < c->h; h++) {
    int64_t *uh = c->u + (size_t)h * S;
    float *ah = c->a + (size_t)h * S;
    hidden_pre(c, h, uh);
    for (int s = 0; s < S; s++)
      ah[s] = nk_hidden_act(uh[s]);
  }
  c->task = output_pass(c, c->y);
  if (c->kind == NM_NK_NAN) {
    for (int h = 0; h < c->h; h++) {
      double *cols = c->col + (size_t)h * N;
      nan_columns(c, h, cols);
      c->rec[h] = rec_error(c, cols, -1, 0.0);
    }
  } else if (c->kind == NM_NK_ANN) {
    ann_columns(c, c->col);
    c->rec[0] = rec_error(c, c->col, -1, 0.0);
  }
  c->dirty = 0;
}

/* ------------------------------------------------------ parameters */

void nm_nkhc_group_shape(const nm_nkhc *c, int group, int *rows, int *cols) {
  switch (group) {
    case NM_NK_HIDDEN: *rows = c->h; *cols = c->n + 1; break;
    case NM_NK_OUTPUT: *rows = 1; *cols = c->h + 1; break;
    default:
      if (c->kind == NM_NK_NAN) { *rows = c->h; *cols = 2 * c->n; }
      else if (c->kind == NM_NK_ANN) { *rows = c->n; *cols = c->h + 1; }
      else { *rows = 0; *cols = 0; }
  }
}

/* Address of a double parameter (output or decoder). */
static double *dparam(const nm_nkhc *c, int group, int i, int j) {
  if (group == NM_NK_OUTPUT)
    return c->out + j;
  if (c->kind == NM_NK_NAN)
    return c->dec + (size_t)i * 2 * c->n + j;
  return c->dec + (size_t)j * c->n + i;   /* ANN: stored transposed */
}

double nm_nkhc_get(const nm_nkhc *c, int group, int i, int j) {
  if (group == NM_NK_HIDDEN)
    return (double)c->hid[(size_t)i * (c->n + 1) + j] * 0x1p-32;
  return *dparam(c, group, i, j);
}

void nm_nkhc_set(nm_nkhc *c, int group, int i, int j, double v) {
  if (group == NM_NK_HIDDEN) {
    c->hid[(size_t)i * (c->n + 1) + j] = quantize(v);
    c->tdirty = 1;
  } else if (group == NM_NK_OUTPUT)
    c->out[j] = v;
  else
    set_dec(c, (size_t)(dparam(c, group, i, j) - c->dec), v);
  c->dirty = 1;
}

static int64_t mutated_quanta(int64_t q, double delta) {
  double dq = nearbyint(delta * 0x1p32);   /* |delta| <= range: no overflow */
  double v = (double)q + dq;               /* exact: both below 2^53 */
  if (v > (double)NM_NK_QMAX)
    return NM_NK_QMAX;
  if (v < -(double)NM_NK_QMAX)
    return -NM_NK_QMAX;
  return (int64_t)v;
}

double nm_nkhc_mutated(const nm_nkhc *c, int group, int i, int j, double delta) {
  if (group == NM_NK_HIDDEN)
    return (double)mutated_quanta(c->hid[(size_t)i * (c->n + 1) + j], delta) * 0x1p-32;
  return *dparam(c, group, i, j) + delta;
}

/* --------------------------------------------------------- one cycle */

typedef struct choice {
  int autoenc, group, i, j;
  double delta;
} choice;

/* Draws the cycle type, the parameter and the change (see nm_nk.h). */
static choice draw(const nm_nkhc *c, nm_rng *g) {
  choice ch;
  int N = c->n, H = c->h;
  ch.autoenc = nm_rng_uniform(g) < 0.5;
  if (!ch.autoenc) {
    ch.group = NM_NK_OUTPUT;
    ch.i = 0;
    ch.j = (int)nm_rng_integer(g, 0, H);
  } else if (c->kind == NM_NK_NAN) {
    ch.i = (int)nm_rng_integer(g, 0, H - 1);
    int j = (int)nm_rng_integer(g, 0, 3 * (int64_t)N);
    if (j <= N) {
      ch.group = NM_NK_HIDDEN;
      ch.j = j;
    } else {
      ch.group = NM_NK_DECODER;
      ch.j = j - N - 1;
    }
  } else {
    int64_t nhid = (int64_t)H * (N + 1);
    int64_t total = nhid + (c->kind == NM_NK_ANN ? (int64_t)N * (H + 1) : 0);
    int64_t k = nm_rng_integer(g, 0, total - 1);
    if (k < nhid) {
      ch.group = NM_NK_HIDDEN;
      ch.i = (int)(k / (N + 1));
      ch.j = (int)(k % (N + 1));
    } else {
      k -= nhid;
      ch.group = NM_NK_DECODER;
      ch.i = (int)(k / (H + 1));
      ch.j = (int)(k % (H + 1));
    }
  }
  ch.delta = c->range * uniform_pm1(g);
  return ch;
}

/* Keep when lower; on a tie keep with probability 0.5. */
static int decide(nm_nkhc *c, nm_rng *g, double before, double after) {
  c->last_tie = 0;
  if (after < before)
    return 1;
  if (after > before)
    return 0;
  c->last_tie = 1;
  c->ties++;
  return nm_rng_uniform(g) < 0.5;
}

static void record(nm_nkhc *c, const choice *ch, double before, double after, int keep) {
  c->cycles++;
  c->accepted += keep;
  c->last_group = ch->group;
  c->last_i = ch->i;
  c->last_j = ch->j;
  c->last_autoenc = ch->autoenc;
  c->last_delta = ch->delta;
  c->last_before = before;
  c->last_after = after;
  c->last_accepted = keep;
}

static void swap_ptr(float **p, float **q) {
  float *t = *p;
  *p = *q;
  *q = t;
}

/* Adds dq quanta times input j (j == N: the bias) to the pre-activations
** uh and recomputes the activations ah. */
NK_HOT static void hidden_update(const nm_nkhc *c, int j, int64_t dq,
                                 int64_t *uh, float *ah) {
  int S = c->s;
  if (j == c->n) {
    for (int s = 0; s < S; s++) {
      uh[s] += dq;
      ah[s] = nk_hidden_act(uh[s]);
    }
    return;
  }
  const float *xj = c->xt + (size_t)j * S;
  for (int s = 0; s < S; s++) {
    uh[s] += xj[s] > 0 ? dq : -dq;
    ah[s] = nk_hidden_act(uh[s]);
  }
}

/* Adds dq quanta times inputs xj[0 .. S-1] (NULL: the bias) to u. */
NK_HOT static void nk_add_quanta(const float *xj, int S, int64_t dq, int64_t *u) {
  if (xj == NULL) {
    for (int s = 0; s < S; s++)
      u[s] += dq;
    return;
  }
  for (int s = 0; s < S; s++)
    u[s] += xj[s] > 0 ? dq : -dq;
}

static void cycle_hidden(nm_nkhc *c, nm_rng *g, const choice *ch) {
  int S = c->s, N = c->n, h = ch->i, j = ch->j;
  int64_t *w = c->hid + (size_t)h * (N + 1) + j;
  int64_t old = *w, neu = mutated_quanta(old, ch->delta), dq = neu - old;
  int64_t *uh = c->u + (size_t)h * S;
  float *ah = c->a + (size_t)h * S;
  /* apply in place, keeping the old row to revert */
  memcpy(c->u_save, uh, (size_t)S * sizeof *uh);
  memcpy(c->a_save, ah, (size_t)S * sizeof *ah);
  *w = neu;
  hidden_update(c, j, dq, uh, ah);
  double before, after;
  if (c->kind == NM_NK_NN) {
    before = c->task;
    after = output_pass(c, c->y_new);
  } else if (c->kind == NM_NK_NAN) {
    before = c->rec[h];
    nan_columns(c, h, c->col_new);
    after = rec_error(c, c->col_new, -1, 0.0);
  } else {
    before = c->rec[0];
    ann_columns(c, c->col_new);
    after = rec_error(c, c->col_new, -1, 0.0);
  }
  int keep = decide(c, g, before, after);
  if (keep) {
    if (c->kind == NM_NK_NN) {
      swap_ptr(&c->y, &c->y_new);
      c->task = after;
    } else {
      double *cols = c->kind == NM_NK_NAN ? c->col + (size_t)h * N : c->col;
      memcpy(cols, c->col_new, (size_t)N * sizeof *cols);
      c->rec[c->kind == NM_NK_NAN ? h : 0] = after;
      c->task = output_pass(c, c->y);
    }
    if (c->ts > 0 && !c->tdirty)   /* the test set's pre-activations follow */
      nk_add_quanta(j == N ? NULL : c->txt + (size_t)j * c->ts, c->ts, dq,
                    c->tu + (size_t)h * c->ts);
  } else {
    *w = old;
    memcpy(uh, c->u_save, (size_t)S * sizeof *uh);
    memcpy(ah, c->a_save, (size_t)S * sizeof *ah);
  }
  record(c, ch, before, after, keep);
}

static void cycle_output(nm_nkhc *c, nm_rng *g, const choice *ch) {
  double *w = c->out + ch->j, old = *w;
  *w = old + ch->delta;
  double before = c->task, after = output_pass(c, c->y_new);
  int keep = decide(c, g, before, after);
  if (keep) {
    swap_ptr(&c->y, &c->y_new);
    c->task = after;
  } else {
    *w = old;
  }
  record(c, ch, before, after, keep);
}

static void cycle_decoder(nm_nkhc *c, nm_rng *g, const choice *ch) {
  double *w = dparam(c, NM_NK_DECODER, ch->i, ch->j), old = *w;
  size_t q = (size_t)(w - c->dec);
  set_dec(c, q, old + ch->delta);
  double before, after, column;
  double *cols;
  int i;
  if (c->kind == NM_NK_NAN) {
    i = ch->j % c->n;
    cols = c->col + (size_t)ch->i * c->n;
    before = c->rec[ch->i];
    column = nan_column(c, ch->i, i);
  } else {
    i = ch->i;
    cols = c->col;
    before = c->rec[0];
    column = ann_column(c, i);
  }
  after = rec_error(c, cols, i, column);
  int keep = decide(c, g, before, after);
  if (keep) {
    cols[i] = column;
    c->rec[c->kind == NM_NK_NAN ? ch->i : 0] = after;
  } else {
    set_dec(c, q, old);
  }
  record(c, ch, before, after, keep);
}

int nm_nkhc_step(nm_nkhc *c, nm_rng *g, int64_t cycles) {
  if (c->dirty)
    nm_nkhc_refresh(c);
  for (int64_t k = 0; k < cycles; k++) {
    if (nm_interrupted)
      return NM_EINTR;
    choice ch = draw(c, g);
    if (ch.group == NM_NK_HIDDEN)
      cycle_hidden(c, g, &ch);
    else if (ch.group == NM_NK_OUTPUT)
      cycle_output(c, g, &ch);
    else
      cycle_decoder(c, g, &ch);
  }
  return NM_OK;
}

/* ------------------------------------------------------ naive oracle */

/* The hidden weights as doubles into nk_wd (exact: |q| <= 2^48); returns 1
** when every hidden neuron's |bias| + sum of |weights| is below 2^53
** quanta. Then every partial sum of its pre-activation, in any order, is an
** integer below 2^53, so a double product computes it exactly (BLAS, any
** blocking or thread count). */
static int nk_prepare_wd(nm_nkhc *c) {
  int N = c->n;
  int ok = 1;
  for (int h = 0; h < c->h; h++) {
    const int64_t *w = c->hid + (size_t)h * (N + 1);
    double *wd = c->nk_wd + (size_t)h * (N + 1), bound = 0.0;
    for (int i = 0; i <= N; i++) {
      wd[i] = (double)w[i];
      bound += fabs(wd[i]);          /* each term exact, the sum an upper bound */
    }
    ok &= bound < 0x1p52;            /* margin for the bound's own rounding */
  }
  return ok;
}

/* Hidden pre-activations in quanta (exact integers as doubles) of m input
** rows xd (m x N, +-1) into ud (m x H): one BLAS product when exact (see
** nk_prepare_wd), else the integer loop of nm_nkhc_naive's definition. */
static void nk_hidden_rows(nm_nkhc *c, int blas, const double *xd, int m, double *ud) {
  int N = c->n, H = c->h;
  if (blas) {
    nm_blas_gemm(NM_FLOAT64, 0, 1, m, H, N, 1.0, xd, N, c->nk_wd, N + 1, 0.0, ud, H);
    for (int r = 0; r < m; r++)
      for (int h = 0; h < H; h++)
        ud[(size_t)r * H + h] += c->nk_wd[(size_t)h * (N + 1) + N];
    return;
  }
  for (int r = 0; r < m; r++) {
    const double *xs = xd + (size_t)r * N;
    for (int h = 0; h < H; h++) {
      const int64_t *w = c->hid + (size_t)h * (N + 1);
      int64_t u = w[N];
      for (int i = 0; i < N; i++)
        u += xs[i] > 0 ? w[i] : -w[i];
      ud[(size_t)r * H + h] = (double)u;
    }
  }
}

/* Written to vectorise (and cloned per ISA level) like the incremental
** kernels, with the same arithmetic on every element (see "cached forward
** pieces"): hidden neuron h sums its bias, then its weights for i = 0..N-1
** (integers: exact); the output and ANN node i chain their bias, then
** weight h times a_h for h = 0..H-1. It reads the double parameters (not
** the kernels' float copies) and keeps no cache. */
NK_HOT void nm_nkhc_naive(nm_nkhc *c, double *task, double *rec) {
  int S = c->s, N = c->n, H = c->h;
  float *act = c->nk_a, *v = c->row;
  size_t ncol = col_count(c->kind, N, H);
  for (size_t q = 0; q < ncol; q++) {
    c->nk_col[q] = 0.0;
    c->part[q] = 0.0f;
  }
  double sq = 0.0;
  int blas = nk_prepare_wd(c);
  for (int s = 0; s < S; s++) {
    const float *xs = c->x + (size_t)s * c->np;
    int r = s % NK_CHUNK;
    if (r == 0) {                    /* the hidden layer of the next chunk */
      int m = S - s < NK_CHUNK ? S - s : NK_CHUNK;
      for (int q = 0; q < m; q++)
        for (int i = 0; i < N; i++)
          c->nk_xd[(size_t)q * N + i] = c->x[(size_t)(s + q) * c->np + i];
      nk_hidden_rows(c, blas, c->nk_xd, m, c->nk_ud);
    }
    for (int h = 0; h < H; h++)
      act[h] = nk_act_q(c->nk_ud[(size_t)r * H + h]);
    sq += nk_output_sqerr(c, act, c->f[s]);
    if (c->kind == NM_NK_NAN) {
      for (int h = 0; h < H; h++) {
        const double *w = c->dec + (size_t)h * 2 * N, *b = w + N;
        float *part = c->part + (size_t)h * N;
        float ah = act[h];
        for (int i = 0; i < N; i++) {
          float e = nk_target(c, xs[i]) - nk_sig(fmaf((float)w[i], ah, (float)b[i]));
          part[i] += e * e;
        }
      }
    } else if (c->kind == NM_NK_ANN) {
      const double *bias = c->dec + (size_t)H * N;
      for (int i = 0; i < N; i++)
        v[i] = (float)bias[i];
      for (int h = 0; h < H; h++) {
        const double *wh = c->dec + (size_t)h * N;
        float ah = act[h];
        for (int i = 0; i < N; i++)
          v[i] = fmaf((float)wh[i], ah, v[i]);
      }
      for (int i = 0; i < N; i++) {
        float e = nk_target(c, xs[i]) - nk_sig(v[i]);
        c->part[i] += e * e;
      }
    }
    nk_flush(s, S, (int)ncol, c->part, c->nk_col);
  }
  *task = sq / S;
  for (size_t r = 0; r < rec_count(c->kind, H); r++) {
    double sum = 0.0;
    for (int i = 0; i < N; i++)
      sum += c->nk_col[r * N + i];
    rec[r] = sum / ((double)S * N);
  }
}

/* The error a cycle is judged by, from a naive pass. */
static double judged(const nm_nkhc *c, const choice *ch, double task, const double *rec) {
  if (!ch->autoenc || c->kind == NM_NK_NN)
    return task;
  return c->kind == NM_NK_NAN ? rec[ch->i] : rec[0];
}

int nm_nkhc_step_naive(nm_nkhc *c, nm_rng *g, int64_t cycles) {
  double task, rec[4096];
  nm_nkhc_naive(c, &task, rec);
  for (int64_t k = 0; k < cycles; k++) {
    if (nm_interrupted)
      return NM_EINTR;
    choice ch = draw(c, g);
    double before = judged(c, &ch, task, rec);
    double old = nm_nkhc_get(c, ch.group, ch.i, ch.j);
    double neu = nm_nkhc_mutated(c, ch.group, ch.i, ch.j, ch.delta);
    nm_nkhc_set(c, ch.group, ch.i, ch.j, neu);
    double task2, rec2[4096];
    nm_nkhc_naive(c, &task2, rec2);
    double after = judged(c, &ch, task2, rec2);
    int keep = decide(c, g, before, after);
    if (keep) {
      task = task2;
      memcpy(rec, rec2, rec_count(c->kind, c->h) * sizeof *rec);
    } else {
      nm_nkhc_set(c, ch.group, ch.i, ch.j, old);
    }
    record(c, &ch, before, after, keep);
  }
  c->dirty = 1;
  return NM_OK;
}

/* Row r of x (S2 x N, either dtype, any strides) into row; nonzero when
** an entry is not +-1. */
static int load_row(const nm_tensor *x, int64_t r, int n, double *row) {
  int bad = 0;
  if (x->dtype == NM_FLOAT64) {
    const double *p = (const double *)x->data + r * x->stride[0];
    for (int i = 0; i < n; i++) {
      double v = p[i * x->stride[1]];
      row[i] = v;
      bad |= (v != 1.0) & (v != -1.0);
    }
  } else {
    const float *p = (const float *)x->data + r * x->stride[0];
    for (int i = 0; i < n; i++) {
      double v = p[i * x->stride[1]];
      row[i] = v;
      bad |= (v != 1.0) & (v != -1.0);
    }
  }
  return bad;
}

NK_HOT int nm_nkhc_task_error(nm_nkhc *c, const nm_tensor *x, const nm_tensor *f,
                              double *mse) {
  int N = c->n, H = c->h;
  int64_t S = x->size[0];
  float *act = c->nk_a;
  int blas = nk_prepare_wd(c);
  double sq = 0.0;
  for (int64_t s0 = 0; s0 < S; s0 += NK_CHUNK) {
    int m = S - s0 < NK_CHUNK ? (int)(S - s0) : NK_CHUNK;
    for (int q = 0; q < m; q++)
      if (load_row(x, s0 + q, N, c->nk_xd + (size_t)q * N))
        return NM_EINVAL;
    nk_hidden_rows(c, blas, c->nk_xd, m, c->nk_ud);
    for (int q = 0; q < m; q++) {
      for (int h = 0; h < H; h++)
        act[h] = nk_act_q(c->nk_ud[(size_t)q * H + h]);
      sq += nk_output_sqerr(c, act, get(f, (s0 + q) * f->stride[0]));
    }
  }
  *mse = sq / (double)S;
  return NM_OK;
}

/* ------------------------------------------------------- a kept test set */

int nm_nkhc_set_test(nm_nkhc *c, const nm_tensor *x, const nm_tensor *f) {
  int n = c->n, ts = c->ts;
  for (int s = 0; s < ts; s++)
    for (int i = 0; i < n; i++) {
      double v = get(x, s * x->stride[0] + i * x->stride[1]);
      if (v != 1.0 && v != -1.0)
        return NM_EINVAL;
    }
  for (int s = 0; s < ts; s++) {
    for (int i = 0; i < n; i++)
      c->txt[(size_t)i * ts + s] = (float)get(x, s * x->stride[0] + i * x->stride[1]);
    c->tf[s] = get(f, s * f->stride[0]);
  }
  c->tdirty = 1;
  return NM_OK;
}

/* The test set's hidden pre-activations in quanta from the weights: exact
** integers, as nk_hidden_rows computes them. */
NK_HOT static void nk_test_pre(nm_nkhc *c) {
  int n = c->n, ts = c->ts;
  for (int h = 0; h < c->h; h++) {
    const int64_t *w = c->hid + (size_t)h * (n + 1);
    int64_t *u = c->tu + (size_t)h * ts;
    for (int s = 0; s < ts; s++)
      u[s] = w[n];
    for (int i = 0; i < n; i++)
      nk_add_quanta(c->txt + (size_t)i * ts, ts, w[i], u);
  }
  c->tdirty = 0;
}

NK_HOT double nm_nkhc_test_mse(nm_nkhc *c) {
  int H = c->h, ts = c->ts;
  if (c->tdirty)
    nk_test_pre(c);
  float *act = c->nk_a;
  double sq = 0.0;
  for (int s = 0; s < ts; s++) {
    for (int h = 0; h < H; h++)
      act[h] = nk_act_q((double)c->tu[(size_t)h * ts + s]);
    sq += nk_output_sqerr(c, act, c->tf[s]);
  }
  return sq / (double)ts;
}

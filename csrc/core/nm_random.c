/*
** nm_random.c: xoshiro256** generators seeded through splitmix64, the
** distributions drawn from them, and tensor fills.
*/
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nm_random.h"

/* ---------------------------------------------------------------- core */

uint64_t nm_splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void nm_rng_seed(nm_rng *g, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++)
    g->s[i] = nm_splitmix64(&x);
  /* splitmix64 is a bijection of its counter, so four successive outputs
  ** are never all zero: the state is always valid. */
  g->has_normal = 0;
  g->normal = 0.0;
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t nm_rng_next(nm_rng *g) {
  uint64_t *s = g->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

void nm_rng_jump(nm_rng *g) {
  static const uint64_t poly[4] = {
    UINT64_C(0x180ec6d33cfd0aba), UINT64_C(0xd5a61266f0c9392c),
    UINT64_C(0xa9582618e03fc9aa), UINT64_C(0x39abdc4529b1661c)
  };
  uint64_t acc[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4; i++) {
    for (int b = 0; b < 64; b++) {
      if (poly[i] & (UINT64_C(1) << b)) {
        for (int j = 0; j < 4; j++)
          acc[j] ^= g->s[j];
      }
      nm_rng_next(g);
    }
  }
  memcpy(g->s, acc, sizeof acc);
  g->has_normal = 0;
  g->normal = 0.0;
}

/* ------------------------------------------------------- distributions */

double nm_rng_uniform(nm_rng *g) {
  return (double)(nm_rng_next(g) >> 11) * 0x1.0p-53;
}

/* Natural logarithm of a positive finite x from exact operations only
** (frexp, +, -, *, / are correctly rounded everywhere), so normal
** deviates do not depend on which libm the machine has. x = m 2^e with
** m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(z), z = (m-1)/(m+1), where
** |z| < 0.172 and the odd series below is exact to ~1 ulp. */
static double portable_log(double x) {
  int e;
  double m = frexp(x, &e);
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  double z = (m - 1.0) / (m + 1.0);
  double z2 = z * z;
  double p = 1.0 / 27.0;
  for (int k = 12; k >= 0; k--)
    p = p * z2 + 1.0 / (double)(2 * k + 1);
  /* ln 2 split so that e * LN2_HI is exact for |e| < 2^11. */
  const double LN2_HI = 6.93147180369123816490e-01;
  const double LN2_LO = 1.90821492927058770002e-10;
  return (double)e * LN2_HI + ((double)e * LN2_LO + 2.0 * z * p);
}

double nm_rng_normal(nm_rng *g) {
  if (g->has_normal) {
    g->has_normal = 0;
    return g->normal;
  }
  double u, v, s;
  do {
    u = 2.0 * nm_rng_uniform(g) - 1.0;
    v = 2.0 * nm_rng_uniform(g) - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  double f = sqrt(-2.0 * portable_log(s) / s);
  g->normal = v * f;
  g->has_normal = 1;
  return u * f;
}

int nm_rng_bernoulli(nm_rng *g, double p) {
  return nm_rng_uniform(g) < p;
}

/* High and low halves of the 128-bit product a * b, without compiler
** extensions. */
static uint64_t mul_hi_lo(uint64_t a, uint64_t b, uint64_t *lo) {
  uint64_t a_lo = a & 0xffffffffu, a_hi = a >> 32;
  uint64_t b_lo = b & 0xffffffffu, b_hi = b >> 32;
  uint64_t ll = a_lo * b_lo, lh = a_lo * b_hi;
  uint64_t hl = a_hi * b_lo, hh = a_hi * b_hi;
  uint64_t mid = (ll >> 32) + (lh & 0xffffffffu) + (hl & 0xffffffffu);
  *lo = (mid << 32) | (ll & 0xffffffffu);
  return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
}

uint64_t nm_rng_below(nm_rng *g, uint64_t n) {
  if (n == 0)
    return nm_rng_next(g);
  uint64_t lo;
  uint64_t hi = mul_hi_lo(nm_rng_next(g), n, &lo);
  if (lo < n) {
    /* Reject the 2^64 mod n products that would favour low values. */
    uint64_t threshold = (0 - n) % n;
    while (lo < threshold)
      hi = mul_hi_lo(nm_rng_next(g), n, &lo);
  }
  return hi;
}

/* Two's complement reinterpretation without implementation-defined casts. */
static int64_t to_signed(uint64_t v) {
  if (v <= (uint64_t)INT64_MAX)
    return (int64_t)v;
  return -(int64_t)(~v) - 1;
}

int64_t nm_rng_integer(nm_rng *g, int64_t lo, int64_t hi) {
  uint64_t range = (uint64_t)hi - (uint64_t)lo + 1;   /* 0: all 2^64 */
  return to_signed((uint64_t)lo + nm_rng_below(g, range));
}

/* ----------------------------------------------------------- sampling */

void nm_rng_shuffle(nm_rng *g, int64_t *out, int64_t n) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)nm_rng_below(g, (uint64_t)i + 1);
    int64_t tmp = out[i];
    out[i] = out[j];
    out[j] = tmp;
  }
}

void nm_rng_permutation(nm_rng *g, int64_t *out, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    out[i] = i;
  nm_rng_shuffle(g, out, n);
}

size_t nm_rng_sample_workspace(int64_t k) {
  size_t cap = 2;
  while ((int64_t)cap < 2 * k)
    cap <<= 1;
  return cap;
}

/* Open-addressing set of non-negative integers; -1 marks a free slot. */
static size_t set_slot(const int64_t *set, size_t mask, int64_t v) {
  size_t i = (size_t)(((uint64_t)v * UINT64_C(0x9e3779b97f4a7c15)) >> 17) & mask;
  while (set[i] != -1 && set[i] != v)
    i = (i + 1) & mask;
  return i;
}

void nm_rng_sample(nm_rng *g, int64_t n, int64_t k, int64_t *out, int64_t *work) {
  size_t cap = nm_rng_sample_workspace(k), mask = cap - 1;
  for (size_t i = 0; i < cap; i++)
    work[i] = -1;
  int64_t filled = 0;
  for (int64_t j = n - k; j < n; j++) {
    int64_t t = (int64_t)nm_rng_below(g, (uint64_t)j + 1);
    size_t slot = set_slot(work, mask, t);
    if (work[slot] == t) {      /* taken: j itself is new (Floyd) */
      t = j;
      slot = set_slot(work, mask, t);
    }
    work[slot] = t;
    out[filled++] = t;
  }
  /* Floyd's subsets are uniform but their order is not. */
  nm_rng_shuffle(g, out, k);
}

/* --------------------------------------------------------------- fills */

typedef enum { FILL_UNIFORM, FILL_NORMAL, FILL_BERNOULLI } fill_kind;

static double draw(nm_rng *g, fill_kind kind, double a, double b) {
  switch (kind) {
    case FILL_UNIFORM: {
      double v = a + (b - a) * nm_rng_uniform(g);
      return (v >= b && a < b) ? nextafter(b, a) : v;
    }
    case FILL_NORMAL:
      return a + b * nm_rng_normal(g);
    default:
      return nm_rng_uniform(g) < a ? 1.0 : 0.0;
  }
}

static float draw_float(nm_rng *g, fill_kind kind, double a, double b) {
  float v = (float)draw(g, kind, a, b);
  if (kind == FILL_UNIFORM) {
    /* Rounding to float may reach b; keep the interval half-open. */
    float fa = (float)a, fb = (float)b;
    if (v >= fb && fa < fb)
      v = nextafterf(fb, fa);
  }
  return v;
}

/* Walks the tensor in row-major order of its indices, one innermost row
** at a time, polling for an interrupt between rows. */
static int fill(nm_rng *g, const nm_tensor *t, fill_kind kind, double a, double b) {
  int nd = t->ndim;
  int64_t inner = nd > 0 ? t->size[nd - 1] : 1;
  int64_t istride = nd > 0 ? t->stride[nd - 1] : 1;
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; d++)
    rows *= t->size[d];
  if (inner == 0 || rows == 0)
    return NM_OK;
  int64_t idx[NM_MAXDIM] = {0};
  int64_t since_poll = 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t base = 0;
    for (int d = 0; d < nd - 1; d++)
      base += idx[d] * t->stride[d];
    if (t->dtype == NM_FLOAT32) {
      float *p = (float *)t->data + base;
      for (int64_t j = 0; j < inner; j++)
        p[j * istride] = draw_float(g, kind, a, b);
    } else {
      double *p = (double *)t->data + base;
      for (int64_t j = 0; j < inner; j++)
        p[j * istride] = draw(g, kind, a, b);
    }
    for (int d = nd - 2; d >= 0; d--) {
      if (++idx[d] < t->size[d])
        break;
      idx[d] = 0;
    }
    since_poll += inner;
    if (since_poll >= 65536) {
      since_poll = 0;
      if (nm_interrupted)
        return NM_EINTR;
    }
  }
  return NM_OK;
}

int nm_rng_fill_uniform(nm_rng *g, const nm_tensor *t, double a, double b) {
  if (!isfinite(a) || !isfinite(b) || a > b || !isfinite(b - a))
    return NM_EINVAL;
  return fill(g, t, FILL_UNIFORM, a, b);
}

int nm_rng_fill_normal(nm_rng *g, const nm_tensor *t, double mean, double std) {
  if (!isfinite(mean) || !isfinite(std) || std < 0)
    return NM_EINVAL;
  return fill(g, t, FILL_NORMAL, mean, std);
}

int nm_rng_fill_bernoulli(nm_rng *g, const nm_tensor *t, double p) {
  if (!(p >= 0.0 && p <= 1.0))
    return NM_EINVAL;
  return fill(g, t, FILL_BERNOULLI, p, 0.0);
}

/* --------------------------------------------------------------- state */

static const char STATE_TAG[] = "xoshiro256**";

void nm_rng_get_state(const nm_rng *g, char buf[NM_RNG_STATE_LEN]) {
  char normal[17] = "-";
  if (g->has_normal) {
    uint64_t bits;
    memcpy(&bits, &g->normal, sizeof bits);
    snprintf(normal, sizeof normal, "%016" PRIx64, bits);
  }
  snprintf(buf, NM_RNG_STATE_LEN, "%s %016" PRIx64 " %016" PRIx64 " %016" PRIx64
           " %016" PRIx64 " %s", STATE_TAG, g->s[0], g->s[1], g->s[2], g->s[3], normal);
}

/* Parses exactly 16 hex digits at str[*pos]. */
static int parse_hex64(const char *str, size_t len, size_t *pos, uint64_t *out) {
  uint64_t v = 0;
  if (len - *pos < 16)
    return 0;
  for (int i = 0; i < 16; i++) {
    char c = str[(*pos)++];
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else return 0;
    v = (v << 4) | (uint64_t)digit;
  }
  *out = v;
  return 1;
}

static int expect_space(const char *str, size_t len, size_t *pos) {
  if (*pos >= len || str[*pos] != ' ')
    return 0;
  (*pos)++;
  return 1;
}

int nm_rng_set_state(nm_rng *g, const char *str, size_t len, char *err, size_t errlen) {
  size_t tag = sizeof STATE_TAG - 1, pos = tag;
  nm_rng next;
  if (len < tag || memcmp(str, STATE_TAG, tag) != 0) {
    snprintf(err, errlen, "not a generator state (expected it to start with '%s')", STATE_TAG);
    return NM_EINVAL;
  }
  for (int i = 0; i < 4; i++) {
    if (!expect_space(str, len, &pos) || !parse_hex64(str, len, &pos, &next.s[i])) {
      snprintf(err, errlen, "malformed generator state (word %d is not 16 hex digits)", i + 1);
      return NM_EINVAL;
    }
  }
  if (!expect_space(str, len, &pos)) {
    snprintf(err, errlen, "malformed generator state (missing cached normal field)");
    return NM_EINVAL;
  }
  if (len - pos == 1 && str[pos] == '-') {
    next.has_normal = 0;
    next.normal = 0.0;
    pos++;
  } else {
    uint64_t bits;
    if (!parse_hex64(str, len, &pos, &bits)) {
      snprintf(err, errlen, "malformed generator state (cached normal is not '-' or 16 hex digits)");
      return NM_EINVAL;
    }
    next.has_normal = 1;
    memcpy(&next.normal, &bits, sizeof bits);
    if (!isfinite(next.normal)) {
      snprintf(err, errlen, "malformed generator state (cached normal is not finite)");
      return NM_EINVAL;
    }
  }
  if (pos != len) {
    snprintf(err, errlen, "malformed generator state (%zu unexpected trailing bytes)", len - pos);
    return NM_EINVAL;
  }
  if ((next.s[0] | next.s[1] | next.s[2] | next.s[3]) == 0) {
    snprintf(err, errlen, "invalid generator state (all-zero words never occur in xoshiro256**)");
    return NM_EINVAL;
  }
  *g = next;
  return NM_OK;
}

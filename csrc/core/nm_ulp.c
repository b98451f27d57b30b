/*
** nm_ulp.c: the accuracy of the elementwise transcendentals (nm_unary's
** exp, log, expm1, log1p, tanh, sigmoid, softplus and derivatives, which
** are nm_vmath.h's) against libm's long double functions, in units in the
** last place of the result's type (see nm_ulp_scan in nm_math.h).
*/
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nm_math.h"

static long double logistic(long double x) {
  long double e = expl(-fabsl(x));
  return (x >= 0 ? 1.0L : e) / (1.0L + e);
}

/* The exact function, from libm in long double. The parameterised forms
** take b = beta x as the kernel has it, rounded to its type: the kernel's
** accuracy is that of f(b), not of the rounding of the product. */
static long double reference(nm_unop op, long double x, long double b, long double beta) {
  switch (op) {
    case NM_EXP: return expl(x);
    case NM_LOG: return logl(x);
    case NM_EXPM1: return expm1l(x);
    case NM_LOG1P: return log1pl(x);
    case NM_TANH: return tanhl(x);
    case NM_DTANH: { long double c = coshl(x); return 1.0L / (c * c); }
    case NM_SIGMOID: return logistic(x);
    case NM_DSIGMOID: { long double s = logistic(x); return s * logistic(-x); }
    case NM_SOFTPLUS: return (log1pl(expl(-fabsl(b))) + (b > 0 ? b : 0.0L)) / beta;
    case NM_DSOFTPLUS: return logistic(b);
    default: return NAN;
  }
}

/* |got - want| in units in the last place of want in a type with `mant`
** explicit significand bits and least normal exponent emin; inf when a
** special value differs (NaN, inf, the rounded result overflowing, the sign
** of an exact zero). */
static double ulp_error(long double got, long double want, long double want_rounded,
                        int mant, int emin) {
  if (isnan(want)) return isnan(got) ? 0 : INFINITY;
  if (isnan(got)) return INFINITY;
  if (isinf(want_rounded) || isinf(got)) return want_rounded == got ? 0 : INFINITY;
  if (want == 0) return got == 0 && signbit(got) == signbit(want) ? 0 : INFINITY;
  int e;
  frexpl(want, &e);                       /* want = f 2^e, f in [0.5, 1) */
  int ex = e - 1 < emin ? emin : e - 1;
  return (double)(fabsl(got - want) / ldexpl(1.0L, ex - mant));
}

/* Bit patterns in value order: the magnitude bits, negated for negative
** numbers (-0 and +0 both map to 0). */
static int64_t key_f32(float x) {
  uint32_t b;
  memcpy(&b, &x, sizeof b);
  int64_t mag = b & 0x7fffffffu;
  return b >> 31 ? -mag : mag;
}

static float from_key_f32(int64_t k) {
  uint32_t b = k < 0 ? (uint32_t)(-k) | 0x80000000u : (uint32_t)k;
  float x;
  memcpy(&x, &b, sizeof x);
  return x;
}

static int64_t key_f64(double x) {
  uint64_t b;
  memcpy(&b, &x, sizeof b);
  int64_t mag = (int64_t)(b & UINT64_C(0x7fffffffffffffff));
  return b >> 63 ? -mag : mag;
}

static double from_key_f64(int64_t k) {
  uint64_t b = k < 0 ? (uint64_t)(-k) | UINT64_C(0x8000000000000000) : (uint64_t)k;
  double x;
  memcpy(&x, &b, sizeof x);
  return x;
}

enum { BATCH = 4096 };

int nm_ulp_scan(nm_unop op, double p, nm_dtype dt, double lo, double hi, int64_t count,
                double *max_ulp, double *worst, int64_t *n) {
  int known = (op >= NM_EXP && op <= NM_DSOFTPLUS && op != NM_SQRT && op != NM_RELU &&
               op != NM_DRELU) || op == NM_EXPM1 || op == NM_LOG1P;
  int f32 = dt == NM_FLOAT32;
  if (!known || !(dt == NM_FLOAT32 || dt == NM_FLOAT64) || !isfinite(lo) || !isfinite(hi) ||
      lo > hi || count < 1 || !(p > 0 && isfinite(p)))
    return NM_EINVAL;
  if (f32 && (fabs(lo) > FLT_MAX || fabs(hi) > FLT_MAX)) return NM_EINVAL;
  int64_t k0 = f32 ? key_f32((float)lo) : key_f64(lo);
  int64_t k1 = f32 ? key_f32((float)hi) : key_f64(hi);
  /* span / count, odd (so the low significand bits vary), at least 1 */
  uint64_t span = (uint64_t)k1 - (uint64_t)k0;
  uint64_t step = span <= (uint64_t)count ? 1 : (span / (uint64_t)count) | 1;
  union { float f[BATCH]; double d[BATCH]; } in, out;
  nm_tensor ti, to;
  int64_t size = BATCH;
  nm_init_contiguous(&ti, dt, 1, &size);
  nm_init_contiguous(&to, dt, 1, &size);
  ti.data = f32 ? (void *)in.f : (void *)in.d;
  to.data = f32 ? (void *)out.f : (void *)out.d;
  const int mant = f32 ? FLT_MANT_DIG - 1 : DBL_MANT_DIG - 1;
  const int emin = f32 ? FLT_MIN_EXP - 1 : DBL_MIN_EXP - 1;
  double maxe = 0, at = lo;
  int64_t total = 0;
  uint64_t off = 0;
  int done = 0;
  while (!done) {
    int64_t m = 0;
    while (m < BATCH && !done) {
      int64_t k = (int64_t)((uint64_t)k0 + off);
      if (off >= span) { k = k1; done = 1; }
      if (f32) in.f[m++] = from_key_f32(k);
      else in.d[m++] = from_key_f64(k);
      off += step;
      if (off < step) off = span;            /* wrapped */
    }
    ti.size[0] = to.size[0] = m;
    int st = nm_unary(&to, &ti, op, p, 0);
    if (st != NM_OK) return st;
    for (int64_t i = 0; i < m; i++) {
      long double x = f32 ? (long double)in.f[i] : (long double)in.d[i];
      long double b = f32 ? (long double)((float)p * in.f[i]) : (long double)(p * in.d[i]);
      long double want = reference(op, x, b, f32 ? (long double)(float)p : (long double)p);
      long double rounded = f32 ? (long double)(float)want : (long double)(double)want;
      long double got = f32 ? (long double)out.f[i] : (long double)out.d[i];
      double e = ulp_error(got, want, rounded, mant, emin);
      if (e > maxe || (e != e && maxe == maxe)) { maxe = e; at = (double)x; }
    }
    total += m;
    if (nm_interrupted) return NM_EINTR;
  }
  *max_ulp = maxe;
  *worst = at;
  *n = total;
  return NM_OK;
}

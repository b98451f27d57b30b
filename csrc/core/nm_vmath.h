/*
** nm_vmath.h: exp, expm1, log, log1p, tanh, the logistic function,
** soft-plus and their derivatives as branch-free inline functions for float
** (name_f32) and double (name_f64), so that the loops calling them
** vectorise at whatever instruction set the caller is compiled for.
** Accuracy, measured against libm over every float32 input of the working
** range and a dense float64 sample (spec/vmath_spec.lua): a few ulp; the
** special values (+-0, subnormals, +-inf, NaN, the overflow thresholds)
** behave as libm's.
**
** Why not a library: Debian's SLEEF (libsleef-dev) was measured and is as
** fast, but its versions per instruction set round differently (FMA or
** not), so results would depend on the CPU; these give the same bits on
** every version, and need no dependency. Polynomials: Taylor series of
** e^r on |r| <= ln2/2 and of atanh(z)/z on |z| <= 1/5, truncated where
** the next term is below the last bit, evaluated by Estrin's scheme.
*/
#ifndef NM_VMATH_H
#define NM_VMATH_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define real float
#define NM_T(name) name##_f32
#define NM_M(fn) fn##f
#define NM_VU uint32_t
#define NM_VMANT 23
#define NM_VBIAS 127
#define NM_VLN2 0x1.62e430p-1f
#define NM_VLN2HI 0x1.62ep-1f
#define NM_VLN2LO 0x1.0bfbe8p-15f
#define NM_VSQRTH 0x1.6a09e6p-1f
#define NM_VMIN FLT_MIN
#define NM_VSUBSCALE 0x1p23f
#define NM_VTINY 0x1p-25f
#define NM_VEXP_LO -104.0f
#define NM_VEXP_HI 89.0f
#define NM_VEXPM1_LO -30.0f
/* 1/k! for k = 2..8 and 1/(2k + 1) for k = 1..5, by Estrin's scheme (short
** dependency chains: the terms of a pair, the pairs, the quadruples at once) */
static inline float nm_vexpm1_poly_f32(float r) {
  float r2 = r * r, r4 = r2 * r2;
  return ((0.5f + r * (1.0f / 6)) + r2 * (1.0f / 24 + r * (1.0f / 120))) +
         r4 * ((1.0f / 720 + r * (1.0f / 5040)) + r2 * (1.0f / 40320));
}
/* Below 2^-(NM_VMANT + 3) the value is 1/3 rounded whatever w is: w is
** raised to that (on its bits, w >= 0 or NaN: a select on w itself lets
** GCC compute the polynomial of the unclamped w and blend the results),
** so that w^2, w^4 (w^8) stay normal; a
** subnormal operand or result costs a slow microcode assist per
** instruction on x86 (softplus(beta x) with beta x below about -11 took
** 5x the time). */
static inline float nm_vatanh_poly_f32(float w) {
  uint32_t wb, cb = 0x32800000u;                     /* 2^-26 */
  memcpy(&wb, &w, sizeof wb);
  wb = wb < cb ? cb : wb;
  memcpy(&w, &wb, sizeof w);
  float w2 = w * w, w4 = w2 * w2;
  return ((1.0f / 3 + w * (1.0f / 5)) + w2 * (1.0f / 7 + w * (1.0f / 9))) + w4 * (1.0f / 11);
}
#define NM_VEXPM1_POLY(r) nm_vexpm1_poly_f32(r)
#define NM_VATANH_POLY(w) nm_vatanh_poly_f32(w)
#include "nm_vmath_gen.h"

#define real double
#define NM_T(name) name##_f64
#define NM_M(fn) fn
#define NM_VU uint64_t
#define NM_VMANT 52
#define NM_VBIAS 1023
#define NM_VLN2 0x1.62e42fefa39efp-1
#define NM_VLN2HI 0x1.62e42fefa2000p-1
#define NM_VLN2LO 0x1.9ef35793c7673p-41
#define NM_VSQRTH 0x1.6a09e667f3bcdp-1
#define NM_VMIN DBL_MIN
#define NM_VSUBSCALE 0x1p52
#define NM_VTINY 0x1p-54
#define NM_VEXP_LO -746.0
#define NM_VEXP_HI 710.0
#define NM_VEXPM1_LO -60.0
/* 1/k! for k = 2..14 and 1/(2k + 1) for k = 1..11, by Estrin's scheme */
static inline double nm_vexpm1_poly_f64(double r) {
  double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
  return ((0.5 + r * (1.0 / 6)) + r2 * (1.0 / 24 + r * (1.0 / 120))) +
         r4 * ((1.0 / 720 + r * (1.0 / 5040)) + r2 * (1.0 / 40320 + r * (1.0 / 362880))) +
         r8 * (((1.0 / 3628800 + r * (1.0 / 39916800)) +
                r2 * (1.0 / 479001600 + r * (1.0 / 6227020800.0))) + r4 * (1.0 / 87178291200.0));
}
static inline double nm_vatanh_poly_f64(double w) {
  uint64_t wb, cb = 0x3c80000000000000u;             /* 2^-55 */
  memcpy(&wb, &w, sizeof wb);
  wb = wb < cb ? cb : wb;
  memcpy(&w, &wb, sizeof w);
  double w2 = w * w, w4 = w2 * w2, w8 = w4 * w4;
  return ((1.0 / 3 + w * (1.0 / 5)) + w2 * (1.0 / 7 + w * (1.0 / 9))) +
         w4 * ((1.0 / 11 + w * (1.0 / 13)) + w2 * (1.0 / 15 + w * (1.0 / 17))) +
         w8 * ((1.0 / 19 + w * (1.0 / 21)) + w2 * (1.0 / 23));
}
#define NM_VEXPM1_POLY(r) nm_vexpm1_poly_f64(r)
#define NM_VATANH_POLY(w) nm_vatanh_poly_f64(w)
#include "nm_vmath_gen.h"

#endif

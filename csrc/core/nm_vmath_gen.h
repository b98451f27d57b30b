/*
** nm_vmath_gen.h: the branch-free transcendentals of nm_vmath.h, written
** once and included once per element type. The includer defines
**   real, NM_T(name)   the element type and the per-type name
**   NM_VU              the unsigned integer type of real's width
**   NM_VMANT, NM_VBIAS the explicit significand bits and the exponent bias
**   NM_VLN2HI, NM_VLN2LO  ln 2 in two parts (the first with enough trailing
**                      zero bits that n * NM_VLN2HI is exact for every n here)
**   NM_VEXP_LO, NM_VEXP_HI  where exp is clamped: below, it is 0 after
**                      rounding; above, it overflows to inf
**   NM_VEXPM1_LO       below it, expm1 rounds to -1
**   NM_VEXPM1_POLY(r)  (expm1(r) - r) / r^2 on |r| <= ln2 / 2
**   NM_VATANH_POLY(z2) (atanh(z) / z - 1) / z^2 on z^2 <= 0.04
**   NM_VTINY           2^-(NM_VMANT + 2)
** It undefines them at its end. No include guard on purpose. Every function is straight-line code (the
** clamps and special cases are selects), so GCC vectorises a loop that
** calls it; no fused multiply-adds (ISO C mode keeps -ffp-contract=off),
** so every instruction-set version gives the same bits.
*/

static inline NM_VU NM_T(vm_bits)(real x) {
  NM_VU u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static inline real NM_T(vm_real)(NM_VU u) {
  real x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* 1.5 * 2^NM_VMANT: adding it rounds a real of magnitude below 2^(NM_VMANT-1)
** to an integer, which then sits in the low significand bits. */
#define NM_VSHIFT ((real)3 * (real)((NM_VU)1 << (NM_VMANT - 1)))

/* 2^k for an integer-valued k in the normal exponent range, built in the
** exponent bits (unsigned arithmetic: a NaN k gives some finite or NaN
** value, never undefined behaviour). */
static inline real NM_T(vm_pow2)(real k) {
  NM_VU n = NM_T(vm_bits)(k + NM_VSHIFT) - NM_T(vm_bits)(NM_VSHIFT);
  return NM_T(vm_real)((NM_VU)(n + NM_VBIAS) << NM_VMANT);
}

/* x = n ln 2 + r with n an integer (returned in *n) and |r| <= ln2 / 2 plus
** rounding; x must be clamped so that |n| < 2^(NM_VMANT-2). */
static inline real NM_T(vm_reduce)(real x, real *n) {
  real k = (x * ((real)1 / NM_VLN2) + NM_VSHIFT) - NM_VSHIFT;
  *n = k;
  return (x - k * NM_VLN2HI) - k * NM_VLN2LO;
}

/* x * 2^k for k up to twice the normal exponent range: two exact scalings
** (the second alone rounds when the result is subnormal). */
static inline real NM_T(vm_ldexp)(real x, real k) {
  real k1 = (k * (real)0.5 + NM_VSHIFT) - NM_VSHIFT;
  return x * NM_T(vm_pow2)(k1) * NM_T(vm_pow2)(k - k1);
}

/* exp(x) for every x: 0 below NM_VEXP_LO, inf above NM_VEXP_HI, NaN stays NaN. */
static inline real NM_T(vexp)(real x) {
  x = x < NM_VEXP_LO ? NM_VEXP_LO : x;
  x = x > NM_VEXP_HI ? NM_VEXP_HI : x;
  real n, r = NM_T(vm_reduce)(x, &n);
  real p = (real)1 + (r + r * r * NM_VEXPM1_POLY(r));
  return NM_T(vm_ldexp)(p, n);
}

/* exp(x) - 1 without cancellation near 0: 2^n expm1(r) + (2^n - 1), both
** terms exact or nearly so while 2^n is moderate; beyond, exp(x) (the -1 is
** below the last bit there). Zeros keep their sign. */
static inline real NM_T(vexpm1)(real x) {
  real xc = x < NM_VEXPM1_LO ? NM_VEXPM1_LO : x;
  xc = xc > NM_VEXP_HI ? NM_VEXP_HI : xc;
  real n, r = NM_T(vm_reduce)(xc, &n);
  real em = r + r * r * NM_VEXPM1_POLY(r);
  real nc = n < (real)64 ? n : (real)64;
  real s = NM_T(vm_pow2)(nc);
  real small = s * em + (s - (real)1);
  real big = NM_T(vm_ldexp)((real)1 + em, n);
  real y = n < (real)64 ? small : big;
  return x == 0 ? x : y;
}

/* log(x) for every x: -inf at 0, NaN below, inf at inf. x = m 2^e with m in
** [sqrt(1/2), sqrt(2)) (subnormals scaled up first); log m = 2 atanh(z),
** z = (m - 1) / (m + 1). */
static inline real NM_T(vlog)(real x) {
  const NM_VU one = NM_T(vm_bits)((real)1);
  const NM_VU c = NM_T(vm_bits)(NM_VSQRTH);
  const NM_VU expo = ~(((NM_VU)1 << NM_VMANT) - 1);
  real xs = x < NM_VMIN ? x * NM_VSUBSCALE : x;
  real esub = x < NM_VMIN ? (real)NM_VMANT : (real)0;
  NM_VU b = NM_T(vm_bits)(xs);
  /* k = (e + bias) << mant: b - c lies in [e << mant, (e + 1) << mant) */
  NM_VU k = (b - c + one) & expo;
  real m = NM_T(vm_real)(b - k + one);
  /* e + bias as a real through the shifter (no int-to-real conversion) */
  real e = (NM_T(vm_real)(NM_T(vm_bits)(NM_VSHIFT) + (k >> NM_VMANT)) - NM_VSHIFT) -
           ((real)NM_VBIAS + esub);
  real z = (m - (real)1) / (m + (real)1);
  real z2 = z * z;
  real lm = (real)2 * z + (real)2 * z * (z2 * NM_VATANH_POLY(z2));
  real y = e * NM_VLN2HI + (lm + e * NM_VLN2LO);
  y = x == 0 ? -(real)INFINITY : y;
  y = x < 0 ? (real)NAN : y;
  y = x == (real)INFINITY ? x : y;
  return x != x ? x : y;
}

/* log(1 + x) for every x >= -1 (NaN below): log(u), u = 1 + x, plus what
** rounding 1 + x lost, (x - (u - 1)) / u; for tiny x, u = 1 and that is x. */
static inline real NM_T(vlog1p)(real x) {
  real u = (real)1 + x;
  real y = NM_T(vlog)(u) + (x - (u - (real)1)) / u;
  y = x == (real)-1 ? -(real)INFINITY : y;
  y = x == (real)INFINITY ? x : y;
  return x == 0 ? x : y;
}

/* tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with x's sign: no
** cancellation near 0, 1 for large |x|. */
static inline real NM_T(vtanh)(real x) {
  real em = NM_T(vexpm1)((real)-2 * NM_M(fabs)(x));
  return NM_M(copysign)(-em / ((real)2 + em), x);
}

/* 1 - tanh(x)^2 = 4 e / (1 + e)^2, e = exp(-2|x|): accurate also where
** tanh(x) rounds to +-1. */
static inline real NM_T(vdtanh)(real x) {
  real e = NM_T(vexp)((real)-2 * NM_M(fabs)(x));
  real q = (real)1 + e;
  return (real)4 * e / (q * q);
}

/* The logistic function, e = exp(-|x|) <= 1 never overflows:
** 1 / (1 + e) for x >= 0, e / (1 + e) below. */
static inline real NM_T(vsigmoid)(real x) {
  real e = NM_T(vexp)(-NM_M(fabs)(x));
  return (x >= 0 ? (real)1 : e) / ((real)1 + e);
}

/* s(x) (1 - s(x)) = e / (1 + e)^2, e = exp(-|x|): accurate also where s(x)
** rounds to 1. */
static inline real NM_T(vdsigmoid)(real x) {
  real e = NM_T(vexp)(-NM_M(fabs)(x));
  real q = (real)1 + e;
  return e / (q * q);
}

/* log(1 + exp(bx)) / b = (log1p(e) + max(bx, 0)) / b, e = exp(-|bx|) in
** [0, 1]: never overflows, for any beta > 0. e as in vexp, but its one
** power of two 2^(n + NM_VMANT + 2) stays normal (n >= NM_VEXP_LO / ln 2)
** and the scaling by NM_VTINY = 2^-(NM_VMANT + 2) rounds once, subnormal or
** not. log1p(e) = 2 atanh(z) with one division: z = e / (2 + e) below 1/2,
** and above log1p(e) = ln 2 + log((1 + e) / 2), z = (e - 1) / (e + 3)
** (e - 1 exact); |z| <= 1/5 either way. The division gives t = 2z (2e / (2
** + e) is e, exact, where e is subnormal). */
static inline real NM_T(vsoftplus)(real x, real beta) {
  real bx = beta * x;
  real pos = bx > 0 ? bx : 0;
  real a = -NM_M(fabs)(bx);
  a = a < NM_VEXP_LO ? NM_VEXP_LO : a;
  real n, r = NM_T(vm_reduce)(a, &n);
  real p = (real)1 + (r + r * r * NM_VEXPM1_POLY(r));
  real e = p * NM_T(vm_pow2)(n + (real)(NM_VMANT + 2)) * NM_VTINY;
  /* Below 2^-(NM_VMANT + 7), log1p(e) is e itself in the steps below
  ** (2 + e rounds to 2, the series' correction to nothing): they run on
  ** the clamped ec and e is taken back afterwards, the same bits, but no
  ** subnormal e (bx below about -87 in float32) reaches their
  ** arithmetic, where x86 takes a slow microcode assist per instruction. */
  const real small = (real)1 / (real)((NM_VU)1 << (NM_VMANT + 7));
  NM_VU eb = NM_T(vm_bits)(e), sb = NM_T(vm_bits)(small);
  real ec = NM_T(vm_real)(eb < sb ? sb : eb);  /* e >= 0 or NaN: on the bits (nm_vmath.h) */
  real big = ec >= (real)0.5 ? (real)1 : (real)0;
  real t = (big != 0 ? (real)2 * ec - (real)2 : (real)2 * ec) / (ec + ((real)2 + big));
  real z = (real)0.5 * t;
  real w = z * z;
  real lm = t + t * (w * NM_VATANH_POLY(w));
  real l = big * NM_VLN2HI + (lm + big * NM_VLN2LO);
  l = e < small ? e : l;
  return (l + pos) / beta;
}

#undef NM_VSHIFT

/* The includer's per-type definitions end with this type. */
#undef real
#undef NM_T
#undef NM_M
#undef NM_VU
#undef NM_VMANT
#undef NM_VBIAS
#undef NM_VLN2
#undef NM_VLN2HI
#undef NM_VLN2LO
#undef NM_VSQRTH
#undef NM_VMIN
#undef NM_VSUBSCALE
#undef NM_VTINY
#undef NM_VEXP_LO
#undef NM_VEXP_HI
#undef NM_VEXPM1_LO
#undef NM_VEXPM1_POLY
#undef NM_VATANH_POLY

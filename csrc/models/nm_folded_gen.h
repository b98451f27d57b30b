/*
** nm_folded_gen.h: the typed kernels of nm_folded.c, written once and
** included once per element type. The includer defines real (float or
** double), NM_T(name) (name##_f32 / name##_f64) and NM_M(fn) (the libm
** function for real), and the loop macros of nm_folded.c (FOR2, AT).
** No include guard on purpose.
*/

NM_HOT
static void NM_T(rates)(int64_t rows, int64_t cols, view2 r, view2 d, view2 u,
                        nm_folded_phi phi, real beta) {
  const int want_d = d.p != NULL;
  switch (phi) {
    case NM_FOLDED_IDENTITY:
      FOR2(AT(real, r) = AT(real, u); if (want_d) AT(real, d) = 1;);
      break;
    case NM_FOLDED_TANH:
      FOR2(real t = NM_T(vtanh)(AT(real, u)); AT(real, r) = t;
           if (want_d) AT(real, d) = (real)1 - t * t;);
      break;
    case NM_FOLDED_SIGMOID:
      FOR2(real s = NM_T(vsigmoid)(AT(real, u));
           AT(real, r) = s;
           if (want_d) AT(real, d) = s * ((real)1 - s););
      break;
    case NM_FOLDED_SOFTPLUS:
      /* log1p(exp(-|bx|)) + max(bx, 0), never overflowing; the derivative
      ** is the logistic function of bx, from the same exponential. */
      FOR2(real bx = beta * AT(real, u);
           real e = NM_T(vexp)(-NM_M(fabs)(bx));
           AT(real, r) = (NM_T(vlog1p)(e) + (bx > 0 ? bx : 0)) / beta;
           if (want_d) AT(real, d) = (bx >= 0 ? (real)1 : e) / ((real)1 + e););
      break;
    case NM_FOLDED_RELU:
      FOR2(real x = AT(real, u); AT(real, r) = x > 0 ? x : (x == x ? 0 : x);
           if (want_d) AT(real, d) = x > 0 ? 1 : 0;);
      break;
  }
}

static double NM_T(mismatch)(int64_t rows, int64_t cols, view2 e, view2 u, view2 p) {
  double s = 0;
  FOR2(real x = AT(real, u) - AT(real, p); AT(real, e) = x; s += (double)x * x;);
  return s;
}

static double NM_T(velocity)(int64_t rows, int64_t cols, view2 v, view2 ew, real a_w,
                             view2 eg, real a_g, view2 n, real a_n, view2 d, view2 back,
                             real scale) {
  real m = 0;
  const int has_w = ew.p != NULL, has_g = eg.p != NULL, has_n = n.p != NULL;
  const int has_b = d.p != NULL;
  FOR2(real x = 0;
       if (has_w) x += a_w * AT(real, ew);
       if (has_g) x += a_g * AT(real, eg);
       if (has_n) x += a_n * AT(real, n);
       if (has_b) x += AT(real, d) * AT(real, back);
       x *= scale;
       AT(real, v) = x;
       real ax = NM_M(fabs)(x);
       if (ax > m || ax != ax) m = ax;);
  return (double)m;
}

static void NM_T(step)(int64_t rows, int64_t cols, view2 u, view2 m, view2 v, real dt,
                       real mom) {
  if (m.p == NULL) {
    FOR2(AT(real, u) += dt * AT(real, v););
  } else {
    FOR2(real k = mom * AT(real, m) + dt * AT(real, v); AT(real, m) = k; AT(real, u) += k;);
  }
}

/*
** nm_math_gen.h: the typed kernels of nm_math.c, written once and included
** once per element type. The includer defines
**   real        the element type (float or double)
**   NM_T(name)  the per-type name of a kernel (name##_f32, name##_f64)
**   NM_M(fn)    the libm function for real (expf or exp)
**   NM_BLAS(fn) the BLAS routine for real (cblas_sgemm or cblas_dgemm)
**   NM_DOT_BLAS 1 when dot products may go to BLAS (its sum is in real)
** and the loop machinery (nm_iter, NM_LOOP, EL0..EL2, NM_FLAT).
** No include guard on purpose.
*/

/* ---------------------------------------------------------------------- */
/* Elementwise */

static int NM_T(fill)(const nm_iter *it, real *r, real v) {
  NM_LOOP(it, real, r, real, r, real, r, EL0 = v;);
  return NM_OK;
}

NM_HOT
static int NM_T(binary)(const nm_iter *it, real *r, const real *a, const real *b,
                        nm_binop op) {
  switch (op) {
    case NM_ADD: NM_LOOP(it, real, r, const real, a, const real, b, EL0 = EL1 + EL2;); break;
    case NM_SUB: NM_LOOP(it, real, r, const real, a, const real, b, EL0 = EL1 - EL2;); break;
    case NM_MUL: NM_LOOP(it, real, r, const real, a, const real, b, EL0 = EL1 * EL2;); break;
    case NM_DIV: NM_LOOP(it, real, r, const real, a, const real, b, EL0 = EL1 / EL2;); break;
    default: return NM_EINVAL;
  }
  return NM_OK;
}

NM_HOT
static int NM_T(binary_scalar)(const nm_iter *it, real *r, const real *a, real s,
                               nm_binop op) {
  switch (op) {
    case NM_ADD: NM_LOOP(it, real, r, const real, a, const real, a, EL0 = EL1 + s;); break;
    case NM_SUB: NM_LOOP(it, real, r, const real, a, const real, a, EL0 = EL1 - s;); break;
    case NM_MUL: NM_LOOP(it, real, r, const real, a, const real, a, EL0 = EL1 * s;); break;
    case NM_DIV: NM_LOOP(it, real, r, const real, a, const real, a, EL0 = EL1 / s;); break;
    case NM_RSUB: NM_LOOP(it, real, r, const real, a, const real, a, EL0 = s - EL1;); break;
    case NM_RDIV: NM_LOOP(it, real, r, const real, a, const real, a, EL0 = s / EL1;); break;
  }
  return NM_OK;
}

static int NM_T(pow)(const nm_iter *it, real *r, const real *a, real p) {
  /* Common exponents exactly and faster than pow(). */
  if (p == 2) NM_LOOP(it, real, r, const real, a, const real, a, real x = EL1; EL0 = x * x;);
  else if (p == 1) NM_LOOP(it, real, r, const real, a, const real, a, EL0 = EL1;);
  else if (p == (real)0.5) NM_LOOP(it, real, r, const real, a, const real, a, EL0 = NM_M(sqrt)(EL1););
  else if (p == -1) NM_LOOP(it, real, r, const real, a, const real, a, EL0 = (real)1 / EL1;);
  else NM_LOOP(it, real, r, const real, a, const real, a, EL0 = NM_M(pow)(EL1, p););
  return NM_OK;
}

NM_HOT
static int NM_T(unary)(const nm_iter *it, real *r, const real *a, nm_unop op,
                       real p, real q) {
#define U_(...) NM_LOOP(it, real, r, const real, a, const real, a, real x = EL1; __VA_ARGS__)
  switch (op) {
    case NM_NEG:      U_(EL0 = -x;); break;
    case NM_ABS:      U_(EL0 = NM_M(fabs)(x);); break;
    case NM_SIGN:     U_(EL0 = x > 0 ? (real)1 : x < 0 ? (real)-1 : x;); break;
    /* the transcendentals are nm_vmath.h's branch-free ones: they vectorise */
    case NM_EXP:      U_(EL0 = NM_T(vexp)(x);); break;
    case NM_LOG:      U_(EL0 = NM_T(vlog)(x);); break;
    case NM_SQRT:     U_(EL0 = NM_M(sqrt)(x);); break;
    case NM_TANH:     U_(EL0 = NM_T(vtanh)(x);); break;
    case NM_SIGMOID:  U_(EL0 = NM_T(vsigmoid)(x);); break;
    /* NaN stays NaN (x <= 0 is false for it); a select, not a branch:
    ** the sign of activations is a coin flip the predictor cannot learn. */
    case NM_RELU:     U_(EL0 = x <= 0 ? (real)0 : x;); break;
    case NM_DTANH:    U_(EL0 = NM_T(vdtanh)(x);); break;
    case NM_DSIGMOID: U_(EL0 = NM_T(vdsigmoid)(x);); break;
    case NM_DRELU:    U_(EL0 = x > 0 ? (real)1 : (x != x ? x : (real)0);); break;
    case NM_SOFTPLUS: U_(EL0 = NM_T(vsoftplus)(x, p);); break;
    case NM_DSOFTPLUS: U_(EL0 = NM_T(vsigmoid)(p * x);); break;
    case NM_POW:      return NM_T(pow)(it, r, a, p);
    case NM_CLAMP:    U_(EL0 = x < p ? p : (x > q ? q : x);); break;
    case NM_SCALE:    U_(EL0 = x * p;); break;
    case NM_EXPM1:    U_(EL0 = NM_T(vexpm1)(x);); break;
    case NM_LOG1P:    U_(EL0 = NM_T(vlog1p)(x);); break;
    default: return NM_EINVAL;
  }
#undef U_
  return NM_OK;
}

static int NM_T(axpy)(const nm_iter *it, real *y, real alpha, const real *x) {
  /* One strided line long enough to amortise the call: BLAS. */
  if (it->ndim == 1 && it->size[0] >= 64 && it->size[0] <= INT_MAX &&
      it->stride[0][0] >= 1 && it->stride[0][0] <= INT_MAX &&
      it->stride[1][0] >= 1 && it->stride[1][0] <= INT_MAX) {
    NM_BLAS(axpy)((int)it->size[0], alpha, x, (int)it->stride[1][0], y,
                  (int)it->stride[0][0]);
    return NM_OK;
  }
  NM_LOOP(it, real, y, const real, x, const real, x, EL0 += alpha * EL1;);
  return NM_OK;
}

/* ---------------------------------------------------------------------- */
/* Comparisons and masks */

NM_HOT
static int NM_T(compare)(const nm_iter *it, real *r, const real *a, const real *b,
                         nm_cmpop op) {
#define C_(OP) NM_LOOP(it, real, r, const real, a, const real, b, \
                       EL0 = (EL1 OP EL2) ? (real)1 : (real)0;)
  switch (op) {
    case NM_GT: C_(>); break;
    case NM_LT: C_(<); break;
    case NM_GE: C_(>=); break;
    case NM_LE: C_(<=); break;
    case NM_EQ: C_(==); break;
    case NM_NE: C_(!=); break;
    default: return NM_EINVAL;
  }
#undef C_
  return NM_OK;
}

NM_HOT
static int NM_T(compare_scalar)(const nm_iter *it, real *r, const real *a, real s,
                                nm_cmpop op) {
#define C_(OP) NM_LOOP(it, real, r, const real, a, const real, a, \
                       EL0 = (EL1 OP s) ? (real)1 : (real)0;)
  switch (op) {
    case NM_GT: C_(>); break;
    case NM_LT: C_(<); break;
    case NM_GE: C_(>=); break;
    case NM_LE: C_(<=); break;
    case NM_EQ: C_(==); break;
    case NM_NE: C_(!=); break;
    default: return NM_EINVAL;
  }
#undef C_
  return NM_OK;
}

static int NM_T(masked_fill)(const nm_iter *it, real *r, const real *mask, real v) {
  NM_LOOP(it, real, r, const real, mask, const real, mask, if (EL1 != 0) EL0 = v;);
  return NM_OK;
}

static int NM_T(masked_copy)(const nm_iter *it, real *r, const real *mask,
                             const real *src) {
  NM_LOOP(it, real, r, const real, mask, const real, src, if (EL1 != 0) EL0 = EL2;);
  return NM_OK;
}

/* ---------------------------------------------------------------------- */
/* Reductions */

/* Folds one line of n elements (stride sd) into *value (and *index for
** max/min: the first extreme position; NaN wins and stays). */
static void NM_T(reduce_line)(const real *v, int64_t n, int64_t sd, nm_redop op,
                              double p, double *value, int64_t *index) {
  double acc = 0;
  int64_t best = 0;
  switch (op) {
    case NM_RSUM: case NM_RMEAN:
      if (sd == 1) for (int64_t k = 0; k < n; k++) acc += v[k];
      else for (int64_t k = 0; k < n; k++) acc += v[k * sd];
      if (op == NM_RMEAN) acc /= (double)n;
      break;
    case NM_RMAX: case NM_RMIN: {
      real m = v[0];
      for (int64_t k = 1; k < n && m == m; k++) {
        real x = v[k * sd];
        if ((op == NM_RMAX ? x > m : x < m) || x != x) { m = x; best = k; }
      }
      acc = m;
      break;
    }
    case NM_RNORM:
      if (p == 2) {
        for (int64_t k = 0; k < n; k++) { double x = v[k * sd]; acc += x * x; }
        acc = sqrt(acc);
      } else if (p == 1) {
        for (int64_t k = 0; k < n; k++) acc += fabs((double)v[k * sd]);
      } else if (isinf(p)) {
        for (int64_t k = 0; k < n; k++) {
          double x = fabs((double)v[k * sd]);
          if (x > acc || x != x) acc = x;
          if (acc != acc) break;
        }
      } else if (p == 0) {
        for (int64_t k = 0; k < n; k++) acc += v[k * sd] != 0;
      } else {
        for (int64_t k = 0; k < n; k++) acc += pow(fabs((double)v[k * sd]), p);
        acc = pow(acc, 1.0 / p);
      }
      break;
  }
  *value = acc;
  if (index) *index = best;
}

static int NM_T(reduce_all)(const nm_iter *it, const real *a, nm_redop op, double p,
                            double *value, int64_t *index) {
  double acc = 0;
  int64_t best = -1;
  switch (op) {
    case NM_RSUM: case NM_RMEAN:
      NM_LOOP(it, const real, a, const real, a, const real, a, acc += EL0;);
      break;
    case NM_RMAX: case NM_RMIN: {
      real m = 0;
      int ismax = op == NM_RMAX;
      NM_LOOP(it, const real, a, const real, a, const real, a,
        real x = EL0;
        if (best < 0 || (m == m && ((ismax ? x > m : x < m) || x != x))) {
          m = x; best = NM_FLAT;
        });
      acc = m;
      break;
    }
    case NM_RNORM:
      if (p == 2) NM_LOOP(it, const real, a, const real, a, const real, a,
                          double x = EL0; acc += x * x;);
      else if (p == 1) NM_LOOP(it, const real, a, const real, a, const real, a,
                               acc += fabs((double)EL0););
      else if (isinf(p)) NM_LOOP(it, const real, a, const real, a, const real, a,
                                 double x = fabs((double)EL0);
                                 if (x > acc || (x != x && acc == acc)) acc = x;);
      else if (p == 0) NM_LOOP(it, const real, a, const real, a, const real, a,
                               acc += EL0 != 0;);
      else NM_LOOP(it, const real, a, const real, a, const real, a,
                   acc += pow(fabs((double)EL0), p););
      if (p == 2) acc = sqrt(acc);
      else if (!(p == 1 || isinf(p) || p == 0)) acc = pow(acc, 1.0 / p);
      break;
  }
  *value = acc;
  if (index) *index = best;
  return NM_OK;
}

/* *finite = 1 when no element is NaN or infinite: x - x is 0 for a finite
** x and NaN otherwise, and or-ing the comparisons keeps the loop free of
** branches (vectorised; about the cost of a copy, far less than a sum). */
NM_HOT
static int NM_T(all_finite)(const nm_iter *it, const real *a, int *finite) {
  int bad = 0;
  NM_LOOP(it, const real, a, const real, a, const real, a, bad |= !(EL0 - EL0 == 0););
  *finite = !bad;
  return NM_OK;
}

/* Sums across lines whose starts are adjacent in memory (the column sums
** of a row-major matrix): walking each column alone would touch a new
** cache line per element, so a block of columns is summed together, row
** by row. Same order of additions per column as reduce_line. */
NM_HOT
static int NM_T(sum_across)(const nm_iter *it, real *r, const real *a, int64_t n,
                            int64_t sd, int mean) {
  enum { BLOCK = 256 };
  double acc[BLOCK];
  int64_t slots = it->size[0], rs = it->stride[0][0], work = 0;
  for (int64_t j0 = 0; j0 < slots; j0 += BLOCK) {
    int64_t len = slots - j0 < BLOCK ? slots - j0 : BLOCK;
    for (int64_t j = 0; j < len; j++) acc[j] = 0;
    for (int64_t k = 0; k < n; k++) {
      const real *row = a + k * sd + j0;
      for (int64_t j = 0; j < len; j++) acc[j] += row[j];
    }
    for (int64_t j = 0; j < len; j++)
      r[(j0 + j) * rs] = (real)(mean ? acc[j] / (double)n : acc[j]);
    if ((work += n * len) >= NM_CHUNK) { work = 0; if (nm_interrupted) return NM_EINTR; }
  }
  return NM_OK;
}

/* Max or min across lines whose starts are adjacent in memory (column
** maxima of a row-major matrix), a block of columns at a time like
** sum_across; per column the same comparisons as reduce_line: the first
** extreme wins, and a NaN wins and stays. Indices go to ri (stride ris,
** 0 when nobody reads them). */
static int NM_T(extreme_across)(const nm_iter *it, real *r, const real *a, double *ri,
                                int64_t n, int64_t sd, int ismax, int64_t index_base) {
  enum { BLOCK = 256 };
  real m[BLOCK];
  int64_t best[BLOCK];
  int64_t slots = it->size[0], rs = it->stride[0][0], ris = it->stride[2][0], work = 0;
  for (int64_t j0 = 0; j0 < slots; j0 += BLOCK) {
    int64_t len = slots - j0 < BLOCK ? slots - j0 : BLOCK;
    for (int64_t j = 0; j < len; j++) { m[j] = a[j0 + j]; best[j] = 0; }
    for (int64_t k = 1; k < n; k++) {
      const real *row = a + k * sd + j0;
      for (int64_t j = 0; j < len; j++) {
        real x = row[j];
        if (m[j] == m[j] && ((ismax ? x > m[j] : x < m[j]) || x != x)) { m[j] = x; best[j] = k; }
      }
    }
    for (int64_t j = 0; j < len; j++) {
      r[(j0 + j) * rs] = m[j];
      ri[(j0 + j) * ris] = (double)(best[j] + index_base);
    }
    if ((work += n * len) >= NM_CHUNK) { work = 0; if (nm_interrupted) return NM_EINTR; }
  }
  return NM_OK;
}

/* The iterator runs over r's slots: operand 0 = r (values), 1 = the first
** element of each line of a, 2 = ri (float64 indices). */
static int NM_T(reduce_dim)(const nm_iter *it, real *r, const real *a, double *ri,
                            int64_t n, int64_t sd, nm_redop op, double p,
                            int64_t index_base) {
  int64_t work = 0;
  if ((op == NM_RSUM || op == NM_RMEAN) && it->ndim == 1 && it->stride[1][0] == 1 &&
      it->stride[2][0] == 0 && sd != 1)
    return NM_T(sum_across)(it, r, a, n, sd, op == NM_RMEAN);
  if ((op == NM_RMAX || op == NM_RMIN) && it->ndim == 1 && it->stride[1][0] == 1 && sd != 1)
    return NM_T(extreme_across)(it, r, a, ri, n, sd, op == NM_RMAX, index_base);
  NM_LOOP(it, real, r, const real, a, double, ri,
    double value;
    int64_t index;
    NM_T(reduce_line)(&EL1, n, sd, op, p, &value, &index);
    EL0 = (real)value;
    EL2 = (double)(index + index_base);
    /* Lines can be long: poll by elements read, not by slots. */
    if ((work += n) >= NM_CHUNK) { work = 0; if (nm_interrupted) return NM_EINTR; });
  return NM_OK;
}

/* ---------------------------------------------------------------------- */
/* Softmax over rows */

NM_HOT
static int NM_T(softmax)(real *r, int64_t rs0, int64_t rs1, const real *a,
                         int64_t as0, int64_t as1, int64_t rows, int64_t cols,
                         int take_log, int keep) {
  int64_t work = 0;
  if (cols == 0) return NM_OK;
  keep = keep && !take_log;              /* the log form needs no exponential kept */
  for (int64_t i = 0; i < rows; i++) {
    const real *x = a + i * as0;
    real *y = r + i * rs0;
    real m = x[0];
    for (int64_t j = 1; j < cols; j++) if (x[j * as1] > m || x[j * as1] != x[j * as1]) m = x[j * as1];
    double sum = 0;
    if (keep && as1 == 1 && rs1 == 1) {   /* each exponential once, kept in y */
      for (int64_t j = 0; j < cols; j++) y[j] = NM_T(vexp)(x[j] - m);    /* vectorised */
      for (int64_t j = 0; j < cols; j++) sum += y[j];
    } else if (keep)
      for (int64_t j = 0; j < cols; j++) {
        real e = NM_T(vexp)(x[j * as1] - m);
        y[j * rs1] = e;
        sum += e;
      }
    else
      for (int64_t j = 0; j < cols; j++) sum += NM_T(vexp)(x[j * as1] - m);
    if (take_log) {
      /* (x - m) - log(sum), never x - (m + log(sum)): m + log(sum) rounds
      ** away log(sum) when m is large. */
      real lse = (real)NM_M(log)((real)sum);
      for (int64_t j = 0; j < cols; j++) y[j * rs1] = (x[j * as1] - m) - lse;
    } else {
      double inv = 1.0 / sum;
      if (keep)
        for (int64_t j = 0; j < cols; j++) y[j * rs1] = (real)(y[j * rs1] * inv);
      else
        for (int64_t j = 0; j < cols; j++) y[j * rs1] = (real)(NM_T(vexp)(x[j * as1] - m) * inv);
    }
    if ((work += cols) >= NM_CHUNK) { work = 0; if (nm_interrupted) return NM_EINTR; }
  }
  return NM_OK;
}

/* ---------------------------------------------------------------------- */
/* Products: plain loops for operands BLAS cannot take, and BLAS calls */

static int NM_T(gemm_loops)(int64_t m, int64_t n, int64_t k, real alpha,
                            const real *A, int64_t as0, int64_t as1,
                            const real *B, int64_t bs0, int64_t bs1, real beta,
                            real *C, int64_t cs0, int64_t cs1) {
  for (int64_t i = 0; i < m; i++) {
    for (int64_t j = 0; j < n; j++) {
      double acc = 0;
      for (int64_t l = 0; l < k; l++) acc += (double)A[i * as0 + l * as1] * B[l * bs0 + j * bs1];
      real *c = &C[i * cs0 + j * cs1];
      *c = beta == 0 ? (real)(alpha * acc) : (real)(alpha * acc) + beta * *c;
    }
    if (nm_interrupted) return NM_EINTR;
  }
  return NM_OK;
}

static int NM_T(gemv_loops)(int64_t m, int64_t n, real alpha, const real *A,
                            int64_t as0, int64_t as1, const real *x, int64_t xs,
                            real beta, real *y, int64_t ys) {
  for (int64_t i = 0; i < m; i++) {
    double acc = 0;
    for (int64_t j = 0; j < n; j++) acc += (double)A[i * as0 + j * as1] * x[j * xs];
    real *t = &y[i * ys];
    *t = beta == 0 ? (real)(alpha * acc) : (real)(alpha * acc) + beta * *t;
    if ((i & 1023) == 1023 && nm_interrupted) return NM_EINTR;
  }
  return NM_OK;
}

static int NM_T(ger_loops)(int64_t m, int64_t n, real alpha, const real *x, int64_t xs,
                           const real *y, int64_t ys, real *A, int64_t as0, int64_t as1) {
  for (int64_t i = 0; i < m; i++) {
    real ax = alpha * x[i * xs];
    real *row = A + i * as0;
    if (as1 == 1 && ys == 1) for (int64_t j = 0; j < n; j++) row[j] += ax * y[j];
    else for (int64_t j = 0; j < n; j++) row[j * as1] += ax * y[j * ys];
    if ((i & 1023) == 1023 && nm_interrupted) return NM_EINTR;
  }
  return NM_OK;
}

NM_HOT
static int NM_T(ger_masked)(int64_t m, int64_t n, real alpha, const real *x, int64_t xs,
                            const real *y, int64_t ys, real *A, int64_t as0, int64_t as1,
                            const real *M, int64_t ms0, int64_t ms1) {
  int64_t work = 0;
  for (int64_t i = 0; i < m; i++) {
    real ax = alpha * x[i * xs];
    real *row = A + i * as0;
    const real *mrow = M + i * ms0;
    /* A select, not a product with the mask: 0 * inf would be NaN. */
    if (as1 == 1 && ys == 1 && ms1 == 1)
      for (int64_t j = 0; j < n; j++) {
        real mk = mrow[j];
        row[j] += mk != 0 ? ax * y[j] * mk : (real)0;
      }
    else
      for (int64_t j = 0; j < n; j++) {
        real mk = mrow[j * ms1];
        row[j * as1] += mk != 0 ? ax * y[j * ys] * mk : (real)0;
      }
    if ((work += n) >= NM_CHUNK) { work = 0; if (nm_interrupted) return NM_EINTR; }
  }
  return NM_OK;
}

static int NM_T(dot)(const nm_iter *it, const real *x, const real *y, double *out) {
  if (NM_DOT_BLAS && it->ndim == 1 && it->size[0] <= INT_MAX &&
      it->stride[0][0] >= 1 && it->stride[0][0] <= INT_MAX &&
      it->stride[1][0] >= 1 && it->stride[1][0] <= INT_MAX) {
    *out = NM_BLAS(dot)((int)it->size[0], x, (int)it->stride[0][0], y, (int)it->stride[1][0]);
    return NM_OK;
  }
  double acc = 0;
  NM_LOOP(it, const real, x, const real, y, const real, y, acc += (double)EL0 * EL1;);
  *out = acc;
  return NM_OK;
}

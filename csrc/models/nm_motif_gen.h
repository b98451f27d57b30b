/*
** nm_motif_gen.h: the pieces of the motif network that the motif-rule
** kernels (nm_meta_gen.h) and the RCN kernels (nm_rcn_gen.h) share: the
** trace layout, the forward and error signals, their adjoint and the row
** helpers. Written once over an element type like the files that include
** it: each of nm_meta.c and nm_rcn.c includes it twice, with `real`, FN(name)
** and GEMV defined for float and for double, so every kernel is compiled
** with its own file's optimisation settings.
*/

/* The untyped part, once per translation unit. */
#ifndef NM_MOTIF_GEN_UNTYPED
#define NM_MOTIF_GEN_UNTYPED

/* What a trace holds, one vector per layer each: activations y, errors e,
** s = 1 - exp(-beta y) (the softplus derivative), r = B^T e (the error
** before the derivative), pre-activations z, q = W^T y_l (length n_{l-1}),
** and the motif rule's update vectors a, b; then 3 (L + 1) scalars. The
** RCN trace stops before a (kinds = TR_A). */
enum { TR_Y, TR_E, TR_S, TR_R, TR_Z, TR_Q, TR_A, TR_B, TR_KINDS };

static void trace_layout(const nm_motif_net *net, int kinds,
                         int64_t off[TR_KINDS][NM_META_MAXLAYERS + 1], int64_t *scal) {
  int64_t pos = 0;
  for (int k = 0; k < kinds; k++) {
    for (int l = 0; l <= net->layers; l++) {
      int64_t len = net->sizes[l];
      if (k == TR_Q) len = l > 0 ? net->sizes[l - 1] : 0;
      if ((k == TR_Z || k == TR_A || k == TR_B) && l == 0) len = 0;
      off[k][l] = pos;
      pos += len;
    }
  }
  *scal = pos;
}

static int64_t trace_size(const nm_motif_net *net, int kinds) {
  int64_t off[TR_KINDS][NM_META_MAXLAYERS + 1], scal;
  trace_layout(net, kinds, off, &scal);
  return scal + 3 * (net->layers + 1);
}

#endif

/* Pointers into a trace buffer; a and b are NULL in a trace without them. */
typedef struct {
  real *y[NM_META_MAXLAYERS + 1], *e[NM_META_MAXLAYERS + 1], *s[NM_META_MAXLAYERS + 1];
  real *r[NM_META_MAXLAYERS + 1], *z[NM_META_MAXLAYERS + 1], *q[NM_META_MAXLAYERS + 1];
  real *a[NM_META_MAXLAYERS + 1], *b[NM_META_MAXLAYERS + 1];
  real *scal;          /* per layer l >= 1: S, c, d at 3 l .. 3 l + 2 */
} FN(trace_ptrs);

static void FN(trace_map)(const nm_motif_net *net, int kinds, real *base, FN(trace_ptrs) *p) {
  int64_t off[TR_KINDS][NM_META_MAXLAYERS + 1], scal;
  trace_layout(net, kinds, off, &scal);
  for (int l = 0; l <= net->layers; l++) {
    p->y[l] = base + off[TR_Y][l];
    p->e[l] = base + off[TR_E][l];
    p->s[l] = base + off[TR_S][l];
    p->r[l] = base + off[TR_R][l];
    p->z[l] = base + off[TR_Z][l];
    p->q[l] = base + off[TR_Q][l];
    p->a[l] = kinds > TR_A ? base + off[TR_A][l] : NULL;
    p->b[l] = kinds > TR_B ? base + off[TR_B][l] : NULL;
  }
  p->scal = base + scal;
}

static real *FN(data)(const nm_tensor *t) { return (real *)t->data; }

/* Numerically stable softplus with sharpness beta, in double
** (nm_vmath.h: branch-free, so the loops calling it vectorise). */
static real FN(softplus)(real z, real beta) {
  return (real)vsoftplus_f64((double)z, (double)beta);
}

static double FN(dot)(int64_t n, const real *a, const real *b) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
  return s;
}

static double FN(sum)(int64_t n, const real *a) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += a[i];
  return s;
}

/* Dot product of two rows with eight partial sums, so that the compiler
** vectorises without reassociating. */
static inline real FN(row_dot)(int64_t m, const real *a, const real *b) {
  real s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= m; j += 8)
    for (int k = 0; k < 8; k++) s[k] += a[j + k] * b[j + k];
  for (; j < m; j++) s[0] += a[j] * b[j];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline void FN(row_axpy)(int64_t m, real alpha, const real *restrict x,
                                real *restrict y) {
  for (int64_t j = 0; j < m; j++) y[j] += alpha * x[j];
}

/* The feedback matrix of layer l (1-based): B_l, or W_l in backprop modes. */
static const real *FN(feedback)(const nm_motif_net *net, const nm_tensor *const *W,
                                const nm_tensor *const *B, int l) {
  return net->feedback == NM_FEEDBACK_FA ? FN(data)(B[l - 1]) : FN(data)(W[l - 1]);
}

/* Softmax of n values into y (y may be z); returns log(sum exp(z - max)) + max. */
static double FN(softmax)(int64_t n, const real *z, real *y) {
  real mx = z[0];
  for (int64_t i = 1; i < n; i++) if (z[i] > mx) mx = z[i];
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += exp((double)(z[i] - mx));
  double lse = log(sum) + (double)mx;
  for (int64_t i = 0; i < n; i++) y[i] = (real)exp((double)z[i] - lse);
  return lse;
}

/* The network's forward pass with the weights W and its errors down to
** e_1, into the trace: y, s and z of every layer, e and r of layers
** 1..L. The input error e_0 is FN(input_error)'s, for the motifs that
** need it. */
static void FN(forward_signals)(const nm_motif_net *net, const nm_tensor *const *W,
                                const nm_tensor *const *B, const nm_tensor *x, int64_t label,
                                FN(trace_ptrs) *T) {
  const int L = net->layers;
  const int64_t *n = net->sizes;
  const real beta = (real)net->beta;
  const real *xp = (const real *)x->data;
  const int64_t xs = x->ndim == 1 ? x->stride[0] : 1;
  for (int64_t j = 0; j < n[0]; j++) {
    T->y[0][j] = xp[j * xs];
    T->s[0][j] = (real)-vexpm1_f64(-(double)beta * (double)T->y[0][j]);    /* 1 - exp(-beta y) */
  }
  for (int l = 1; l <= L; l++) {
    GEMV(CblasRowMajor, CblasNoTrans, (int)n[l], (int)n[l - 1], 1, FN(data)(W[l - 1]),
         (int)n[l - 1], T->y[l - 1], 1, 0, T->z[l], 1);
    if (l < L) {
      for (int64_t i = 0; i < n[l]; i++) {
        const real y = FN(softplus)(T->z[l][i], beta);
        T->y[l][i] = y;
        T->s[l][i] = (real)-vexpm1_f64(-(double)beta * (double)y);
      }
    } else {
      FN(softmax)(n[L], T->z[L], T->y[L]);
      for (int64_t i = 0; i < n[L]; i++) T->s[L][i] = 0;
    }
  }
  for (int64_t i = 0; i < n[L]; i++) {
    T->e[L][i] = T->y[L][i];
    T->r[L][i] = 0;
  }
  T->e[L][label] -= 1;
  for (int l = L - 1; l >= 1; l--) {
    GEMV(CblasRowMajor, CblasTrans, (int)n[l + 1], (int)n[l], 1, FN(feedback)(net, W, B, l + 1),
         (int)n[l], T->e[l + 1], 1, 0, T->r[l], 1);
    for (int64_t i = 0; i < n[l]; i++) T->e[l][i] = T->r[l][i] * T->s[l][i];
  }
}

/* The synthetic input error e_0 = (B_1^T e_1) .* (1 - exp(-beta x)), into
** the trace: a sweep over the largest matrix, for the motifs with e_{l-1}
** only. */
static void FN(input_error)(const nm_motif_net *net, const nm_tensor *const *W,
                            const nm_tensor *const *B, FN(trace_ptrs) *T) {
  const int64_t *n = net->sizes;
  GEMV(CblasRowMajor, CblasTrans, (int)n[1], (int)n[0], 1, FN(feedback)(net, W, B, 1),
       (int)n[0], T->e[1], 1, 0, T->r[0], 1);
  for (int64_t i = 0; i < n[0]; i++) T->e[0][i] = T->r[0][i] * T->s[0][i];
}

/* The update vectors of one motif combination P (nm_meta.h) on layer l:
** a = -(P0 + P5 S + P7 c) e_l + P9 y_l, b = -(P1 + P6 c + P8 d) y_l - P2 e_l - P4. */
static void FN(update_vectors)(int64_t n, const double *P, double S, double c, double d,
                               const real *e, const real *y, real *a, real *b) {
  const real ca = (real)(-(P[0] + P[5] * S + P[7] * c)), c9 = (real)P[9];
  const real cb = (real)(-(P[1] + P[6] * c + P[8] * d)), c2 = (real)P[2], c4 = (real)P[4];
  for (int64_t i = 0; i < n; i++) {
    a[i] = ca * e[i] + c9 * y[i];
    b[i] = cb * y[i] - c2 * e[i] - c4;
  }
}

/* The adjoint of the signals, once the update's adjoints are in yb, eb and
** zb: the error pathway from e_0 upwards (e_0 only when something depends
** on it: the forward may not have computed it), e_L = y_L - onehot, then
** the forward pass from the top. rb receives dLoss/dr; with FA feedback
** and a Bbar list, dLoss/dB_l is added to Bbar[l - 1] where it is not NULL. */
static void FN(signals_adjoint)(const nm_motif_net *net, const nm_tensor *const *W,
                                const nm_tensor *const *B, const FN(trace_ptrs) *T,
                                real *const *yb, real *const *eb, real *const *zb,
                                real *const *rb, const nm_tensor *const *Bbar) {
  const int L = net->layers;
  const int64_t *n = net->sizes;
  const double beta = net->beta;
  for (int l = 0; l < L; l++) {
    if (l == 0) {
      int any = 0;
      for (int64_t i = 0; i < n[0] && !any; i++) any = eb[0][i] != 0;
      if (!any) continue;
    }
    for (int64_t i = 0; i < n[l]; i++) {
      rb[l][i] = eb[l][i] * T->s[l][i];
      if (l >= 1) yb[l][i] += (real)(eb[l][i] * T->r[l][i] * beta * (1 - T->s[l][i]));
    }
    GEMV(CblasRowMajor, CblasNoTrans, (int)n[l + 1], (int)n[l], 1,
         FN(feedback)(net, W, B, l + 1), (int)n[l], rb[l], 1, 1, eb[l + 1], 1);
    if (net->feedback == NM_FEEDBACK_FA && Bbar != NULL && Bbar[l] != NULL)
      GER(CblasRowMajor, (int)n[l + 1], (int)n[l], 1, T->e[l + 1], 1, rb[l], 1,
          FN(data)(Bbar[l]), (int)n[l]);
  }
  for (int64_t i = 0; i < n[L]; i++) yb[L][i] += eb[L][i];
  for (int l = L; l >= 1; l--) {
    if (l == L) {
      const double py = FN(dot)(n[L], T->y[L], yb[L]);
      for (int64_t i = 0; i < n[L]; i++) zb[L][i] += T->y[L][i] * (yb[L][i] - (real)py);
    } else {
      for (int64_t i = 0; i < n[l]; i++) zb[l][i] += yb[l][i] * T->s[l][i];
    }
    if (l >= 2)
      GEMV(CblasRowMajor, CblasTrans, (int)n[l], (int)n[l - 1], 1, FN(data)(W[l - 1]),
           (int)n[l - 1], zb[l], 1, 1, yb[l - 1], 1);
  }
}

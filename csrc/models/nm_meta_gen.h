/*
** nm_meta_gen.h: the motif-rule step, its adjoint and the query loss,
** written once over an element type; nm_meta.c includes this file twice,
** defining `real`, FN(name) and the BLAS names for float and for double.
** The pieces shared with the RCN kernels are in nm_motif_gen.h. The
** equations are in nm_meta.h; the adjoint's derivation in
** doc/autograd.md ("The fused motif step").
*/

/* out = alpha in + sum_{k < nk} coef_k u_k v_k^T over an n x m row-major
** matrix; out may be in. One sweep over the matrix whatever nk is. */
NM_META_CLONES
static void FN(rank_update)(int64_t n, int64_t m, real *out, const real *in, real alpha,
                            int nk, const real *coef, const real *const *u,
                            const real *const *v) {
  const real *v0 = nk > 0 ? v[0] : NULL, *v1 = nk > 1 ? v[1] : NULL;
  const real *v2 = nk > 2 ? v[2] : NULL, *v3 = nk > 3 ? v[3] : NULL;
  for (int64_t i = 0; i < n; i++) {
    real *o = out + i * m;
    const real *w = in + i * m;
    const real c0 = nk > 0 ? coef[0] * u[0][i] : 0, c1 = nk > 1 ? coef[1] * u[1][i] : 0;
    const real c2 = nk > 2 ? coef[2] * u[2][i] : 0, c3 = nk > 3 ? coef[3] * u[3][i] : 0;
    switch (nk) {
      case 0:
        for (int64_t j = 0; j < m; j++) o[j] = alpha * w[j];
        break;
      case 1:
        for (int64_t j = 0; j < m; j++) o[j] = alpha * w[j] + c0 * v0[j];
        break;
      case 2:
        for (int64_t j = 0; j < m; j++) o[j] = alpha * w[j] + c0 * v0[j] + c1 * v1[j];
        break;
      case 3:
        for (int64_t j = 0; j < m; j++)
          o[j] = alpha * w[j] + c0 * v0[j] + c1 * v1[j] + c2 * v2[j];
        break;
      default:
        for (int64_t j = 0; j < m; j++)
          o[j] = alpha * w[j] + c0 * v0[j] + c1 * v1[j] + c2 * v2[j] + c3 * v3[j];
    }
  }
}

/* One sweep over G (n x m, row-major) for everything the adjoint reads
** from it: gk = G vk (length n) and hk = G^T uk (length m, overwritten),
** and *gw = <G, W>. Every input but v0 may be NULL, and its output is
** then skipped. Row by row, so each row of G is read from memory once and
** the several products reuse it from cache. */
NM_META_CLONES
static void FN(adjoint_sweep)(int64_t n, int64_t m, const real *G, const real *W,
                              const real *v0, const real *v1, const real *v2,
                              const real *u0, const real *u1, const real *u2,
                              real *g0, real *g1, real *g2, real *h0, real *h1, real *h2,
                              double *gw) {
  if (u0 != NULL) for (int64_t j = 0; j < m; j++) h0[j] = 0;
  if (u1 != NULL) for (int64_t j = 0; j < m; j++) h1[j] = 0;
  if (u2 != NULL) for (int64_t j = 0; j < m; j++) h2[j] = 0;
  double gwsum = 0;
  for (int64_t i = 0; i < n; i++) {
    const real *g = G + i * m;
    g0[i] = FN(row_dot)(m, g, v0);
    if (v1 != NULL) g1[i] = FN(row_dot)(m, g, v1);
    if (v2 != NULL) g2[i] = FN(row_dot)(m, g, v2);
    if (W != NULL) gwsum += FN(row_dot)(m, g, W + i * m);
    if (u0 != NULL && u0[i] != 0) FN(row_axpy)(m, u0[i], g, h0);
    if (u1 != NULL && u1[i] != 0) FN(row_axpy)(m, u1[i], g, h1);
    if (u2 != NULL && u2[i] != 0) FN(row_axpy)(m, u2[i], g, h2);
  }
  if (gw != NULL) *gw = gwsum;
}

/* The input error e_0 (FN(input_error)), once per trace: only motifs with
** e_{l-1} need it, so the forward skips this sweep over the largest matrix
** when theta does not use them. T->scal[0] and T->scal[1] (layer 0 has no
** S, c, d) flag whether q and e_0 were computed. */
static void FN(fill_e0)(const nm_motif_net *net, const nm_tensor *const *W_in,
                        const nm_tensor *const *B, FN(trace_ptrs) *T) {
  FN(input_error)(net, W_in, B, T);
  T->scal[1] = 1;
}

/* q_l = W_l^T y_l and c_l = q_l . e_{l-1} for every layer, into the trace. */
static void FN(fill_q)(const nm_motif_net *net, const nm_tensor *const *W_in,
                       const nm_tensor *const *B, FN(trace_ptrs) *T) {
  const int64_t *n = net->sizes;
  if (T->scal[1] == 0) FN(fill_e0)(net, W_in, B, T);
  for (int l = 1; l <= net->layers; l++) {
    GEMV(CblasRowMajor, CblasTrans, (int)n[l], (int)n[l - 1], 1, FN(data)(W_in[l - 1]),
         (int)n[l - 1], T->y[l], 1, 0, T->q[l], 1);
    T->scal[3 * l + 1] = (real)FN(dot)(n[l - 1], T->q[l], T->e[l - 1]);
  }
  T->scal[0] = 1;
}

static int FN(forward)(const nm_motif_net *net, const nm_tensor *const *W_out,
                       const nm_tensor *const *W_in, const nm_tensor *const *B,
                       const nm_tensor *x, int64_t label, const double *th, void *trace) {
  const int L = net->layers;
  const int64_t *n = net->sizes;
  FN(trace_ptrs) T;
  FN(trace_map)(net, TR_KINDS, (real *)trace, &T);
  FN(forward_signals)(net, W_in, B, x, label, &T);
  if (nm_interrupted) return NM_EINTR;

  /* The updates, each from the pre-update weights of its own layer. */
  const int need_q = th[6] != 0 || th[7] != 0 || th[9] != 0;
  const int b_used = th[1] != 0 || th[2] != 0 || th[4] != 0 || th[6] != 0 || th[8] != 0;
  T.scal[0] = T.scal[1] = 0;
  if (b_used || need_q) FN(fill_e0)(net, W_in, B, &T);
  if (need_q) FN(fill_q)(net, W_in, B, &T);
  for (int l = 1; l <= L; l++) {
    const double S = FN(sum)(n[l], T.y[l]);
    const double d = FN(dot)(n[l], T.e[l], T.z[l]);
    const double c = need_q ? (double)T.scal[3 * l + 1] : 0;
    T.scal[3 * l] = (real)S;
    T.scal[3 * l + 1] = (real)c;
    T.scal[3 * l + 2] = (real)d;
    FN(update_vectors)(n[l], th, S, c, d, T.e[l], T.y[l], T.a[l], T.b[l]);
    const real c9 = (real)th[9];
    const real *u[3], *v[3];
    real coef[3];
    int nk = 0;
    coef[nk] = 1; u[nk] = T.a[l]; v[nk++] = T.y[l - 1];
    if (b_used) { coef[nk] = 1; u[nk] = T.b[l]; v[nk++] = T.e[l - 1]; }
    if (th[9] != 0) { coef[nk] = -c9; u[nk] = T.y[l]; v[nk++] = T.q[l]; }
    FN(rank_update)(n[l], n[l - 1], FN(data)(W_out[l - 1]), FN(data)(W_in[l - 1]),
                    (real)(1 - th[3]), nk, coef, u, v);
  }
  return NM_OK;
}

static int FN(backward)(const nm_motif_net *net, const nm_tensor *const *G,
                        const nm_tensor *const *W_in, const nm_tensor *const *B, void *trace,
                        const double *th, const int *need, double *theta_bar,
                        const nm_tensor *const *Bbar, void *work) {
  const int L = net->layers;
  const int64_t *n = net->sizes;
  int nd[NM_META_MOTIFS];
  for (int r = 0; r < NM_META_MOTIFS; r++) nd[r] = need == NULL || need[r] != 0;
  FN(trace_ptrs) T;
  FN(trace_map)(net, TR_KINDS, (real *)trace, &T);

  /* Work: adjoints of y, e (l = 0..L), z, q (l = 1..L), r (l = 0..L-1),
  ** then six scratch vectors of the largest width. */
  real *p = (real *)work;
  real *yb[NM_META_MAXLAYERS + 1], *eb[NM_META_MAXLAYERS + 1], *zb[NM_META_MAXLAYERS + 1];
  real *qb[NM_META_MAXLAYERS + 1], *rb[NM_META_MAXLAYERS + 1];
  int64_t maxn = 0;
  for (int l = 0; l <= L; l++) {
    if (n[l] > maxn) maxn = n[l];
    yb[l] = p; p += n[l];
    eb[l] = p; p += n[l];
    zb[l] = p; p += n[l];
    rb[l] = p; p += n[l];
    qb[l] = p; p += l > 0 ? n[l - 1] : 0;
  }
  memset(work, 0, (size_t)(p - (real *)work) * sizeof(real));
  real *g0 = p, *g1 = p + maxn, *g2 = p + 2 * maxn;
  real *h0 = p + 3 * maxn, *h1 = p + 4 * maxn, *h2 = p + 5 * maxn;

  const int hasq_needed = nd[6] || nd[7] || nd[9];
  const int g1_needed = nd[1] || nd[2] || nd[4] || nd[6] || nd[8];
  if (T.scal[1] == 0 && g1_needed) FN(fill_e0)(net, W_in, B, &T);
  if (T.scal[0] == 0 && hasq_needed) FN(fill_q)(net, W_in, B, &T);
  const int hasq = T.scal[0] != 0;
  const double t9 = th[9];
  const int b_used = th[1] != 0 || th[2] != 0 || th[4] != 0 || th[6] != 0 || th[8] != 0;

  /* 1. The update expressions of every layer. */
  for (int l = 1; l <= L; l++) {
    const int64_t nl = n[l], m = n[l - 1];
    const real *Gl = FN(data)(G[l - 1]), *W = FN(data)(W_in[l - 1]);
    const double S = T.scal[3 * l], c = T.scal[3 * l + 1], d = T.scal[3 * l + 2];
    double gw = 0;
    /* G e_{l-1} serves b's motifs; G^T y_l and G q the Oja motif. */
    const int want_g1 = b_used || nd[1] || nd[2] || nd[4] || nd[6] || nd[8];
    const int want_h2 = t9 != 0 || (nd[9] && hasq);
    /* G^T a is dLoss/dy_{l-1} through the update: none for the input x. */
    FN(adjoint_sweep)(nl, m, Gl, nd[3] ? W : NULL, T.y[l - 1], want_g1 ? T.e[l - 1] : NULL,
                      (hasq && t9 != 0) ? T.q[l] : NULL, l >= 2 ? T.a[l] : NULL,
                      b_used ? T.b[l] : NULL, want_h2 ? T.y[l] : NULL, g0, g1, g2, h0, h1, h2,
                      &gw);
    if (!want_g1) for (int64_t i = 0; i < nl; i++) g1[i] = 0;
    if (!b_used) for (int64_t j = 0; j < m; j++) h1[j] = 0;
    if (!want_h2) for (int64_t j = 0; j < m; j++) h2[j] = 0;
    const double ey = FN(dot)(nl, T.e[l], g0), yg = FN(dot)(nl, T.y[l], g1);
    const double eg = FN(dot)(nl, T.e[l], g1), sg = FN(sum)(nl, g1);
    const double yy = FN(dot)(nl, T.y[l], g0), hq = hasq ? FN(dot)(m, h2, T.q[l]) : 0;
    const double tb[NM_META_MOTIFS] = {-ey, -yg, -eg, -gw, -sg, -S * ey, -c * yg, -c * ey,
                                       -d * yg, yy - hq};
    for (int r = 0; r < NM_META_MOTIFS; r++) if (nd[r]) theta_bar[r] += tb[r];

    if (l >= 2) for (int64_t j = 0; j < m; j++) yb[l - 1][j] += h0[j];
    for (int64_t j = 0; j < m; j++) eb[l - 1][j] += h1[j];
    const real ca = (real)(-(th[0] + th[5] * S + th[7] * c));
    const real cb = (real)(-(th[1] + th[6] * c + th[8] * d));
    const real c2 = (real)th[2], c9 = (real)t9;
    const real Sb = (real)(-th[5] * ey);
    const double cbar = -th[7] * ey - th[6] * yg, dbar = -th[8] * yg;
    for (int64_t i = 0; i < nl; i++) {
      eb[l][i] += ca * g0[i] - c2 * g1[i] + (real)dbar * T.z[l][i];
      yb[l][i] += c9 * g0[i] + cb * g1[i] + Sb - (t9 != 0 ? c9 * g2[i] : 0);
      zb[l][i] += (real)dbar * T.e[l][i];
    }
    for (int64_t j = 0; j < m; j++) qb[l][j] = -c9 * h2[j] + (real)cbar * T.e[l - 1][j];
    if (cbar != 0 && hasq)
      for (int64_t j = 0; j < m; j++) eb[l - 1][j] += (real)cbar * T.q[l][j];
    if (t9 != 0 || cbar != 0)
      GEMV(CblasRowMajor, CblasNoTrans, (int)nl, (int)m, 1, W, (int)m, qb[l], 1, 1, yb[l], 1);
  }
  if (nm_interrupted) return NM_EINTR;

  /* 2. The error pathway and the forward pass. */
  FN(signals_adjoint)(net, W_in, B, &T, yb, eb, zb, rb, Bbar);

  /* 3. dLoss/dW_in = (1 - theta_3) G + y q^T + dz y_{l-1}^T (+ e r^T: BP). */
  for (int l = 1; l <= L; l++) {
    const real *u[3], *v[3];
    real coef[3] = {1, 1, 1};
    int nk = 0;
    u[nk] = zb[l]; v[nk++] = T.y[l - 1];
    u[nk] = T.y[l]; v[nk++] = qb[l];
    if (net->feedback == NM_FEEDBACK_BP) { u[nk] = T.e[l]; v[nk++] = rb[l - 1]; }
    real *Gl = FN(data)(G[l - 1]);
    FN(rank_update)(n[l], n[l - 1], Gl, Gl, (real)(1 - th[3]), nk, coef, u, v);
  }
  return NM_OK;
}

/* Mean cross-entropy of the network on the rows of X, its gradient. */
static int FN(query)(const nm_motif_net *net, const nm_tensor *const *W, const nm_tensor *X,
                     const int64_t *labels, double *loss, int64_t *correct,
                     const nm_tensor *const *G, void *work) {
  const int L = net->layers;
  const int64_t *n = net->sizes, m = X->size[0];
  const int ldx = (int)(m > 1 ? X->stride[0] : n[0]);
  const real beta = (real)net->beta;
  real *Y[NM_META_MAXLAYERS + 1];
  real *p = (real *)work;
  int64_t maxn = 0;
  Y[0] = (real *)X->data;
  for (int l = 1; l <= L; l++) {
    Y[l] = p;
    p += m * n[l];
    if (n[l] > maxn) maxn = n[l];
  }
  real *D = p, *D2 = p + m * maxn;
  for (int l = 1; l <= L; l++) {
    const int lda = l == 1 ? ldx : (int)n[l - 1];
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n[l], (int)n[l - 1], 1, Y[l - 1],
         lda, FN(data)(W[l - 1]), (int)n[l - 1], 0, Y[l], (int)n[l]);
    if (l < L)
      for (int64_t k = 0; k < m * n[l]; k++) Y[l][k] = FN(softplus)(Y[l][k], beta);
  }
  double total = 0;
  int64_t right = 0;
  for (int64_t i = 0; i < m; i++) {
    real *row = Y[L] + i * n[L];
    int64_t best = 0;
    for (int64_t k = 1; k < n[L]; k++) if (row[k] > row[best]) best = k;
    if (best == labels[i]) right++;
    const double zl = row[labels[i]];
    total += FN(softmax)(n[L], row, row) - zl;      /* -log softmax(z)[label] */
  }
  *loss = total / (double)m;
  if (correct != NULL) *correct = right;
  if (nm_interrupted) return NM_EINTR;
  if (G == NULL) return NM_OK;
  for (int64_t i = 0; i < m; i++) {
    for (int64_t k = 0; k < n[L]; k++) D[i * n[L] + k] = Y[L][i * n[L] + k] / (real)m;
    D[i * n[L] + labels[i]] -= (real)1 / (real)m;
  }
  for (int l = L; l >= 1; l--) {
    const int lda = l == 1 ? ldx : (int)n[l - 1];
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n[l], (int)n[l - 1], (int)m, 1, D,
         (int)n[l], Y[l - 1], lda, 0, FN(data)(G[l - 1]), (int)n[l - 1]);
    if (l >= 2) {
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n[l - 1], (int)n[l], 1, D,
           (int)n[l], FN(data)(W[l - 1]), (int)n[l - 1], 0, D2, (int)n[l - 1]);
      for (int64_t k = 0; k < m * n[l - 1]; k++)
        D2[k] *= (real)-vexpm1_f64(-(double)beta * (double)Y[l - 1][k]);
      real *t = D; D = D2; D2 = t;
    }
  }
  return NM_OK;
}

/*
** nm_rcn_gen.h: the RCN step and its adjoint written once over an element
** type; nm_rcn.c includes this file twice, defining `real`, FN(name),
** GEMV, GER and TANH_ROW for float and for double; the pieces shared with
** the motif rule are in nm_motif_gen.h. Equations in nm_rcn.h.
*/

/* The network's signals for one sample with the weights W: activations,
** errors, e_0 and q when the motifs need them, and S, c, d per layer. */
static void FN(signals)(const nm_rcn *rcn, const nm_tensor *const *W, const nm_tensor *const *B,
                        const nm_tensor *x, int64_t label, FN(trace_ptrs) *T) {
  const nm_motif_net *net = &rcn->net;
  const int NL = net->layers;
  const int64_t *n = net->sizes;
  const motif_needs nd = needs_of(rcn);
  FN(forward_signals)(net, W, B, x, label, T);
  if (nd.b || nd.q) {
    FN(input_error)(net, W, B, T);
  } else {
    for (int64_t j = 0; j < n[0]; j++) T->e[0][j] = T->r[0][j] = 0;
  }
  for (int l = 1; l <= NL; l++) {
    double c = 0;
    if (nd.q) {
      GEMV(CblasRowMajor, CblasTrans, (int)n[l], (int)n[l - 1], 1, FN(data)(W[l - 1]),
           (int)n[l - 1], T->y[l], 1, 0, T->q[l], 1);
      c = FN(dot)(n[l - 1], T->q[l], T->e[l - 1]);
    } else {
      for (int64_t j = 0; j < n[l - 1]; j++) T->q[l][j] = 0;
    }
    T->scal[3 * l] = (real)FN(sum)(n[l], T->y[l]);
    T->scal[3 * l + 1] = (real)c;
    T->scal[3 * l + 2] = (real)FN(dot)(n[l], T->e[l], T->z[l]);
  }
}

/* The coefficient vectors of every chemical of layer l: A[c n + i] = a_c[i]
** and Bv[c n + i] = b_c[i] (nm_rcn.h). */
static void FN(coef_vectors)(const nm_rcn *rcn, const layer_coef *lc, const FN(trace_ptrs) *T,
                             int l, real *A, real *Bv) {
  const int64_t n = rcn->net.sizes[l];
  const double S = T->scal[3 * l], c = T->scal[3 * l + 1], d = T->scal[3 * l + 2];
  for (int ch = 0; ch < rcn->chemicals; ch++)
    FN(update_vectors)(n, lc->P[ch], S, c, d, T->e[l], T->y[l], A + ch * n, Bv + ch * n);
}

/* t[c m + j] = tanh(pre_c) on row i of layer l: the chemical mixing, the
** motif combination and the bias. H: the layer's L x n x m chemicals. */
NM_RCN_CLONES
static void FN(pre_row)(const nm_rcn *rcn, const layer_coef *lc, int l, int64_t i,
                        const real *H, const real *Wrow, const real *bias,
                        const FN(trace_ptrs) *T, const real *A, const real *Bv, real *t) {
  const int L = rcn->chemicals;
  const int64_t n = rcn->net.sizes[l], m = rcn->net.sizes[l - 1], nm_ = n * m;
  const motif_needs nd = needs_of(rcn);
  const real *yp = T->y[l - 1], *ep = T->e[l - 1], *q = T->q[l];
  const real yi = T->y[l][i];
  for (int c = 0; c < L; c++) {
    real *restrict tc = t + c * m;
    const real ac = A[c * n + i], b0 = (real)lc->b[c];
    for (int64_t j = 0; j < m; j++) tc[j] = ac * yp[j] + b0;
    if (nd.b) {
      const real bc = Bv[c * n + i];
      for (int64_t j = 0; j < m; j++) tc[j] += bc * ep[j];
    }
    if (nd.oja && lc->P[c][9] != 0) {
      const real qc = (real)(-lc->P[c][9]) * yi;
      for (int64_t j = 0; j < m; j++) tc[j] += qc * q[j];
    }
    if (nd.w && lc->P[c][3] != 0) {
      const real wc = (real)(-lc->P[c][3]);
      for (int64_t j = 0; j < m; j++) tc[j] += wc * Wrow[j];
    }
    for (int k = 0; k < L; k++) {
      if (lc->K[c][k] == 0) continue;
      const real kc = (real)lc->K[c][k];
      const real *restrict hk = H + k * nm_ + i * m;
      for (int64_t j = 0; j < m; j++) tc[j] += kc * hk[j];
    }
    if (bias != NULL) {
      const real *restrict bc = bias + c * nm_ + i * m;
      for (int64_t j = 0; j < m; j++) tc[j] += bc[j];
    }
    TANH_ROW(m, tc);
  }
}

/* The chemical update of layer l, row by row (in place allowed: a row is
** read whole before it is written). */
NM_RCN_CLONES
static void FN(update_layer)(const nm_rcn *rcn, const layer_coef *lc, int l, real *Hout,
                             real *Wout, const real *Hin, const real *Win, const real *bias,
                             const FN(trace_ptrs) *T, const real *A, const real *Bv, real *t) {
  const int L = rcn->chemicals;
  const int64_t n = rcn->net.sizes[l], m = rcn->net.sizes[l - 1], nm_ = n * m;
  for (int64_t i = 0; i < n; i++) {
    FN(pre_row)(rcn, lc, l, i, Hin, Win + i * m, bias, T, A, Bv, t);
    real *restrict wo = Wout + i * m;
    const real *wi = Win + i * m;
    if (rcn->momentum) {
      if (wo != wi) for (int64_t j = 0; j < m; j++) wo[j] = wi[j];
    } else {
      for (int64_t j = 0; j < m; j++) wo[j] = 0;
    }
    for (int c = 0; c < L; c++) {
      const real yd = (real)rcn->decay[c], zg = (real)rcn->gain[c], vc = (real)lc->v[c];
      const real *hi = Hin + c * nm_ + i * m, *tc = t + c * m;
      real *ho = Hout + c * nm_ + i * m;
      for (int64_t j = 0; j < m; j++) {
        const real h = yd * hi[j] + zg * tc[j];
        ho[j] = h;
        wo[j] += vc * h;
      }
    }
  }
}

static int FN(rcn_forward)(const nm_rcn *rcn, const nm_tensor *const *H_out,
                           const nm_tensor *const *W_out, const nm_tensor *const *H_in,
                           const nm_tensor *const *W_in, const nm_tensor *const *B,
                           const nm_tensor *x, int64_t label, const nm_rcn_params *p,
                           void *trace, void *work) {
  const nm_motif_net *net = &rcn->net;
  const int64_t mx = max_width(net), L = rcn->chemicals;
  FN(trace_ptrs) T;
  FN(trace_map)(net, TR_A, (real *)trace, &T);
  FN(signals)(rcn, W_in, B, x, label, &T);
  if (nm_interrupted) return NM_EINTR;
  real *A = (real *)work, *Bv = A + L * mx, *t = Bv + L * mx;
  layer_coef lc;
  for (int l = 1; l <= net->layers; l++) {
    load_layer(rcn, p, l - 1, &lc);
    FN(coef_vectors)(rcn, &lc, &T, l, A, Bv);
    const real *bias = rcn->neuron_bias && p->bias != NULL ? FN(data)(p->bias[l - 1]) : NULL;
    FN(update_layer)(rcn, &lc, l, FN(data)(H_out[l - 1]), FN(data)(W_out[l - 1]),
                     FN(data)(H_in[l - 1]), FN(data)(W_in[l - 1]), bias, &T, A, Bv, t);
    if (nm_interrupted) return NM_EINTR;
  }
  return NM_OK;
}

/* One row of one chemical: G = dLoss/dh' (= hb + v wb), D = dLoss/dpre =
** G z (1 - t^2), and t (tanh(pre) on entry) becomes h' = y h + z t. */
static inline void FN(adjoint_row)(int64_t m, real yd, real zg, real vc,
                                   const real *restrict hb, const real *restrict wb,
                                   const real *restrict h, real *restrict t,
                                   real *restrict G, real *restrict D) {
  for (int64_t j = 0; j < m; j++) {
    const real gg = hb[j] + vc * wb[j];
    const real tj = t[j];
    G[j] = gg;
    D[j] = gg * zg * (1 - tj * tj);
    t[j] = yd * h[j] + zg * tj;
  }
}

/* The same from the step's output h' (ho): tanh(pre) = (h' - y h) / z, so
** the adjoint needs neither the chemical mixing nor a tanh again. */
static inline void FN(adjoint_row_out)(int64_t m, real yd, real zg, real vc,
                                       const real *restrict hb, const real *restrict wb,
                                       const real *restrict h, const real *restrict ho,
                                       real *restrict G, real *restrict D) {
  const real iz = 1 / zg;
  for (int64_t j = 0; j < m; j++) {
    const real gg = hb[j] + vc * wb[j];
    const real tj = (ho[j] - yd * h[j]) * iz;
    G[j] = gg;
    D[j] = gg * zg * (1 - tj * tj);
  }
}

/* out = {d.a, d.b, d.c, d.e, sum d} in one pass over the row, each with
** eight partial sums (vectorises without reassociation). */
static inline void FN(row_dots)(int64_t m, const real *restrict d, const real *restrict a,
                                const real *restrict b, const real *restrict c,
                                const real *restrict e, real *out) {
  real s0[8] = {0}, s1[8] = {0}, s2[8] = {0}, s3[8] = {0}, s4[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= m; j += 8) {
    for (int k = 0; k < 8; k++) {
      const real x = d[j + k];
      s0[k] += x * a[j + k];
      s1[k] += x * b[j + k];
      s2[k] += x * c[j + k];
      s3[k] += x * e[j + k];
      s4[k] += x;
    }
  }
  for (; j < m; j++) {
    const real x = d[j];
    s0[0] += x * a[j];
    s1[0] += x * b[j];
    s2[0] += x * c[j];
    s3[0] += x * e[j];
    s4[0] += x;
  }
  real *const acc[5] = {s0, s1, s2, s3, s4};
  for (int q = 0; q < 5; q++) {
    const real *s = acc[q];
    out[q] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  }
}

/* The row sweep of the adjoint for layer l: from dLoss/dH_out and
** dLoss/dW_out (Hb, Wb, overwritten with the parts of dLoss/dH_in and
** dLoss/dW_in that the chemical update gives), the sums the rest of the
** adjoint needs: g0_c = D_c y_{l-1}, g1_c = D_c e_{l-1}, g2_c = D_c q
** (length n, per chemical), h0 = sum_c D_c^T a_c, h1 = sum_c D_c^T b_c,
** h2 = sum_c P[c,9] D_c^T y_l (length m), gw_c = <D_c, W>, and the
** gradients of K, v and the bias, where D_c = dLoss/dpre_c. Hout: the
** step's output chemicals, or NULL to recompute tanh(pre). */
NM_RCN_CLONES
static void FN(adjoint_layer)(const nm_rcn *rcn, const layer_coef *lc, int l, real *Hb, real *Wb,
                              const real *H, const real *Hout, const real *W, const real *bias,
                              real *bias_bar, const FN(trace_ptrs) *T, const real *A,
                              const real *Bv, real *t, real *G, real *D, real *g0, real *g1,
                              real *g2, real *h0, real *h1, real *h2, double *gw,
                              double Kb[][NM_RCN_MAXCHEM], double *vb, double *bb) {
  const int L = rcn->chemicals;
  const int64_t n = rcn->net.sizes[l], m = rcn->net.sizes[l - 1], nm_ = n * m;
  const motif_needs nd = needs_of(rcn);
  const real *yp = T->y[l - 1], *ep = T->e[l - 1], *q = T->q[l];
  for (int64_t j = 0; j < m; j++) h0[j] = h1[j] = h2[j] = 0;
  for (int64_t i = 0; i < n; i++) {
    const real *Wrow = W + i * m;
    real *restrict wb = Wb + i * m;
    if (Hout == NULL) FN(pre_row)(rcn, lc, l, i, H, Wrow, bias, T, A, Bv, t);
    for (int c = 0; c < L; c++) {
      const real *hc = H + c * nm_ + i * m, *hbc = Hb + c * nm_ + i * m;
      if (Hout != NULL) {
        const real *ho = Hout + c * nm_ + i * m;
        FN(adjoint_row_out)(m, (real)rcn->decay[c], (real)rcn->gain[c], (real)lc->v[c], hbc, wb,
                            hc, ho, G + c * m, D + c * m);
        vb[c] += FN(row_dot)(m, wb, ho);
      } else {
        real *tc = t + c * m;
        FN(adjoint_row)(m, (real)rcn->decay[c], (real)rcn->gain[c], (real)lc->v[c], hbc, wb, hc,
                        tc, G + c * m, D + c * m);
        vb[c] += FN(row_dot)(m, wb, tc);
      }
    }
    for (int k = 0; k < L; k++) {
      const real yd = (real)rcn->decay[k];
      real *restrict hb = Hb + k * nm_ + i * m;
      const real *Gk = G + k * m, *hk = H + k * nm_ + i * m;
      for (int64_t j = 0; j < m; j++) hb[j] = yd * Gk[j];
      for (int c = 0; c < L; c++) {
        if (lc->K[c][k] != 0) FN(row_axpy)(m, (real)lc->K[c][k], D + c * m, hb);
        Kb[c][k] += FN(row_dot)(m, D + c * m, hk);
      }
    }
    for (int c = 0; c < L; c++) {
      const real *Dc = D + c * m;
      real d5[5];
      /* unused operands read y_{l-1} instead: their sums are not used */
      FN(row_dots)(m, Dc, yp, nd.b ? ep : yp, nd.oja ? q : yp, Wrow, d5);
      g0[c * n + i] = d5[0];
      if (nd.b) g1[c * n + i] = d5[1];
      if (nd.oja) g2[c * n + i] = d5[2];
      if (nd.w) gw[c] += d5[3];
      if (bias_bar != NULL) FN(row_axpy)(m, 1, Dc, bias_bar + c * nm_ + i * m);
      else bb[c] += d5[4];
      if (l >= 2 && A[c * n + i] != 0) FN(row_axpy)(m, A[c * n + i], Dc, h0);
      if (nd.b && Bv[c * n + i] != 0) FN(row_axpy)(m, Bv[c * n + i], Dc, h1);
      if (nd.oja && lc->P[c][9] != 0) FN(row_axpy)(m, (real)lc->P[c][9] * T->y[l][i], Dc, h2);
    }
    if (!rcn->momentum) for (int64_t j = 0; j < m; j++) wb[j] = 0;
    if (nd.w)
      for (int c = 0; c < L; c++)
        if (lc->P[c][3] != 0) FN(row_axpy)(m, (real)(-lc->P[c][3]), D + c * m, wb);
  }
}

static int FN(rcn_backward)(const nm_rcn *rcn, const nm_tensor *const *Hbar,
                            const nm_tensor *const *Wbar, const nm_tensor *const *H_in,
                            const nm_tensor *const *W_in, const nm_tensor *const *H_out,
                            const nm_tensor *const *B,
                            const void *trace, const nm_rcn_params *p, const nm_rcn_grads *g,
                            void *work) {
  const nm_motif_net *net = &rcn->net;
  const int NL = net->layers, L = rcn->chemicals;
  const int64_t *n = net->sizes, mx = max_width(net);
  const motif_needs nd = needs_of(rcn);
  FN(trace_ptrs) T;
  FN(trace_map)(net, TR_A, (real *)(uintptr_t)trace, &T);

  real *A = (real *)work, *Bv = A + L * mx, *t = Bv + L * mx, *G = t + L * mx, *D = G + L * mx;
  real *g0 = D + L * mx, *g1 = g0 + L * mx, *g2 = g1 + L * mx;
  real *h0 = g2 + L * mx, *h1 = h0 + mx, *h2 = h1 + mx;
  real *p_ = h2 + mx;
  real *yb[NM_META_MAXLAYERS + 1], *eb[NM_META_MAXLAYERS + 1], *zb[NM_META_MAXLAYERS + 1];
  real *rb[NM_META_MAXLAYERS + 1], *qb[NM_META_MAXLAYERS + 1];
  real *adj0 = p_;
  for (int l = 0; l <= NL; l++) {
    yb[l] = p_; p_ += n[l];
    eb[l] = p_; p_ += n[l];
    zb[l] = p_; p_ += n[l];
    rb[l] = p_; p_ += n[l];
    qb[l] = p_; p_ += l > 0 ? n[l - 1] : 0;
  }
  memset(adj0, 0, (size_t)(p_ - adj0) * sizeof(real));
  for (int64_t k = 0; k < 3 * L * mx; k++) g0[k] = 0;

  /* 1. The chemical update of every layer. */
  layer_coef lc;
  for (int l = 1; l <= NL; l++) {
    const int64_t nl = n[l], m = n[l - 1];
    load_layer(rcn, p, l - 1, &lc);
    FN(coef_vectors)(rcn, &lc, &T, l, A, Bv);
    const real *bias = rcn->neuron_bias && p->bias != NULL ? FN(data)(p->bias[l - 1]) : NULL;
    real *bias_bar = NULL;
    if (rcn->neuron_bias && g->bias != NULL && g->bias[l - 1] != NULL)
      bias_bar = FN(data)(g->bias[l - 1]);
    double gw[NM_RCN_MAXCHEM] = {0}, vb[NM_RCN_MAXCHEM] = {0}, bb[NM_RCN_MAXCHEM] = {0};
    double Kb[NM_RCN_MAXCHEM][NM_RCN_MAXCHEM];
    memset(Kb, 0, sizeof Kb);
    real *W = FN(data)(W_in[l - 1]);
    /* Without a bias gradient tensor, neuron biases still route D through
    ** a throwaway: bb collects the sums, which nobody reads. */
    FN(adjoint_layer)(rcn, &lc, l, FN(data)(Hbar[l - 1]), FN(data)(Wbar[l - 1]),
                      FN(data)(H_in[l - 1]), H_out != NULL ? FN(data)(H_out[l - 1]) : NULL, W,
                      bias, bias_bar, &T, A, Bv, t, G, D, g0, g1, g2, h0, h1, h2, gw, Kb, vb, bb);
    if (nm_interrupted) return NM_EINTR;

    /* Gradients of the meta-parameters, and the adjoints of the signals. */
    const double S = T.scal[3 * l], cc = T.scal[3 * l + 1], d = T.scal[3 * l + 2];
    double cbar_sum = 0;
    for (int c = 0; c < L; c++) {
      const real *G0 = g0 + c * nl, *G1 = g1 + c * nl, *G2 = g2 + c * nl;
      const double ey = FN(dot)(nl, T.e[l], G0), yy = FN(dot)(nl, T.y[l], G0);
      const double yg = nd.b ? FN(dot)(nl, T.y[l], G1) : 0;
      const double eg = nd.b ? FN(dot)(nl, T.e[l], G1) : 0;
      const double sg = nd.b ? FN(sum)(nl, G1) : 0;
      const double hq = nd.oja ? FN(dot)(nl, T.y[l], G2) : 0;
      const double tb[NM_META_MOTIFS] = {-ey, -yg, -eg, -gw[c], -sg, -S * ey, -cc * yg,
                                         -cc * ey, -d * yg, yy - hq};
      if (g->P != NULL) {
        double *gP = g->P + (l - 1) * g->P_stride + c * NM_META_MOTIFS;
        for (int r = 0; r < NM_META_MOTIFS; r++) if (rcn->use[r]) gP[r] += tb[r];
      }
      const double *P = lc.P[c];
      const real ca = (real)(-(P[0] + P[5] * S + P[7] * cc));
      const real cb = (real)(-(P[1] + P[6] * cc + P[8] * d));
      const real c2 = (real)P[2], c9 = (real)P[9], Sb = (real)(-P[5] * ey);
      const double cbar = -P[7] * ey - P[6] * yg, dbar = -P[8] * yg;
      cbar_sum += cbar;
      for (int64_t i = 0; i < nl; i++) {
        eb[l][i] += ca * G0[i] - c2 * G1[i] + (real)dbar * T.z[l][i];
        yb[l][i] += c9 * G0[i] + cb * G1[i] + Sb - c9 * G2[i];
        zb[l][i] += (real)dbar * T.e[l][i];
      }
    }
    if (g->K != NULL) {
      double *gK = g->K + (l - 1) * g->K_stride;
      for (int c = 0; c < L; c++) for (int k = 0; k < L; k++) gK[c * L + k] += Kb[c][k];
    }
    if (g->v != NULL) {
      double *gv = g->v + (l - 1) * g->v_stride;
      for (int c = 0; c < L; c++) gv[c] += vb[c];
    }
    if (g->b != NULL && !rcn->neuron_bias) {
      double *gb = g->b + (l - 1) * g->b_stride;
      for (int c = 0; c < L; c++) gb[c] += bb[c];
    }
    for (int64_t j = 0; j < m; j++) qb[l][j] = -h2[j] + (real)cbar_sum * T.e[l - 1][j];
    if (l >= 2) for (int64_t j = 0; j < m; j++) yb[l - 1][j] += h0[j];
    if (nd.b) for (int64_t j = 0; j < m; j++) eb[l - 1][j] += h1[j];
    if (nd.q && cbar_sum != 0)
      for (int64_t j = 0; j < m; j++) eb[l - 1][j] += (real)cbar_sum * T.q[l][j];
    if (nd.oja || cbar_sum != 0)
      GEMV(CblasRowMajor, CblasNoTrans, (int)nl, (int)m, 1, W, (int)m, qb[l], 1, 1, yb[l], 1);
  }

  /* 2. The error pathway and the forward pass. */
  FN(signals_adjoint)(net, W_in, B, &T, yb, eb, zb, rb, NULL);

  /* 3. dLoss/dW_in += dz y_{l-1}^T + y_l dq^T (+ e_l dr_{l-1}^T in BP mode). */
  for (int l = 1; l <= NL; l++) {
    const int64_t nl = n[l], m = n[l - 1];
    real *Wb = FN(data)(Wbar[l - 1]);
    const int bp = net->feedback == NM_FEEDBACK_BP;
    const real *yp = T.y[l - 1], *q_ = qb[l], *r_ = rb[l - 1];
    for (int64_t i = 0; i < nl; i++) {
      real *restrict w = Wb + i * m;
      const real a = zb[l][i], b = T.y[l][i], c = bp ? T.e[l][i] : 0;
      if (bp) for (int64_t j = 0; j < m; j++) w[j] += a * yp[j] + b * q_[j] + c * r_[j];
      else for (int64_t j = 0; j < m; j++) w[j] += a * yp[j] + b * q_[j];
    }
  }
  return NM_OK;
}

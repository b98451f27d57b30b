/*
** nm_bmvr_gen.h: the BMVR and backprop kernels written once over an
** element type; nm_bmvr.c includes this file twice, defining `real`,
** FN(name) and the BLAS names for float and for double.
*/

/* Row `s` of the visiting order (1-based numbers in a 1-D tensor), as a
** 0-based row index; -1 when out of range [0, rows). */
static int64_t FN(order_row)(const nm_tensor *order, int64_t s, int64_t rows) {
  double v;
  if (order == NULL) return s < rows ? s : -1;
  if (order->dtype == NM_FLOAT64)
    v = ((const double *)order->data)[s * order->stride[0]];
  else
    v = ((const float *)order->data)[s * order->stride[0]];
  if (!(v >= 1 && v <= (double)rows)) return -1;
  return (int64_t)v - 1;
}

/* W = s W, elementwise (the decay before a rank-1 update), in the ISA
** versions of nm_simd.h (it replaced OpenBLAS's AVX-512 ?scal: the
** baseline loop made BMVR at k = 256 8% slower). */
NM_HOT static void FN(scale)(int64_t count, real s, real *W) {
  for (int64_t i = 0; i < count; i++) W[i] *= s;
}

/* u = W1 x and z = u (linear) or relu(u) - zbar (ReLU, zbar first moved
** towards relu(u) when tracking), or relu(u - zbar) with zbar tracking u
** (mean_before). Returns the sum of z, whose finiteness tells whether the
** weights are still finite. */
static double FN(hidden_step)(const nm_bmvr_opts *o, int k, int n, const real *W1,
                              real *zbar, const real *x, real *u, real *z, int have_u) {
  double sum = 0;
  if (!have_u) FN(nm_mv)(k, n, 1, W1, n, x, 0, u);
  if (!o->relu) {
    for (int j = 0; j < k; j++) { z[j] = u[j]; sum += z[j]; }
    return sum;
  }
  const real eps = (real)o->mean_eps;
  if (o->mean_before) {
    for (int j = 0; j < k; j++) {
      if (o->track_mean) zbar[j] += eps * (u[j] - zbar[j]);
      real v = u[j] - zbar[j];
      z[j] = v > 0 ? v : 0;
      sum += z[j];
    }
    return sum;
  }
  for (int j = 0; j < k; j++) {
    real h = u[j] > 0 ? u[j] : 0;
    if (o->track_mean) zbar[j] += eps * (h - zbar[j]);
    z[j] = h - zbar[j];
    sum += z[j];
  }
  return sum;
}

static int FN(train)(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                     const nm_tensor *X, const nm_tensor *Y, const nm_tensor *order,
                     int64_t count, int64_t *tp, int backprop) {
  const int k = (int)net->W1->size[0], n = (int)net->W1->size[1];
  const int m = (int)net->W2T->size[1];
  const int64_t rows = X->size[0], ldx = X->stride[0], ldy = Y->stride[0];
  const real *Xd = (const real *)X->data, *Yd = (const real *)Y->data;
  real *W1 = (real *)net->W1->data, *W2T = (real *)net->W2T->data;
  real *Q = net->Q ? (real *)net->Q->data : NULL;
  real *R = (o->decoupled && net->R) ? (real *)net->R->data : NULL;
  real *zbar = o->relu ? (real *)net->zbar->data : NULL;
  real *u = (real *)net->work->data, *z = u + k, *a = z + k, *nv = a + k;
  real *c = nv + k, *yh = c + k, *e = yh + m;
  int64_t t = *tp;
  int status = NM_OK;
  /* the last sample's W1 update, applied during the next forward pass */
  const real *x_pending = NULL;
  real eta_pending = 0;

  for (int64_t s = 0; s < count; s++) {
    if (nm_interrupted) { status = NM_EINTR; break; }
    int64_t row = FN(order_row)(order, s, rows);
    if (row < 0) { status = NM_EINVAL; break; }
    const real *x = Xd + row * ldx, *y = Yd + row * ldy;
    double decay = o->t0 > 0 ? 1.0 / (1.0 + (double)t / o->t0) : 1.0;
    real eta_w1 = (real)(o->eta_w1 * decay), eta_w2 = (real)(o->eta_w2 * decay);
    const int have_u = x_pending != NULL;
    if (have_u) {                   /* the pending W1 update, then u = W1 x */
      FN(nm_rank1_mv)(k, n, eta_pending, c, x_pending, W1, n, x, u);
      x_pending = NULL;
    }
    double check = FN(hidden_step)(o, k, n, W1, zbar, x, u, z, have_u);

    if (!backprop) {
      /* c = a - Q n: the apical current minus the interneuron inhibition */
      FN(nm_mv)(k, m, 1, W2T, m, y, 0, a);
      if (R != NULL)
        FN(nm_mv)(k, k, 1, R, k, z, 0, nv);
      else
        FN(nm_mvt)(k, k, 1, Q, k, z, 0, nv);
      memcpy(c, a, (size_t)k * sizeof(real));
      FN(nm_mv)(k, k, -1, Q, k, nv, 1, c);
    } else {
      /* d = W2T (y - W2T^T z): the error sent back through the weights */
      memcpy(e, y, (size_t)m * sizeof(real));
      FN(nm_mvt)(k, m, -1, W2T, m, z, 1, e);
      FN(nm_mv)(k, m, 1, W2T, m, e, 0, c);
    }
    if (o->relu && (backprop || o->gate != NM_BMVR_GATE_NONE)) {
      /* the ReLU's derivative is 1(u > 0), or 1(z > 0) when the mean
      ** comes before the ReLU */
      const real *g = ((backprop || o->gate == NM_BMVR_GATE_U) && !o->mean_before) ? u : z;
      for (int j = 0; j < k; j++) if (!(g[j] > 0)) c[j] = 0;
    }
    for (int j = 0; j < k; j++) check += c[j];
    if (!isfinite(check)) { status = NM_ENONFINITE; break; }

    x_pending = x;                          /* W1 += eta_w1 c x^T, deferred */
    eta_pending = eta_w1;
    if (!backprop) {
      real eta_q = (real)(o->eta_q * decay);
      FN(scale)((int64_t)k * m, 1 - eta_w2, W2T);
      FN(nm_rank1)(k, m, eta_w2, z, y, W2T, m);
      FN(scale)((int64_t)k * k, 1 - eta_q, Q);
      FN(nm_rank1)(k, k, eta_q, z, nv, Q, k);
      if (R != NULL) {
        FN(scale)((int64_t)k * k, 1 - eta_q, R);
        FN(nm_rank1)(k, k, eta_q, nv, z, R, k);
      }
    } else {
      FN(nm_rank1)(k, m, eta_w2, z, e, W2T, m);
    }
    t++;
  }
  if (x_pending != NULL) FN(nm_rank1)(k, n, eta_pending, c, x_pending, W1, n);
  *tp = t;
  return status;
}

/* U = X W1^T and Z = U, relu(U) - zbar or relu(U - zbar) (zbar frozen) for `rows` rows
** starting at x0, into row-major buffers with k columns. */
static void FN(hidden_block)(const nm_bmvr_net *net, const nm_bmvr_opts *o,
                             const real *x0, int64_t ldx, int rows, real *U, real *Z) {
  const int k = (int)net->W1->size[0], n = (int)net->W1->size[1];
  GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k, n, 1, x0, (int)ldx,
       (const real *)net->W1->data, n, 0, U, k);
  const real *zbar = o->relu ? (const real *)net->zbar->data : NULL;
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < k; j++) {
      real v = U[i * k + j];
      if (!o->relu) Z[i * k + j] = v;
      else if (o->mean_before) Z[i * k + j] = v - zbar[j] > 0 ? v - zbar[j] : 0;
      else Z[i * k + j] = (v > 0 ? v : 0) - zbar[j];
    }
}

static int FN(forward)(const nm_bmvr_net *net, const nm_bmvr_opts *o, const nm_tensor *X,
                       const nm_tensor *Z, const nm_tensor *Yhat) {
  const int k = (int)net->W1->size[0], m = (int)net->W2T->size[1];
  const int64_t T = X->size[0];
  real *U = malloc((size_t)NM_BMVR_BLOCK * 2 * (size_t)k * sizeof(real));
  if (U == NULL) return NM_ENOMEM;
  real *Zb = U + (size_t)NM_BMVR_BLOCK * k;
  for (int64_t i0 = 0; i0 < T; i0 += NM_BMVR_BLOCK) {
    if (nm_interrupted) { free(U); return NM_EINTR; }
    int rows = (int)(T - i0 < NM_BMVR_BLOCK ? T - i0 : NM_BMVR_BLOCK);
    FN(hidden_block)(net, o, (const real *)X->data + i0 * X->stride[0], X->stride[0],
                     rows, U, Zb);
    if (Z != NULL)
      for (int i = 0; i < rows; i++)
        for (int j = 0; j < k; j++)
          ((real *)Z->data)[(i0 + i) * Z->stride[0] + j * Z->stride[1]] = Zb[i * k + j];
    if (Yhat != NULL) {
      real *yh = (real *)Yhat->data + i0 * Yhat->stride[0];
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, m, k, 1, Zb, k,
           (const real *)net->W2T->data, m, 0, yh, (int)Yhat->stride[0]);
    }
  }
  free(U);
  return NM_OK;
}

static int FN(evaluate)(const nm_bmvr_net *net, const nm_bmvr_opts *o, const nm_tensor *X,
                        const nm_tensor *Y, double *sq_error, int64_t *correct) {
  const int k = (int)net->W1->size[0], m = (int)net->W2T->size[1];
  const int64_t T = X->size[0];
  real *U = malloc((size_t)NM_BMVR_BLOCK * (2 * (size_t)k + (size_t)m) * sizeof(real));
  if (U == NULL) return NM_ENOMEM;
  real *Zb = U + (size_t)NM_BMVR_BLOCK * k, *Yh = Zb + (size_t)NM_BMVR_BLOCK * k;
  double sq = 0;
  int64_t hits = 0;
  for (int64_t i0 = 0; i0 < T; i0 += NM_BMVR_BLOCK) {
    if (nm_interrupted) { free(U); return NM_EINTR; }
    int rows = (int)(T - i0 < NM_BMVR_BLOCK ? T - i0 : NM_BMVR_BLOCK);
    FN(hidden_block)(net, o, (const real *)X->data + i0 * X->stride[0], X->stride[0],
                     rows, U, Zb);
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, m, k, 1, Zb, k,
         (const real *)net->W2T->data, m, 0, Yh, m);
    for (int i = 0; i < rows; i++) {
      const real *y = (const real *)Y->data + (i0 + i) * Y->stride[0];
      const real *yh = Yh + i * m;
      int best = 0, label = 0;
      for (int j = 0; j < m; j++) {
        double diff = (double)y[j] - (double)yh[j];
        sq += diff * diff;
        if (yh[j] > yh[best]) best = j;
        if (y[j] > y[label]) label = j;
      }
      hits += best == label;
    }
  }
  free(U);
  *sq_error = T > 0 ? sq / (double)T : 0;
  *correct = hits;
  return NM_OK;
}

static int FN(hidden_cov)(const nm_bmvr_net *net, const nm_bmvr_opts *o, const nm_tensor *X,
                          const nm_tensor *C) {
  const int k = (int)net->W1->size[0];
  const int64_t T = X->size[0];
  real *U = malloc((size_t)(NM_BMVR_BLOCK * 2 + k) * (size_t)k * sizeof(real));
  if (U == NULL) return NM_ENOMEM;
  real *Zb = U + (size_t)NM_BMVR_BLOCK * k, *Cb = Zb + (size_t)NM_BMVR_BLOCK * k;
  double *Cd = (double *)C->data;
  memset(Cd, 0, (size_t)k * (size_t)k * sizeof(double));
  for (int64_t i0 = 0; i0 < T; i0 += NM_BMVR_BLOCK) {
    if (nm_interrupted) { free(U); return NM_EINTR; }
    int rows = (int)(T - i0 < NM_BMVR_BLOCK ? T - i0 : NM_BMVR_BLOCK);
    FN(hidden_block)(net, o, (const real *)X->data + i0 * X->stride[0], X->stride[0],
                     rows, U, Zb);
    /* one block in the element type, summed across blocks in double */
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, k, k, rows, 1, Zb, k, Zb, k, 0, Cb, k);
    for (int i = 0; i < k * k; i++) Cd[i] += Cb[i];
  }
  free(U);
  for (int i = 0; i < k * k; i++) Cd[i] /= T > 0 ? (double)T : 1;
  return NM_OK;
}

static int FN(alignment)(const nm_bmvr_net *net, const nm_bmvr_opts *o, const nm_tensor *X,
                         const nm_tensor *Y, double *mean_cos, double *update_cos) {
  const int k = (int)net->W1->size[0], n = (int)net->W1->size[1];
  const int m = (int)net->W2T->size[1];
  const int64_t T = X->size[0];
  const real *W2T = (const real *)net->W2T->data, *Q = (const real *)net->Q->data;
  const real *R = (o->decoupled && net->R) ? (const real *)net->R->data : NULL;
  const size_t B = NM_BMVR_BLOCK;
  real *U = malloc((B * (6 * (size_t)k + (size_t)m) + 2 * (size_t)k * (size_t)n) * sizeof(real));
  if (U == NULL) return NM_ENOMEM;
  real *Zb = U + B * k, *A = Zb + B * k, *N = A + B * k, *Cb = N + B * k, *D = Cb + B * k;
  real *E = D + B * k, *Gb = E + B * m, *Gp = Gb + (size_t)k * n;
  double cos_sum = 0;
  int64_t cos_count = 0;
  for (int64_t i0 = 0; i0 < (int64_t)T; i0 += NM_BMVR_BLOCK) {
    if (nm_interrupted) { free(U); return NM_EINTR; }
    int rows = (int)(T - i0 < NM_BMVR_BLOCK ? T - i0 : NM_BMVR_BLOCK);
    const real *x0 = (const real *)X->data + i0 * X->stride[0];
    const real *y0 = (const real *)Y->data + i0 * Y->stride[0];
    int ldy = (int)Y->stride[0];
    FN(hidden_block)(net, o, x0, X->stride[0], rows, U, Zb);
    /* rows of A = a^T = y^T W2T^T; N = n^T = z^T Q (or z^T R^T); C = A - N Q^T */
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k, m, 1, y0, ldy, W2T, m, 0, A, k);
    if (R != NULL)
      GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k, k, 1, Zb, k, R, k, 0, N, k);
    else
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, k, k, 1, Zb, k, Q, k, 0, N, k);
    memcpy(Cb, A, (size_t)rows * k * sizeof(real));
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k, k, -1, N, k, Q, k, 1, Cb, k);
    /* E = Y - Z W2T, D = E W2T^T */
    for (int i = 0; i < rows; i++)
      memcpy(E + i * m, y0 + (int64_t)i * ldy, (size_t)m * sizeof(real));
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, m, k, -1, Zb, k, W2T, m, 1, E, m);
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k, m, 1, E, m, W2T, m, 0, D, k);
    for (int i = 0; i < rows; i++) {
      double cc = 0, dd = 0, cd = 0;
      for (int j = 0; j < k; j++) {
        int ix = i * k + j;
        if (o->relu) {
          const real deriv = o->mean_before ? Zb[ix] : U[ix];
          if (o->gate != NM_BMVR_GATE_NONE &&
              !((o->gate == NM_BMVR_GATE_U ? deriv : Zb[ix]) > 0)) Cb[ix] = 0;
          if (!(deriv > 0)) D[ix] = 0;
        }
        cc += (double)Cb[ix] * Cb[ix];
        dd += (double)D[ix] * D[ix];
        cd += (double)Cb[ix] * D[ix];
      }
      if (cc > 0 && dd > 0) { cos_sum += cd / sqrt(cc * dd); cos_count++; }
    }
    real beta = i0 == 0 ? 0 : 1;
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, rows, 1, Cb, k, x0, (int)X->stride[0],
         beta, Gb, n);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, rows, 1, D, k, x0, (int)X->stride[0],
         beta, Gp, n);
  }
  double gg = 0, pp = 0, gp = 0;
  if (T > 0)
    for (size_t i = 0; i < (size_t)k * n; i++) {
      gg += (double)Gb[i] * Gb[i];
      pp += (double)Gp[i] * Gp[i];
      gp += (double)Gb[i] * Gp[i];
    }
  free(U);
  *mean_cos = cos_count > 0 ? cos_sum / (double)cos_count : 0;
  *update_cos = (gg > 0 && pp > 0) ? gp / sqrt(gg * pp) : 0;
  return NM_OK;
}

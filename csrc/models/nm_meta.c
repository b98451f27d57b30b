/*
** nm_meta.c: the motif network's query loss (see nm_meta.h), for float
** and double networks.
*/
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "nm_meta.h"
#include "nm_math.h"
#include "nm_vmath.h"

int64_t nm_motif_query_work_size(const nm_motif_net *net, int64_t m) {
  int64_t total = 0, maxn = 0;
  for (int l = 1; l <= net->layers; l++) {
    total += m * net->sizes[l];
    if (net->sizes[l] > maxn) maxn = net->sizes[l];
  }
  return total + 2 * m * maxn;
}

int nm_motif_check(const nm_motif_net *net) {
  if (net->layers < 1 || net->layers > NM_META_MAXLAYERS) return NM_EINVAL;
  if (!(net->beta > 0) || !isfinite(net->beta)) return NM_EINVAL;
  if (net->dtype != NM_FLOAT32 && net->dtype != NM_FLOAT64) return NM_EINVAL;
  if (net->feedback < NM_FEEDBACK_FA || net->feedback > NM_FEEDBACK_BP_DETACHED) return NM_EINVAL;
  for (int l = 0; l <= net->layers; l++)
    if (net->sizes[l] < 1 || net->sizes[l] > (1 << 24)) return NM_EINVAL;
  return NM_OK;
}

/* The query loss, once per element type (nm_meta_gen.h). */
#define real float
#define FN(name) name##_f32
#define GEMM cblas_sgemm
#include "nm_meta_gen.h"
#undef real
#undef FN
#undef GEMM

#define real double
#define FN(name) name##_f64
#define GEMM cblas_dgemm
#include "nm_meta_gen.h"
#undef real
#undef FN
#undef GEMM

int nm_motif_query(const nm_motif_net *net, const nm_tensor *const *W, const nm_tensor *X,
                   const int64_t *labels, double *loss, int64_t *correct,
                   const nm_tensor *const *G, void *work) {
  if (nm_motif_check(net) != NM_OK || X->ndim != 2 || X->size[0] < 1) return NM_EINVAL;
  for (int64_t i = 0; i < X->size[0]; i++)
    if (labels[i] < 0 || labels[i] >= net->sizes[net->layers]) return NM_EINVAL;
  if (net->dtype == NM_FLOAT64) return query_f64(net, W, X, labels, loss, correct, G, work);
  return query_f32(net, W, X, labels, loss, correct, G, work);
}

/*
** nm_tensor.c: tensor headers, shapes, element access and views.
*/
#include <stdio.h>
#include <string.h>
#include "nm_tensor.h"
#include "nm_pool.h"
#include "nm_math.h"

volatile sig_atomic_t nm_interrupted = 0;

size_t nm_dtype_size(nm_dtype t) {
  return t == NM_FLOAT64 ? sizeof(double) : sizeof(float);
}

const char *nm_dtype_name(nm_dtype t) {
  return t == NM_FLOAT64 ? "float64" : "float32";
}

int64_t nm_numel(const nm_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->size[d];
  return n;
}

int nm_is_contiguous(const nm_tensor *t) {
  /* No elements: no element is out of place, whatever the strides. */
  if (nm_numel(t) == 0) return 1;
  int64_t expect = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->size[d] != 1 && t->stride[d] != expect) return 0;
    expect *= t->size[d];
  }
  return 1;
}

int nm_same_shape(const nm_tensor *a, const nm_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int d = 0; d < a->ndim; d++)
    if (a->size[d] != b->size[d]) return 0;
  return 1;
}

char *nm_shape_str(const nm_tensor *t, char *buf, size_t len) {
  size_t used = 0;
  if (len == 0) return buf;
  buf[0] = '\0';
  used += (size_t)snprintf(buf, len, "[");
  for (int d = 0; d < t->ndim && used < len; d++)
    used += (size_t)snprintf(buf + used, len - used, d ? " x %lld" : "%lld",
                             (long long)t->size[d]);
  if (used < len) snprintf(buf + used, len - used, "]");
  return buf;
}

void nm_init_contiguous(nm_tensor *t, nm_dtype dt, int ndim, const int64_t *size) {
  int64_t stride = 1;
  t->dtype = dt;
  t->ndim = ndim;
  for (int d = NM_MAXDIM - 1; d >= 0; d--) {
    if (d < ndim) {
      t->size[d] = size[d];
      t->stride[d] = stride;
      stride *= size[d] > 0 ? size[d] : 1;
    } else {
      t->size[d] = 1;
      t->stride[d] = 1;
    }
  }
}

void *nm_elem_ptr(const nm_tensor *t, const int64_t *idx) {
  int64_t off = 0;
  for (int d = 0; d < t->ndim; d++) off += idx[d] * t->stride[d];
  return (char *)t->data + off * (int64_t)nm_dtype_size(t->dtype);
}

double nm_get(const nm_tensor *t, const int64_t *idx) {
  void *p = nm_elem_ptr(t, idx);
  return t->dtype == NM_FLOAT64 ? *(double *)p : (double)*(float *)p;
}

void nm_set(const nm_tensor *t, const int64_t *idx, double v) {
  void *p = nm_elem_ptr(t, idx);
  if (t->dtype == NM_FLOAT64) *(double *)p = v;
  else *(float *)p = (float)v;
}

void nm_view_narrow(nm_tensor *t, int dim, int64_t first, int64_t len) {
  t->data = (char *)t->data + first * t->stride[dim] * (int64_t)nm_dtype_size(t->dtype);
  t->size[dim] = len;
}

void nm_view_select(nm_tensor *t, int dim, int64_t index) {
  t->data = (char *)t->data + index * t->stride[dim] * (int64_t)nm_dtype_size(t->dtype);
  for (int d = dim; d < t->ndim - 1; d++) {
    t->size[d] = t->size[d + 1];
    t->stride[d] = t->stride[d + 1];
  }
  t->ndim--;
  t->size[t->ndim] = 1;
  t->stride[t->ndim] = 1;
}

void nm_view_transpose(nm_tensor *t, int d1, int d2) {
  int64_t s = t->size[d1], st = t->stride[d1];
  t->size[d1] = t->size[d2]; t->stride[d1] = t->stride[d2];
  t->size[d2] = s; t->stride[d2] = st;
}

/* Kept for callers that cannot report an interrupt: the kernels in
** nm_math.c poll nm_interrupted, and a stopped copy leaves the flag set, so
** the next polling kernel raises it. */
void nm_tensor_copy(const nm_tensor *dst, const nm_tensor *src) {
  nm_tensor d = *dst;
  (void)nm_copy(&d, src);
}

void nm_tensor_fill(const nm_tensor *t, double v) {
  nm_tensor d = *t;
  (void)nm_fill(&d, v);
}

void nm_copy_row(const nm_tensor *dst, int64_t dst_row, const nm_tensor *src, int64_t src_row) {
  nm_tensor d = *dst, s = *src;
  nm_view_select(&d, 0, dst_row);
  nm_view_select(&s, 0, src_row);
  nm_tensor_copy(&d, &s);
}

typedef struct rows_job {
  const nm_tensor *dst, *src;
  int64_t dst_row, count, parts;
  const int64_t *idx;
  size_t row_bytes;              /* a source row's bytes when contiguous, else 0 */
  int direct;                    /* rows of one dtype and length, both contiguous: memmove */
} rows_job;

/* The elements after the first dimension of t, and whether they are
** contiguous. */
static int64_t row_elems(const nm_tensor *t, int *packed) {
  int64_t row = 1;
  *packed = 1;
  for (int d = t->ndim - 1; d >= 1; d--) {
    if (t->size[d] != 1 && t->stride[d] != row) *packed = 0;
    row *= t->size[d];
  }
  return row;
}

/* Asks for the cache lines of source row `row` (when its bytes are
** contiguous). The rows of a shuffled epoch lie anywhere in the source:
** the hardware prefetcher follows a row but not the jump to the next, so
** the gather requests a row two ahead while it copies this one. */
static void prefetch_row(const rows_job *j, int64_t row) {
  if (j->row_bytes == 0) return;
  const char *p = (const char *)j->src->data +
                  (size_t)row * (size_t)j->src->stride[0] * nm_dtype_size(j->src->dtype);
  for (size_t o = 0; o < j->row_bytes; o += 64) __builtin_prefetch(p + o);
}

static void rows_part(void *ctx, int64_t part) {
  const rows_job *j = ctx;
  int64_t lo = nm_pool_bound(j->count, j->parts, 1, part);
  int64_t hi = nm_pool_bound(j->count, j->parts, 1, part + 1);
  for (int64_t i = lo; i < hi && i < lo + 2; i++) prefetch_row(j, j->idx[i]);
  for (int64_t i = lo; i < hi; i++) {
    if (i + 2 < hi) prefetch_row(j, j->idx[i + 2]);
    if (j->direct) {           /* the bytes nm_copy_row's nm_copy moves, without its checks */
      size_t es = nm_dtype_size(j->src->dtype);
      memmove((char *)j->dst->data + (size_t)((j->dst_row + i) * j->dst->stride[0]) * es,
              (const char *)j->src->data + (size_t)(j->idx[i] * j->src->stride[0]) * es,
              j->row_bytes);
    } else {
      nm_copy_row(j->dst, j->dst_row + i, j->src, j->idx[i]);
    }
  }
}

void nm_copy_rows(const nm_tensor *dst, int64_t dst_row, const nm_tensor *src,
                  const int64_t *idx, int64_t count) {
  rows_job j = {dst, src, dst_row, count, 1, idx, 0, 0};
  int packed, dst_packed;        /* the dimensions after the first are contiguous */
  int64_t row = row_elems(src, &packed), dst_row_n = row_elems(dst, &dst_packed);
  if (packed && src->ndim >= 1) j.row_bytes = (size_t)row * nm_dtype_size(src->dtype);
  j.direct = j.row_bytes > 0 && dst->ndim >= 1 && dst_packed && dst_row_n == row &&
             dst->dtype == src->dtype;
  if (count >= 2) {
    j.parts = nm_elementwise_parts(row * count);
    if (j.parts > count) j.parts = count;
  }
  nm_pool_run(j.parts, rows_part, &j);
}

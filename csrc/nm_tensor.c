/*
** nm_tensor.c: tensor headers, shapes, element access and views.
*/
#include <stdio.h>
#include <string.h>
#include "nm_tensor.h"

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

/* Walks the elements of t in row-major order, calling back with the
** element offset (in elements); used by copy and fill, which must handle
** any view. */
#define NM_FOR_EACH_OFFSET(t, off, body) do {                          \
    int64_t idx_[NM_MAXDIM] = {0, 0, 0, 0};                           \
    int64_t n_ = nm_numel(t);                                         \
    int64_t off = 0;                                                  \
    for (int64_t k_ = 0; k_ < n_; k_++) {                             \
      body;                                                           \
      for (int d_ = (t)->ndim - 1; d_ >= 0; d_--) {                   \
        off += (t)->stride[d_];                                       \
        if (++idx_[d_] < (t)->size[d_]) break;                        \
        off -= (t)->stride[d_] * (t)->size[d_];                       \
        idx_[d_] = 0;                                                 \
      }                                                               \
    }                                                                 \
  } while (0)

void nm_tensor_copy(const nm_tensor *dst, const nm_tensor *src) {
  int64_t n = nm_numel(dst);
  if (dst->dtype == src->dtype && nm_is_contiguous(dst) && nm_is_contiguous(src)) {
    memmove(dst->data, src->data, (size_t)n * nm_dtype_size(dst->dtype));
    return;
  }
  /* General case: gather src in order, scatter into dst in order. */
  int64_t didx[NM_MAXDIM] = {0, 0, 0, 0};
  int64_t doff = 0;
  NM_FOR_EACH_OFFSET(src, soff, {
    double v = src->dtype == NM_FLOAT64 ? ((const double *)src->data)[soff]
                                        : (double)((const float *)src->data)[soff];
    if (dst->dtype == NM_FLOAT64) ((double *)dst->data)[doff] = v;
    else ((float *)dst->data)[doff] = (float)v;
    for (int d = dst->ndim - 1; d >= 0; d--) {
      doff += dst->stride[d];
      if (++didx[d] < dst->size[d]) break;
      doff -= dst->stride[d] * dst->size[d];
      didx[d] = 0;
    }
  });
}

void nm_tensor_fill(const nm_tensor *t, double v) {
  if (t->dtype == NM_FLOAT64) {
    double x = v;
    NM_FOR_EACH_OFFSET(t, off, ((double *)t->data)[off] = x);
  } else {
    float x = (float)v;
    NM_FOR_EACH_OFFSET(t, off, ((float *)t->data)[off] = x);
  }
}

/*
** nm_tensor.h: the neuromic tensor core, dense strided float32/float64
** arrays and the kernels over them. Never includes lua.h: storage is
** owned by the caller (the Lua binding keeps it inside full userdata).
*/
#ifndef NM_TENSOR_H
#define NM_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>

#define NM_MAXDIM 4

typedef enum { NM_FLOAT32 = 0, NM_FLOAT64 = 1 } nm_dtype;

/* A tensor header: `data` points at element (0,..,0); strides are in
** elements, not bytes, and may be any non-negative values (views). */
typedef struct nm_tensor {
  nm_dtype dtype;
  int ndim;                      /* 0..NM_MAXDIM; 0 means a scalar */
  int64_t size[NM_MAXDIM];
  int64_t stride[NM_MAXDIM];
  void *data;
} nm_tensor;

/* Status codes returned by core functions that can fail. */
enum {
  NM_OK = 0,
  NM_EINTR = 1,       /* interrupted by the user (see nm_interrupted) */
  NM_ENOMEM = 2,
  NM_EINVAL = 3,
  NM_ENONFINITE = 4
};

/* Set from a SIGINT handler by the interpreter; long kernels poll it and
** return NM_EINTR. A C global because a signal handler can reach nothing
** else; it is the only global state in the core. */
extern volatile sig_atomic_t nm_interrupted;

/* The code version (git describe), generated at build time. */
extern const char nm_version[];
/* The compiler and BLAS flags of this build (build/version.c). */
extern const char nm_build_cc[];
extern const char nm_build_blas_cflags[];
extern const char nm_build_blas_libs[];
/* The text of nm_vmath.h, its per-type part inlined (build/vmath_source.c):
** the rule compiler's generated kernels include it. */
extern const char nm_vmath_source[];

size_t nm_dtype_size(nm_dtype t);
const char *nm_dtype_name(nm_dtype t);       /* "float32" / "float64" */

int64_t nm_numel(const nm_tensor *t);
int nm_is_contiguous(const nm_tensor *t);
int nm_same_shape(const nm_tensor *a, const nm_tensor *b);
/* Writes "[3 x 4]" (or "[]" for a scalar) into buf; returns buf. */
char *nm_shape_str(const nm_tensor *t, char *buf, size_t len);
/* Bound on the product of a shape's sizes, zeros counted as ones: every
** element count, byte count (x 8) and stride of a tensor fits in int64_t,
** also for empty tensors with huge other dimensions. */
#define NM_MAX_SPAN (INT64_MAX / 16)
/* The element count of a shape, or -1 (with *bad, when given, the first
** offending dimension) when a size is negative or the sizes pass
** NM_MAX_SPAN. Inline so that the file readers (nm_io.c, and the fuzz
** targets built from it alone) need nothing else. */
static inline int64_t nm_shape_numel(int ndim, const int64_t *size, int *bad) {
  int64_t span = 1, n = 1;
  for (int d = 0; d < ndim; d++) {
    int64_t s = size[d] > 0 ? size[d] : 1;
    if (size[d] < 0 || span > NM_MAX_SPAN / s) {
      if (bad != NULL) *bad = d;
      return -1;
    }
    span *= s;
    n = size[d] == 0 ? 0 : n * size[d];
  }
  return n;
}
/* Fills size/stride for a fresh contiguous tensor; data left untouched.
** The shape must pass nm_shape_numel, so no stride overflows. */
void nm_init_contiguous(nm_tensor *t, nm_dtype dt, int ndim, const int64_t *size);
/* Pointer to element at (0-based) index idx[0..ndim-1]. */
void *nm_elem_ptr(const nm_tensor *t, const int64_t *idx);
double nm_get(const nm_tensor *t, const int64_t *idx);
void nm_set(const nm_tensor *t, const int64_t *idx, double v);

/* Views: modify the header only (the caller keeps the storage alive). */
void nm_view_narrow(nm_tensor *t, int dim, int64_t first, int64_t len);
void nm_view_select(nm_tensor *t, int dim, int64_t index);   /* drops dim */
void nm_view_transpose(nm_tensor *t, int d1, int d2);

/* nm_copy and nm_fill (nm_math.h) without a status: for callers that
** have no way to report an interrupt. */
void nm_tensor_copy(const nm_tensor *dst, const nm_tensor *src);
void nm_tensor_fill(const nm_tensor *t, double v);

/* Copies row src_row (index along dim 0, 0-based) of src into row dst_row
** of dst; the two rows must hold the same number of elements (row-major
** order, dtype cast as needed). No checks: the caller validates. */
void nm_copy_row(const nm_tensor *dst, int64_t dst_row, const nm_tensor *src, int64_t src_row);
/* Rows dst_row .. dst_row + count - 1 of dst = rows idx[0 .. count-1] of
** src, as nm_copy_row; many rows are copied in parts on the pool
** (nm_pool.h). dst must not hold rows of src. No checks. */
void nm_copy_rows(const nm_tensor *dst, int64_t dst_row, const nm_tensor *src,
                  const int64_t *idx, int64_t count);

#endif

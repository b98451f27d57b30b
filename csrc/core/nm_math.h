/*
** nm_math.h: tensor math kernels of the neuromic core (elementwise,
** comparisons, masks, reductions, softmax, BLAS products) for float32 and
** float64 tensors with any non-negative strides.
**
** Conventions shared by every function here:
** - The result comes first and is written, never allocated; it may be the
**   same tensor (or view) as an input for the elementwise kernels.
** - Operands must have the same dtype (NM_EINVAL otherwise); only nm_copy
**   converts between dtypes.
** - Shapes are checked and give NM_EINVAL; the Lua binding checks first so
**   that users see messages naming the shapes.
** - Long loops poll nm_interrupted and return NM_EINTR.
** - Nothing allocates memory.
*/
#ifndef NM_MATH_H
#define NM_MATH_H

#include "nm_tensor.h"

/* r = v everywhere. */
int nm_fill(nm_tensor *r, double v);
/* r = src element by element in row-major order: same number of elements,
** shapes may differ, dtypes may differ (the value is converted). r and src
** must not partially overlap (the same view is fine). */
int nm_copy(nm_tensor *r, const nm_tensor *src);

typedef enum {
  NM_ADD, NM_SUB, NM_MUL, NM_DIV,
  NM_RSUB,            /* scalar form only: r = s - a */
  NM_RDIV             /* scalar form only: r = s / a */
} nm_binop;

/* r = a op b, all three the same shape. */
int nm_binary(nm_tensor *r, const nm_tensor *a, const nm_tensor *b, nm_binop op);
/* r = a op s (or s op a for NM_RSUB, NM_RDIV). */
int nm_binary_scalar(nm_tensor *r, const nm_tensor *a, double s, nm_binop op);

typedef enum {
  NM_NEG, NM_ABS, NM_SIGN, NM_EXP, NM_LOG, NM_SQRT, NM_TANH, NM_SIGMOID,
  NM_RELU,
  NM_DTANH,           /* 1 - tanh(x)^2 */
  NM_DSIGMOID,        /* s(x) (1 - s(x)) */
  NM_DRELU,           /* 1 where x > 0, else 0 */
  NM_SOFTPLUS,        /* p = beta > 0: log(1 + exp(beta x)) / beta, stable */
  NM_DSOFTPLUS,       /* p = beta: sigmoid(beta x) */
  NM_POW,             /* p = exponent */
  NM_CLAMP,           /* p = lo, q = hi */
  NM_SCALE,           /* p = factor */
  NM_EXPM1,           /* exp(x) - 1 */
  NM_LOG1P            /* log(1 + x) */
} nm_unop;

/* r = f(a) elementwise; the derivative forms take the pre-activation x.
** exp, log, expm1, log1p, tanh, sigmoid, softplus and the derivatives are
** the branch-free vector functions of nm_vmath.h (a few ulp). */
int nm_unary(nm_tensor *r, const nm_tensor *a, nm_unop op, double p, double q);

/* The accuracy of nm_unary's op (NM_EXP .. NM_DSOFTPLUS, NM_EXPM1,
** NM_LOG1P; parameter p) against libm's long double functions: evaluates
** it on about `count` inputs of dtype dt evenly spaced in bit-pattern order
** from lo to hi (finite, lo <= hi), every pattern when there are no more
** than count, plus lo and hi. Sets *max_ulp (the largest error in units in
** the last place of the result's type; inf where a special value is wrong:
** NaN, inf or a sign), *worst (its input) and *n (inputs evaluated).
** Returns NM_EINVAL for other ops or bad bounds, NM_EINTR when interrupted. */
int nm_ulp_scan(nm_unop op, double p, nm_dtype dt, double lo, double hi, int64_t count,
                double *max_ulp, double *worst, int64_t *n);

/* y += alpha x, same shapes. */
int nm_axpy(nm_tensor *y, double alpha, const nm_tensor *x);

typedef enum { NM_GT, NM_LT, NM_GE, NM_LE, NM_EQ, NM_NE } nm_cmpop;

/* r = (a op b) ? 1 : 0. */
int nm_compare(nm_tensor *r, const nm_tensor *a, const nm_tensor *b, nm_cmpop op);
int nm_compare_scalar(nm_tensor *r, const nm_tensor *a, double s, nm_cmpop op);

/* r = v where mask != 0; r = src where mask != 0 (src shaped like r). */
int nm_masked_fill(nm_tensor *r, const nm_tensor *mask, double v);
int nm_masked_copy(nm_tensor *r, const nm_tensor *mask, const nm_tensor *src);

typedef enum {
  NM_RSUM, NM_RMEAN, NM_RMAX, NM_RMIN,
  NM_RNORM            /* p = 0 (count of non-zeros), 1, 2, INFINITY, or any p > 0 */
} nm_redop;

/* Reduces all of a. *value gets the result; for NM_RMAX / NM_RMIN *index
** (if not NULL) gets the 0-based row-major position of the first extreme
** element. NaN propagates: max/min of a tensor holding NaN is NaN, at the
** first NaN. Sums accumulate in double. max/min of an empty tensor is
** NM_EINVAL; its sum is 0 and its mean NaN. */
int nm_reduce_all(const nm_tensor *a, nm_redop op, double p, double *value,
                  int64_t *index);

/* *finite = 1 when no element of a is NaN or infinite (1 for an empty a). */
int nm_all_finite(const nm_tensor *a, int *finite);

/* Reduces a along dimension `dim` (0-based). r (values, a's dtype) and ri
** (positions along dim plus index_base, float64) are each either shaped
** like a without dimension dim, or like a with size 1 at dim; either may be
** NULL (not both), ri only makes sense for NM_RMAX / NM_RMIN. a's size at
** dim must be > 0 for max/min. r may not overlap a. */
int nm_reduce_dim(nm_tensor *r, nm_tensor *ri, const nm_tensor *a, int dim,
                  nm_redop op, double p, int64_t index_base);

/* Softmax (log-softmax when take_log) of each row of a 2-D tensor (or of a 1-D
** tensor as one row), subtracting the row maximum first. r is shaped like
** a and may be a. */
int nm_softmax(nm_tensor *r, const nm_tensor *a, int take_log);

/* BLAS products. Matrices are 2-D tensors; a matrix whose column stride is
** 1 goes to BLAS as it is, one whose row stride is 1 (a transposed view)
** goes as the transpose with leading dimension stride[1]. Operands that
** BLAS cannot take (both strides > 1, stride 0, sizes past INT_MAX) are
** handled by plain loops with the same results. The output must not
** overlap the inputs (check with nm_overlap). beta == 0 overwrites the
** output without reading it, as BLAS does. */

/* C = alpha A B + beta C: C [m x n], A [m x k], B [k x n]. */
int nm_gemm(nm_tensor *C, double alpha, const nm_tensor *A, const nm_tensor *B,
            double beta);
/* y = alpha A x + beta y: y [m], A [m x n], x [n]. Not BLAS: with unit-
** stride vectors and a matrix BLAS could take, nm_matvec.h's kernels
** (nm_mv, or nm_mvt for a transposed view), in their documented order;
** other strides in the plain loop (sums in double). */
int nm_gemv(nm_tensor *y, double alpha, const nm_tensor *A, const nm_tensor *x,
            double beta);
/* A += alpha x y^T: A [m x n], x [m], y [n]. Not BLAS: nm_matvec.h's
** nm_rank1 for unit-stride rows and vectors, else the plain loop with the
** same rounding (c_i = alpha x_i, then a_ij += c_i y_j). */
int nm_ger(nm_tensor *A, double alpha, const nm_tensor *x, const nm_tensor *y);
/* A += alpha (x y^T) .* mask, mask [m x n]; where mask == 0 A is left
** exactly as it was (even when x or y hold inf or NaN). */
int nm_ger_masked(nm_tensor *A, double alpha, const nm_tensor *x, const nm_tensor *y,
                  const nm_tensor *mask);
/* *out = sum of x .* y over all elements (same shapes), in double. */
int nm_dot(const nm_tensor *x, const nm_tensor *y, double *out);

/* Threads. OpenBLAS always runs on one thread; neuromic's own pool
** (nm_pool.h) runs the parts of large kernels: a product of at least
** NM_PAR_MADDS multiply-adds is cut into blocks of the larger output
** dimension (of at least 32 rows or columns), each a one-thread BLAS call:
** two blocks, or one per NM_PAR_PART_MADDS multiply-adds when that makes
** more (at most NM_PAR_PARTS). An elementwise kernel over one line of at
** least 2 NM_PAR_ELEMS elements is cut into at most NM_PAR_PARTS slices.
** The cuts depend on the shapes only, so every output element is computed
** by the same call whatever the thread count: results are the same bits
** for any count. (One block per thread instead would not be: OpenBLAS's
** SkylakeX kernels sum some elements of a block of C differently from the
** whole product, those of the last columns' tail and those of blocks small
** enough for its small-matrix kernels.) Every block packs the operand the
** blocks share again, hence few and large blocks: at one thread the
** epoch's products (20M multiply-adds) cost ~3% more in two blocks than
** whole, ~18% more in six. Smaller work runs in the caller. */
#define NM_PAR_MADDS 1048576.0
#define NM_PAR_PART_MADDS 16777216.0
#define NM_PAR_ELEMS 32768
#define NM_PAR_PARTS 6
/* The parts of an elementwise kernel over one line of n elements: 1 below
** 2 NM_PAR_ELEMS, else n / NM_PAR_ELEMS, at most NM_PAR_PARTS. */
int64_t nm_elementwise_parts(int64_t n);
/* Part `part`'s elements [*lo, *hi) of those n elements cut into `parts`
** (bounds on multiples of 64 elements, so that parts share no cache line
** and vector loops run whole); *hi <= *lo when the part is empty. */
void nm_elementwise_slice(int64_t n, int64_t parts, int64_t part, int64_t *lo, int64_t *hi);
/* Sets OpenBLAS to one thread and the pool to n threads (the caller
** included); NM_EINVAL unless 1 <= n <= NM_POOL_MAX. */
int nm_set_threads(int n);
/* OpenBLAS (a DYNAMIC_ARCH build) picks its kernels by CPU model when it
** loads; on a model it does not know (a virtual machine reporting a generic
** "Xeon Processor") it falls back to Prescott's SSE3 kernels, about 3x
** slower than its AVX-512 ones on the minibatch products. Returns the
** OPENBLAS_CORETYPE that names the kernels for this CPU's features when
** OpenBLAS chose lesser ones -- "SKYLAKEX" on a CPU with AVX-512 (F, BW,
** DQ, VL, CD) unless OpenBLAS runs AVX-512 kernels already, "HASWELL" with
** AVX2 and FMA in place of such a fallback -- else NULL. The variable is
** read when the library loads: the interpreter sets it and runs itself
** again (csrc/interp/neuromic.c); an OPENBLAS_CORETYPE the user set is
** kept (not asked here). */
const char *nm_blas_core_hint(void);
/* The same for OpenBLAS's choice `core` (a corename; NULL: none). */
const char *nm_blas_core_for(const char *core);
/* C = alpha op(A) op(B) + beta C as cblas_?gemm takes it (row-major; ta,
** tb: op transposes), cut into parts as above. */
void nm_blas_gemm(nm_dtype dt, int ta, int tb, int m, int n, int k, double alpha,
                  const void *A, int lda, const void *B, int ldb, double beta, void *C,
                  int ldc);

/* 1 when the matrix can be handed to BLAS without a copy. */
int nm_blas_matrix_ok(const nm_tensor *m);
/* 1 when the memory spans of a and b intersect (a conservative test on
** address ranges: views interleaving without sharing an element count too). */
int nm_overlap(const nm_tensor *a, const nm_tensor *b);

#endif

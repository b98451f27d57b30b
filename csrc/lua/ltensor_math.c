/*
** ltensor_math.c: the math methods of neuromic.Tensor (elementwise,
** comparisons, masks, reductions, softmax, BLAS products) and its
** arithmetic operators, over the kernels of nm_math.h.
**
** Forms: `t:op(b)` works in place on t; `r:op(a, b)` writes r and
** allocates nothing; reductions without a result tensor and the operators
** allocate their result. doc/tensor_math.md lists every function.
*/
#include <math.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>

#include <cblas.h>

#include "lnm.h"
#include "nm_math.h"
#include "nm_pool.h"

#define checkt(L, i) nm_checktensor(L, i)

static int istensor(lua_State *L, int i) {
  return luaL_testudata(L, i, NM_TENSOR_T) != NULL;
}

/* Raises on a failed kernel (interrupt, or an argument the checks here
** let through). */
static void check_status(lua_State *L, int status, const char *what) {
  if (status != NM_OK) nm_status_error(L, status, what);
}

static void shape_error(lua_State *L, int arg, const char *what, const nm_tensor *a,
                        const nm_tensor *b) {
  char sa[96], sb[96];
  nm_shape_str(a, sa, sizeof sa);
  nm_shape_str(b, sb, sizeof sb);
  lua_pushfstring(L, "%s, %s vs %s", what, sa, sb);
  luaL_argerror(L, arg, lua_tostring(L, -1));
}

/* Operand checks: same dtype, then same shape, both reported at `arg`. */
static void check_like(lua_State *L, int arg, const nm_tensor *a, const nm_tensor *b) {
  nm_check_same_dtype(L, arg, a, b);
  nm_check_same_shape(L, arg, a, b);
}

/* The result r must have a's shape and dtype (reported against r, arg 1). */
static void check_result(lua_State *L, const nm_tensor *r, const nm_tensor *a) {
  nm_check_same_dtype(L, 1, r, a);
  if (!nm_same_shape(r, a)) shape_error(L, 1, "result size mismatch", r, a);
}

/* 1 when r and a address exactly the same elements in the same order. */
static int same_view(const nm_tensor *r, const nm_tensor *a) {
  if (r->data != a->data || r->ndim != a->ndim) return 0;
  for (int d = 0; d < r->ndim; d++)
    if (r->size[d] != a->size[d] || (r->size[d] > 1 && r->stride[d] != a->stride[d]))
      return 0;
  return 1;
}

/* An input that overlaps the output r other than as the very same view
** (exact_ok) is replaced by a contiguous copy, pushed on the stack, so a
** kernel never reads an element it has already written. Allocates only
** then. */
static const nm_tensor *unalias(lua_State *L, const nm_tensor *r, const nm_tensor *in,
                                int exact_ok) {
  if ((exact_ok && same_view(r, in)) || !nm_overlap(r, in)) return in;
  nm_tensor *c = nm_newtensor_like(L, in, in->dtype);
  check_status(L, nm_copy(c, in), "copy");
  return c;
}

/* A new tensor shaped and typed like a (pushed). */
static nm_tensor *newlike(lua_State *L, const nm_tensor *a) {
  return nm_newtensor_like(L, a, a->dtype);
}

static const char *const binop_names[] = {"add", "sub", "mul", "div", "sub", "div"};

/* ---------------------------------------------------------------------- */
/* Elementwise binary: add sub mul div */

/* The op with its operands swapped, for number op tensor. */
static nm_binop swapped_binop(nm_binop op) {
  return op == NM_SUB ? NM_RSUB : op == NM_DIV ? NM_RDIV : op;
}

/* r = arg[ai] op arg[bi] (tensor or number each, not both numbers). */
static void binary_into(lua_State *L, nm_tensor *r, int ai, int bi, nm_binop op) {
  const char *name = binop_names[op];
  nm_tensor *a = nm_totensor(L, ai);
  if (a == NULL && lua_type(L, ai) != LUA_TNUMBER) checkt(L, ai);  /* raises */
  if (a != NULL) {
    if (istensor(L, bi)) {
      const nm_tensor *b = checkt(L, bi);
      check_like(L, bi, a, b);
      check_result(L, r, a);
      const nm_tensor *ua = unalias(L, r, a, 1), *ub = unalias(L, r, b, 1);
      check_status(L, nm_binary(r, ua, ub, op), name);
    } else if (lua_type(L, bi) == LUA_TNUMBER) {
      double s = lua_tonumber(L, bi);
      check_result(L, r, a);
      check_status(L, nm_binary_scalar(r, unalias(L, r, a, 1), s, op), name);
    } else {
      luaL_typeerror(L, bi, "tensor or number");
    }
  } else {                                 /* number op tensor */
    double s = lua_tonumber(L, ai);
    const nm_tensor *b = checkt(L, bi);
    check_result(L, r, b);
    check_status(L, nm_binary_scalar(r, unalias(L, r, b, 1), s, swapped_binop(op)), name);
  }
}

/* t:add(b) in place; r:add(a, b) result form. b and a: tensor or number. */
static int m_binary(lua_State *L) {
  nm_binop op = (nm_binop)lua_tointeger(L, lua_upvalueindex(1));
  nm_tensor *r = checkt(L, 1);
  if (lua_gettop(L) >= 3) binary_into(L, r, 2, 3, op);
  else binary_into(L, r, 1, 2, op);
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Elementwise unary, with parameters for some */

static const char *const unop_names[] = {
  "neg", "abs", "sign", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "dtanh",
  "dsigmoid", "drelu", "softplus", "dsoftplus", "pow", "clamp", "scale", "expm1", "log1p"
};

/* t:exp() in place, r:exp(a) result form; parameters follow the tensors:
** t:pow(p), r:pow(a, p), t:clamp(lo, hi), t:softplus([beta]), t:scale(s). */
static int m_unary(lua_State *L) {
  nm_unop op = (nm_unop)lua_tointeger(L, lua_upvalueindex(1));
  nm_tensor *r = checkt(L, 1);
  int ai = istensor(L, 2) ? 2 : 1, pi = ai + 1;
  const nm_tensor *a = checkt(L, ai);
  double p = 0, q = 0;
  switch (op) {
    case NM_POW: case NM_SCALE:
      p = luaL_checknumber(L, pi);
      break;
    case NM_SOFTPLUS: case NM_DSOFTPLUS:
      p = luaL_optnumber(L, pi, 1.0);
      luaL_argcheck(L, p > 0 && isfinite(p), pi, "beta must be positive and finite");
      break;
    case NM_CLAMP:
      p = luaL_checknumber(L, pi);
      q = luaL_checknumber(L, pi + 1);
      luaL_argcheck(L, p <= q, pi + 1, "lo must not exceed hi");
      break;
    default:
      if (!lua_isnone(L, pi)) {
        if (ai == 1) luaL_typeerror(L, pi, "tensor");
        luaL_argerror(L, pi, "no more arguments expected");
      }
  }
  check_result(L, r, a);
  check_status(L, nm_unary(r, unalias(L, r, a, 1), op, p, q), unop_names[op]);
  lua_settop(L, 1);
  return 1;
}

/* y:axpy(alpha, x): y += alpha x. */
static int m_axpy(lua_State *L) {
  nm_tensor *y = checkt(L, 1);
  double alpha = luaL_checknumber(L, 2);
  const nm_tensor *x = checkt(L, 3);
  check_like(L, 3, y, x);
  check_status(L, nm_axpy(y, alpha, unalias(L, y, x, 1)), "axpy");
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Comparisons and masks */

static const char *const cmp_names[] = {"gt", "lt", "ge", "le", "eq", "ne"};

static nm_cmpop swapped_cmp(nm_cmpop op) {
  switch (op) {
    case NM_GT: return NM_LT;
    case NM_LT: return NM_GT;
    case NM_GE: return NM_LE;
    case NM_LE: return NM_GE;
    default: return op;
  }
}

/* m:gt(a, b) writes the 0/1 mask of a > b into m; t:gt(b) replaces t by
** its mask. b (or a) may be a number. */
static int m_compare(lua_State *L) {
  nm_cmpop op = (nm_cmpop)lua_tointeger(L, lua_upvalueindex(1));
  const char *name = cmp_names[op];
  nm_tensor *r = checkt(L, 1);
  int ai = 1, bi = 2;
  if (lua_gettop(L) >= 3) { ai = 2; bi = 3; }
  if (lua_type(L, ai) == LUA_TNUMBER) {        /* number op tensor */
    double s = lua_tonumber(L, ai);
    const nm_tensor *b = checkt(L, bi);
    check_result(L, r, b);
    check_status(L, nm_compare_scalar(r, unalias(L, r, b, 1), s, swapped_cmp(op)), name);
  } else {
    const nm_tensor *a = checkt(L, ai);
    check_result(L, r, a);
    if (lua_type(L, bi) == LUA_TNUMBER) {
      double s = lua_tonumber(L, bi);
      check_status(L, nm_compare_scalar(r, unalias(L, r, a, 1), s, op), name);
    } else {
      if (!istensor(L, bi)) luaL_typeerror(L, bi, "tensor or number");
      const nm_tensor *b = checkt(L, bi);
      check_like(L, bi, a, b);
      const nm_tensor *ua = unalias(L, r, a, 1), *ub = unalias(L, r, b, 1);
      check_status(L, nm_compare(r, ua, ub, op), name);
    }
  }
  lua_settop(L, 1);
  return 1;
}

/* t:maskedfill(mask, v): t = v where mask != 0. */
static int m_maskedfill(lua_State *L) {
  nm_tensor *r = checkt(L, 1);
  const nm_tensor *mask = checkt(L, 2);
  double v = luaL_checknumber(L, 3);
  check_like(L, 2, r, mask);
  check_status(L, nm_masked_fill(r, unalias(L, r, mask, 1), v), "maskedfill");
  lua_settop(L, 1);
  return 1;
}

/* t:maskedcopy(mask, src): t = src where mask != 0 (src shaped like t). */
static int m_maskedcopy(lua_State *L) {
  nm_tensor *r = checkt(L, 1);
  const nm_tensor *mask = checkt(L, 2), *src = checkt(L, 3);
  check_like(L, 2, r, mask);
  check_like(L, 3, r, src);
  const nm_tensor *um = unalias(L, r, mask, 1), *us = unalias(L, r, src, 1);
  check_status(L, nm_masked_copy(r, um, us), "maskedcopy");
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Reductions */

static const char *const red_names[] = {"sum", "mean", "max", "min", "norm"};

/* A 1-based dimension argument of a, returned 0-based. */
static int checkdim(lua_State *L, int arg, const nm_tensor *a) {
  lua_Integer d = luaL_checkinteger(L, arg);
  if (d < 1 || d > a->ndim) {
    lua_pushfstring(L, "dimension %d out of range for a %d-D tensor", (int)d, a->ndim);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return (int)d - 1;
}

/* A new tensor shaped like a without dimension dim (pushed). */
static nm_tensor *newreduced(lua_State *L, const nm_tensor *a, int dim, nm_dtype dt) {
  int64_t size[NM_MAXDIM];
  int n = 0;
  for (int d = 0; d < a->ndim; d++)
    if (d != dim) size[n++] = a->size[d];
  return nm_newtensor(L, dt, n, size);
}

/* A result of a reduction along dim must be shaped like a without dim, or
** like a with size 1 at dim. */
static void check_reduced(lua_State *L, int arg, const nm_tensor *res, const nm_tensor *a,
                          int dim) {
  int ok = 1;
  if (res->ndim == a->ndim) {
    for (int d = 0; d < a->ndim; d++)
      if (res->size[d] != (d == dim ? 1 : a->size[d])) ok = 0;
  } else if (res->ndim == a->ndim - 1) {
    for (int d = 0, k = 0; d < a->ndim; d++)
      if (d != dim && res->size[k++] != a->size[d]) ok = 0;
  } else {
    ok = 0;
  }
  if (!ok) {
    nm_tensor want = *a;
    nm_view_select(&want, dim, 0);
    shape_error(L, arg, "result size mismatch", res, &want);
  }
}

static void check_nonempty(lua_State *L, const nm_tensor *a, int dim, nm_redop op) {
  if ((op == NM_RMAX || op == NM_RMIN) &&
      (dim < 0 ? nm_numel(a) == 0 : a->size[dim] == 0))
    luaL_error(L, "%s of an empty tensor", red_names[op]);
}

static double checknorm_p(lua_State *L, int arg, double def) {
  double p = luaL_optnumber(L, arg, def);
  luaL_argcheck(L, p >= 0, arg, "norm: p must be >= 0 (or math.huge)");
  return p;
}

/* Writes the reduction of a along dim into r (values, may be NULL) and ri
** (indices + 1, float64, may be NULL), arguments at r_arg and ri_arg. */
static void reduce_into(lua_State *L, nm_tensor *r, int r_arg, nm_tensor *ri, int ri_arg,
                        const nm_tensor *a, int dim, nm_redop op, double p) {
  if (r != NULL) {
    nm_check_same_dtype(L, r_arg, r, a);
    check_reduced(L, r_arg, r, a, dim);
    a = unalias(L, r, a, 0);
  }
  if (ri != NULL) {
    if (ri->dtype != NM_FLOAT64) luaL_argerror(L, ri_arg, "indices must be float64");
    if (r != NULL && nm_overlap(r, ri))
      luaL_argerror(L, ri_arg, "the values and the indices must not share memory");
    check_reduced(L, ri_arg, ri, a, dim);
    a = unalias(L, ri, a, 0);
  }
  check_nonempty(L, a, dim, op);
  check_status(L, nm_reduce_dim(r, ri, a, dim, op, p, 1), red_names[op]);
}

/* t:sum() -> number; t:sum(dim) -> new tensor; r:sum(a, dim) -> r. Same
** for mean. */
static int m_sumlike(lua_State *L) {
  nm_redop op = (nm_redop)lua_tointeger(L, lua_upvalueindex(1));
  nm_tensor *t = checkt(L, 1);
  if (istensor(L, 2)) {
    const nm_tensor *a = checkt(L, 2);
    reduce_into(L, t, 1, NULL, 0, a, checkdim(L, 3, a), op, 0);
    lua_settop(L, 1);
    return 1;
  }
  if (lua_isnoneornil(L, 2)) {
    double v;
    check_status(L, nm_reduce_all(t, op, 0, &v, NULL), red_names[op]);
    lua_pushnumber(L, v);
    return 1;
  }
  int dim = checkdim(L, 2, t);
  nm_tensor *r = newreduced(L, t, dim, t->dtype);
  check_status(L, nm_reduce_dim(r, NULL, t, dim, op, 0, 1), red_names[op]);
  return 1;
}

/* t:max() -> value, flat index; t:max(dim) -> values, indices (new);
** r:max(a, dim) -> r; r:max(ri, a, dim) -> r, ri. Indices are 1-based,
** in float64 tensors. Same for min. */
static int m_maxlike(lua_State *L) {
  nm_redop op = (nm_redop)lua_tointeger(L, lua_upvalueindex(1));
  nm_tensor *t = checkt(L, 1);
  if (istensor(L, 2) && istensor(L, 3)) {
    nm_tensor *ri = checkt(L, 2);
    const nm_tensor *a = checkt(L, 3);
    reduce_into(L, t, 1, ri, 2, a, checkdim(L, 4, a), op, 0);
    lua_settop(L, 2);
    return 2;
  }
  if (istensor(L, 2)) {
    const nm_tensor *a = checkt(L, 2);
    reduce_into(L, t, 1, NULL, 0, a, checkdim(L, 3, a), op, 0);
    lua_settop(L, 1);
    return 1;
  }
  if (lua_isnoneornil(L, 2)) {
    double v;
    int64_t index;
    check_nonempty(L, t, -1, op);
    check_status(L, nm_reduce_all(t, op, 0, &v, &index), red_names[op]);
    lua_pushnumber(L, v);
    lua_pushinteger(L, index + 1);
    return 2;
  }
  int dim = checkdim(L, 2, t);
  check_nonempty(L, t, dim, op);
  nm_tensor *r = newreduced(L, t, dim, t->dtype);
  nm_tensor *ri = newreduced(L, t, dim, NM_FLOAT64);
  check_status(L, nm_reduce_dim(r, ri, t, dim, op, 0, 1), red_names[op]);
  return 2;
}

/* t:argmax() -> flat index; t:argmax(dim) -> indices (new, float64);
** ri:argmax(a, dim) -> ri. 1-based. Same for argmin. */
static int m_arglike(lua_State *L) {
  nm_redop op = (nm_redop)lua_tointeger(L, lua_upvalueindex(1));
  nm_tensor *t = checkt(L, 1);
  if (istensor(L, 2)) {
    const nm_tensor *a = checkt(L, 2);
    reduce_into(L, NULL, 0, t, 1, a, checkdim(L, 3, a), op, 0);
    lua_settop(L, 1);
    return 1;
  }
  if (lua_isnoneornil(L, 2)) {
    double v;
    int64_t index;
    check_nonempty(L, t, -1, op);
    check_status(L, nm_reduce_all(t, op, 0, &v, &index), red_names[op]);
    lua_pushinteger(L, index + 1);
    return 1;
  }
  int dim = checkdim(L, 2, t);
  check_nonempty(L, t, dim, op);
  nm_tensor *ri = newreduced(L, t, dim, NM_FLOAT64);
  check_status(L, nm_reduce_dim(NULL, ri, t, dim, op, 0, 1), red_names[op]);
  return 1;
}

/* t:all_finite() -> true when no element is NaN or infinite. */
static int m_all_finite(lua_State *L) {
  const nm_tensor *t = checkt(L, 1);
  int finite;
  check_status(L, nm_all_finite(t, &finite), "all_finite");
  lua_pushboolean(L, finite);
  return 1;
}

/* t:norm([p]) -> number (p = 2 by default, math.huge for the max norm,
** 0 counts non-zeros); t:norm(p, dim) -> new tensor; r:norm(a, p, dim). */
static int m_norm(lua_State *L) {
  nm_tensor *t = checkt(L, 1);
  if (istensor(L, 2)) {
    const nm_tensor *a = checkt(L, 2);
    double p = checknorm_p(L, 3, 2);
    reduce_into(L, t, 1, NULL, 0, a, checkdim(L, 4, a), NM_RNORM, p);
    lua_settop(L, 1);
    return 1;
  }
  double p = checknorm_p(L, 2, 2);
  if (lua_isnoneornil(L, 3)) {
    double v;
    check_status(L, nm_reduce_all(t, NM_RNORM, p, &v, NULL), "norm");
    lua_pushnumber(L, v);
    return 1;
  }
  int dim = checkdim(L, 3, t);
  nm_tensor *r = newreduced(L, t, dim, t->dtype);
  check_status(L, nm_reduce_dim(r, NULL, t, dim, NM_RNORM, p, 1), "norm");
  return 1;
}

/* t:softmax() in place over each row; r:softmax(a). 1-D or 2-D. Same for
** logsoftmax. */
static int m_softmax(lua_State *L) {
  int take_log = (int)lua_tointeger(L, lua_upvalueindex(1));
  const char *name = take_log ? "logsoftmax" : "softmax";
  nm_tensor *r = checkt(L, 1);
  int ai = lua_isnoneornil(L, 2) ? 1 : 2;
  const nm_tensor *a = checkt(L, ai);
  if (a->ndim != 1 && a->ndim != 2) {
    char sa[96];
    lua_pushfstring(L, "1-D or 2-D tensor expected, got %s", nm_shape_str(a, sa, sizeof sa));
    luaL_argerror(L, ai, lua_tostring(L, -1));
  }
  check_result(L, r, a);
  check_status(L, nm_softmax(r, unalias(L, r, a, 1), take_log), name);
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Products */

/* A matrix BLAS cannot take as it is becomes a contiguous copy (pushed). */
static const nm_tensor *blas_ready(lua_State *L, const nm_tensor *m) {
  if (nm_blas_matrix_ok(m)) return m;
  nm_tensor *c = newlike(L, m);
  check_status(L, nm_copy(c, m), "copy");
  return c;
}

/* C = alpha A B + beta C with every check; C at arg ci (for messages), A
** at arg ai, B at ai + 1. */
static void gemm_into(lua_State *L, nm_tensor *C, int ci, double alpha, int ai, double beta,
                      const char *name) {
  const nm_tensor *A = checkt(L, ai), *B = checkt(L, ai + 1);
  nm_check_dim(L, ci, C, 2);
  nm_check_dim(L, ai, A, 2);
  nm_check_dim(L, ai + 1, B, 2);
  nm_check_same_dtype(L, ai, C, A);
  nm_check_same_dtype(L, ai + 1, C, B);
  if (A->size[1] != B->size[0]) shape_error(L, ai + 1, "size mismatch", A, B);
  if (C->size[0] != A->size[0] || C->size[1] != B->size[1]) {
    nm_tensor want = *A;
    want.size[1] = B->size[1];
    shape_error(L, ci, "result size mismatch", C, &want);
  }
  /* C is read and written by BLAS: an input sharing its memory, even as
  ** the same view, is copied first. */
  A = blas_ready(L, unalias(L, C, A, 0));
  B = blas_ready(L, unalias(L, C, B, 0));
  if (nm_blas_matrix_ok(C)) {
    check_status(L, nm_gemm(C, alpha, A, B, beta), name);
  } else {
    nm_tensor *tmp = newlike(L, C);
    if (beta != 0) check_status(L, nm_copy(tmp, C), "copy");
    check_status(L, nm_gemm(tmp, alpha, A, B, beta), name);
    check_status(L, nm_copy(C, tmp), "copy");
  }
}

/* C:mm(A, B): C = A B. */
static int m_mm(lua_State *L) {
  gemm_into(L, checkt(L, 1), 1, 1.0, 2, 0.0, "mm");
  lua_settop(L, 1);
  return 1;
}

/* C:addmm([alpha,] A, B[, beta]): C = beta C + alpha A B (defaults 1). */
static int m_addmm(lua_State *L) {
  nm_tensor *C = checkt(L, 1);
  int ai = istensor(L, 2) ? 2 : 3;
  double alpha = ai == 2 ? 1.0 : luaL_checknumber(L, 2);
  double beta = luaL_optnumber(L, ai + 2, 1.0);
  gemm_into(L, C, 1, alpha, ai, beta, "addmm");
  lua_settop(L, 1);
  return 1;
}

/* y = alpha A x + beta y; y at arg yi (for messages), A at arg ai, x at
** ai + 1. */
static void gemv_into(lua_State *L, nm_tensor *y, int yi, double alpha, int ai, double beta,
                      const char *name) {
  const nm_tensor *A = checkt(L, ai), *x = checkt(L, ai + 1);
  nm_check_dim(L, yi, y, 1);
  nm_check_dim(L, ai, A, 2);
  nm_check_dim(L, ai + 1, x, 1);
  nm_check_same_dtype(L, ai, y, A);
  nm_check_same_dtype(L, ai + 1, y, x);
  if (A->size[1] != x->size[0]) shape_error(L, ai + 1, "size mismatch", A, x);
  if (y->size[0] != A->size[0]) {
    nm_tensor want = *y;
    want.size[0] = A->size[0];
    shape_error(L, yi, "result size mismatch", y, &want);
  }
  A = blas_ready(L, unalias(L, y, A, 0));
  x = unalias(L, y, x, 0);
  check_status(L, nm_gemv(y, alpha, A, x, beta), name);
}

/* y:mv(A, x): y = A x. */
static int m_mv(lua_State *L) {
  gemv_into(L, checkt(L, 1), 1, 1.0, 2, 0.0, "mv");
  lua_settop(L, 1);
  return 1;
}

/* y:addmv([alpha,] A, x[, beta]): y = beta y + alpha A x (defaults 1). */
static int m_addmv(lua_State *L) {
  nm_tensor *y = checkt(L, 1);
  int ai = istensor(L, 2) ? 2 : 3;
  double alpha = ai == 2 ? 1.0 : luaL_checknumber(L, 2);
  double beta = luaL_optnumber(L, ai + 2, 1.0);
  gemv_into(L, y, 1, alpha, ai, beta, "addmv");
  lua_settop(L, 1);
  return 1;
}

/* Checks W [m x n], x [m], y [n] at args 1, xi, xi + 1. */
static void check_outer(lua_State *L, const nm_tensor *W, int xi, const nm_tensor *x,
                        const nm_tensor *y) {
  nm_check_dim(L, 1, W, 2);
  nm_check_dim(L, xi, x, 1);
  nm_check_dim(L, xi + 1, y, 1);
  nm_check_same_dtype(L, xi, W, x);
  nm_check_same_dtype(L, xi + 1, W, y);
  if (W->size[0] != x->size[0] || W->size[1] != y->size[0]) {
    char sw[96], sx[96], sy[96];
    nm_shape_str(W, sw, sizeof sw);
    nm_shape_str(x, sx, sizeof sx);
    nm_shape_str(y, sy, sizeof sy);
    lua_pushfstring(L, "size mismatch, %s vs %s x %s", sw, sx, sy);
    luaL_argerror(L, W->size[0] != x->size[0] ? xi : xi + 1, lua_tostring(L, -1));
  }
}

/* W:addr([alpha,] x, y): W += alpha x y^T, the Hebbian outer-product update. */
static int m_addr(lua_State *L) {
  nm_tensor *W = checkt(L, 1);
  int xi = istensor(L, 2) ? 2 : 3;
  double alpha = xi == 2 ? 1.0 : luaL_checknumber(L, 2);
  const nm_tensor *x = checkt(L, xi), *y = checkt(L, xi + 1);
  check_outer(L, W, xi, x, y);
  x = unalias(L, W, x, 0);
  y = unalias(L, W, y, 0);
  check_status(L, nm_ger(W, alpha, x, y), "addr");
  lua_settop(L, 1);
  return 1;
}

/* W:addr_masked(alpha, x, y, mask): W += alpha (x y^T) .* mask; entries
** where mask is 0 never change. */
static int m_addr_masked(lua_State *L) {
  nm_tensor *W = checkt(L, 1);
  double alpha = luaL_checknumber(L, 2);
  const nm_tensor *x = checkt(L, 3), *y = checkt(L, 4), *mask = checkt(L, 5);
  check_outer(L, W, 3, x, y);
  check_like(L, 5, W, mask);
  x = unalias(L, W, x, 0);
  y = unalias(L, W, y, 0);
  mask = unalias(L, W, mask, 1);
  check_status(L, nm_ger_masked(W, alpha, x, y, mask), "addr_masked");
  lua_settop(L, 1);
  return 1;
}

/* x:dot(y) -> number: the sum of x .* y (any shape, the same for both). */
static int m_dot(lua_State *L) {
  const nm_tensor *x = checkt(L, 1), *y = checkt(L, 2);
  check_like(L, 2, x, y);
  double v;
  check_status(L, nm_dot(x, y, &v), "dot");
  lua_pushnumber(L, v);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Allocating module functions */

/* nm.mm(A, B) -> new A B. */
static int f_mm(lua_State *L) {
  const nm_tensor *A = checkt(L, 1), *B = checkt(L, 2);
  nm_check_dim(L, 1, A, 2);
  nm_check_dim(L, 2, B, 2);
  int64_t size[2] = {A->size[0], B->size[1]};
  nm_tensor *C = nm_newtensor(L, A->dtype, 2, size);
  int ci = lua_gettop(L);
  gemm_into(L, C, ci, 1.0, 1, 0.0, "mm");
  lua_pushvalue(L, ci);
  return 1;
}

/* nm.mv(A, x) -> new A x. */
static int f_mv(lua_State *L) {
  const nm_tensor *A = checkt(L, 1);
  checkt(L, 2);
  nm_check_dim(L, 1, A, 2);
  nm_tensor *y = nm_newtensor(L, A->dtype, 1, &A->size[0]);
  int yi = lua_gettop(L);
  gemv_into(L, y, yi, 1.0, 1, 0.0, "mv");
  lua_pushvalue(L, yi);
  return 1;
}

/* nm.outer(x, y) -> new x y^T. */
static int f_outer(lua_State *L) {
  const nm_tensor *x = checkt(L, 1), *y = checkt(L, 2);
  nm_check_dim(L, 1, x, 1);
  nm_check_dim(L, 2, y, 1);
  nm_check_same_dtype(L, 2, x, y);
  int64_t size[2] = {x->size[0], y->size[0]};
  nm_tensor *W = nm_newtensor(L, x->dtype, 2, size);
  check_status(L, nm_ger(W, 1.0, x, y), "outer");
  return 1;
}

/* nm.bench_direct_gemm(n, dtype, reps [, blas_threads]) -> seconds for reps
** calls of cblas_?gemm on n x n matrices, timed in C (benchmarks only: the
** baseline the module's mm is compared with); n may be a list {m, k, n}
** for an [m x k] times [k x n] product. blas_threads (default 1) is
** OpenBLAS's own thread count for these calls only (OpenBLAS is at one
** thread otherwise: nm_math.h). */
static int f_bench_direct_gemm(lua_State *L) {
  lua_Integer dims[3];
  if (lua_istable(L, 1)) {
    for (int i = 0; i < 3; i++) {
      lua_geti(L, 1, i + 1);
      dims[i] = lua_tointeger(L, -1);
      lua_pop(L, 1);
      luaL_argcheck(L, dims[i] >= 1 && dims[i] <= 8192, 1, "sizes must be in 1..8192");
    }
  } else {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 8192, 1, "n must be in 1..8192");
    dims[0] = dims[1] = dims[2] = n;
  }
  nm_dtype dt = nm_optdtype(L, 2, NM_FLOAT32);
  lua_Integer reps = luaL_optinteger(L, 3, 1);
  lua_Integer threads = luaL_optinteger(L, 4, 1);
  luaL_argcheck(L, reps >= 1, 3, "reps must be >= 1");
  luaL_argcheck(L, threads >= 1 && threads <= 256, 4, "blas_threads must be in 1..256");
  int m = (int)dims[0], k = (int)dims[1], in = (int)dims[2];
  size_t es = nm_dtype_size(dt);
  size_t na = (size_t)m * (size_t)k, nb = (size_t)k * (size_t)in, nc = (size_t)m * (size_t)in;
  /* Lua-owned buffers, so an error cannot leak them. */
  char *a = lua_newuserdatauv(L, (na + nb + nc) * es, 0);
  char *b = a + na * es, *c = b + nb * es;
  for (size_t i = 0; i < na + nb; i++) {
    double v = i < na ? (double)(i % 7) / 7 - 0.5 : (double)(i % 5) / 5 - 0.5;
    if (dt == NM_FLOAT64) ((double *)(void *)a)[i] = v;
    else ((float *)(void *)a)[i] = (float)v;
  }
  struct timespec t0, t1;
  openblas_set_num_threads((int)threads);
  for (lua_Integer r = -1; r < reps; r++) {   /* r = -1: warm-up, untimed */
    if (r == 0) clock_gettime(CLOCK_MONOTONIC, &t0);
    if (dt == NM_FLOAT64)
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, in, k, 1.0,
                  (const double *)(void *)a, k, (const double *)(void *)b, in, 0.0,
                  (double *)(void *)c, in);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, in, k, 1.0f,
                  (const float *)(void *)a, k, (const float *)(void *)b, in, 0.0f,
                  (float *)(void *)c, in);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  openblas_set_num_threads(1);
  lua_pushnumber(L, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Operators: allocate their result */

/* The tensor operand of a binary operator (a tensor on either side). */
static const nm_tensor *operand(lua_State *L) {
  return istensor(L, 1) ? checkt(L, 1) : checkt(L, 2);
}

/* a + b, a - b, and a / s: new tensor = a op b (elementwise, a number on
** either side). */
static int mt_arith(lua_State *L) {
  nm_binop op = (nm_binop)lua_tointeger(L, lua_upvalueindex(1));
  lua_settop(L, 2);
  if (op == NM_DIV && istensor(L, 1) && istensor(L, 2))
    luaL_argerror(L, 2, "number expected (r:div(a, b) divides elementwise)");
  nm_tensor *r = newlike(L, operand(L));
  binary_into(L, r, 1, 2, op);
  lua_settop(L, 3);
  return 1;
}

/* a * b: scaling with a number on either side; matrix-matrix (mm) and
** matrix-vector (mv) products; vector . vector gives the dot product. */
static int mt_mul(lua_State *L) {
  lua_settop(L, 2);
  if (!istensor(L, 1) || !istensor(L, 2)) {
    nm_tensor *r = newlike(L, operand(L));
    binary_into(L, r, 1, 2, NM_MUL);
    lua_settop(L, 3);
    return 1;
  }
  const nm_tensor *a = checkt(L, 1), *b = checkt(L, 2);
  if (a->ndim == 2 && b->ndim == 2) return f_mm(L);
  if (a->ndim == 2 && b->ndim == 1) return f_mv(L);
  if (a->ndim == 1 && b->ndim == 1) return m_dot(L);
  shape_error(L, 2, "product needs 2-D * 2-D, 2-D * 1-D or 1-D * 1-D", a, b);
  return 0;
}

/* -a: new tensor. */
static int mt_unm(lua_State *L) {
  const nm_tensor *a = checkt(L, 1);
  nm_tensor *r = newlike(L, a);
  check_status(L, nm_unary(r, a, NM_NEG, 0, 0), "unm");
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Registration */

typedef struct { const char *name; lua_CFunction fn; int op; } op_reg;

static const op_reg op_methods[] = {
  {"add", m_binary, NM_ADD}, {"sub", m_binary, NM_SUB},
  {"mul", m_binary, NM_MUL}, {"div", m_binary, NM_DIV},
  {"neg", m_unary, NM_NEG}, {"abs", m_unary, NM_ABS}, {"sign", m_unary, NM_SIGN},
  {"exp", m_unary, NM_EXP}, {"log", m_unary, NM_LOG}, {"sqrt", m_unary, NM_SQRT},
  {"tanh", m_unary, NM_TANH}, {"sigmoid", m_unary, NM_SIGMOID},
  {"relu", m_unary, NM_RELU}, {"dtanh", m_unary, NM_DTANH},
  {"dsigmoid", m_unary, NM_DSIGMOID}, {"drelu", m_unary, NM_DRELU},
  {"softplus", m_unary, NM_SOFTPLUS}, {"dsoftplus", m_unary, NM_DSOFTPLUS},
  {"pow", m_unary, NM_POW}, {"clamp", m_unary, NM_CLAMP}, {"scale", m_unary, NM_SCALE},
  {"expm1", m_unary, NM_EXPM1}, {"log1p", m_unary, NM_LOG1P},
  {"gt", m_compare, NM_GT}, {"lt", m_compare, NM_LT}, {"ge", m_compare, NM_GE},
  {"le", m_compare, NM_LE}, {"eq", m_compare, NM_EQ}, {"ne", m_compare, NM_NE},
  {"sum", m_sumlike, NM_RSUM}, {"mean", m_sumlike, NM_RMEAN},
  {"max", m_maxlike, NM_RMAX}, {"min", m_maxlike, NM_RMIN},
  {"argmax", m_arglike, NM_RMAX}, {"argmin", m_arglike, NM_RMIN},
  {"softmax", m_softmax, 0}, {"logsoftmax", m_softmax, 1},
  {NULL, NULL, 0}
};

static const luaL_Reg plain_methods[] = {
  {"axpy", m_axpy}, {"maskedfill", m_maskedfill}, {"maskedcopy", m_maskedcopy},
  {"norm", m_norm}, {"mm", m_mm}, {"addmm", m_addmm}, {"mv", m_mv},
  {"addmv", m_addmv}, {"addr", m_addr}, {"addr_masked", m_addr_masked},
  {"dot", m_dot}, {"all_finite", m_all_finite},
  {NULL, NULL}
};

/* nm.ulp_scan(op, dtype, lo, hi, count[, beta]) -> max_ulp, worst_x, n: the
** accuracy of t:op() against libm over about count inputs from lo to hi
** (see nm_ulp_scan); op is "exp", "log", "expm1", "log1p", "tanh", "dtanh",
** "sigmoid", "dsigmoid", "softplus" or "dsoftplus". */
static int f_ulp_scan(lua_State *L) {
  static const char *const names[] = {"exp", "log", "expm1", "log1p", "tanh", "dtanh",
                                      "sigmoid", "dsigmoid", "softplus", "dsoftplus", NULL};
  static const nm_unop ops[] = {NM_EXP, NM_LOG, NM_EXPM1, NM_LOG1P, NM_TANH, NM_DTANH,
                                NM_SIGMOID, NM_DSIGMOID, NM_SOFTPLUS, NM_DSOFTPLUS};
  nm_unop op = ops[luaL_checkoption(L, 1, NULL, names)];
  nm_dtype dt = nm_optdtype(L, 2, NM_FLOAT32);
  double lo = luaL_checknumber(L, 3), hi = luaL_checknumber(L, 4);
  lua_Integer count = luaL_checkinteger(L, 5);
  double beta = luaL_optnumber(L, 6, 1.0);
  luaL_argcheck(L, isfinite(lo) && isfinite(hi) && lo <= hi, 4, "need finite lo <= hi");
  luaL_argcheck(L, count >= 1 && count <= ((lua_Integer)1 << 32), 5, "count must be in 1..2^32");
  luaL_argcheck(L, beta > 0 && isfinite(beta), 6, "beta must be positive and finite");
  double maxe, worst;
  int64_t n;
  check_status(L, nm_ulp_scan(op, beta, dt, lo, hi, (int64_t)count, &maxe, &worst, &n),
               "ulp_scan");
  lua_pushnumber(L, maxe);
  lua_pushnumber(L, worst);
  lua_pushinteger(L, (lua_Integer)n);
  return 3;
}

/* nm.threads([n]) -> the thread count (after setting it to n, when given)
** and the processors this process may use. OpenBLAS stays at one thread;
** the count is that of neuromic's pool (nm_math.h: results do not depend
** on it). */
static int f_threads(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= NM_POOL_MAX, 1, "thread count must be in 1..256");
    if (nm_set_threads((int)n) != NM_OK)
      return luaL_error(L, "threads: cannot start %d threads", (int)n);
  }
  lua_pushinteger(L, nm_pool_threads());
  lua_pushinteger(L, nm_pool_cores());
  return 2;
}

/* nm.pool_counts() -> the jobs whose parts the pool's workers were
** offered and the tasks posted for a worker since the process started
** (nm_pool_counts): work small enough to stay in the caller counts in
** neither. */
static int f_pool_counts(lua_State *L) {
  int64_t jobs, tasks;
  nm_pool_counts(&jobs, &tasks);
  lua_pushinteger(L, (lua_Integer)jobs);
  lua_pushinteger(L, (lua_Integer)tasks);
  return 2;
}

/* nm.blas_core() -> the name of the kernels OpenBLAS runs (its
** openblas_get_corename: "SkylakeX", "Haswell", "Prescott", ...). */
static int f_blas_core(lua_State *L) {
  lua_pushstring(L, openblas_get_corename());
  return 1;
}

/* nm.blas_core_advice([core]) -> the OPENBLAS_CORETYPE that names the
** kernels this CPU's features allow when OpenBLAS runs lesser ones (those
** of `core`, default the running ones), or nil: what ./neuromic sets before
** it runs itself again, and what to set before loading the module into
** another interpreter. */
static int f_blas_core_advice(lua_State *L) {
  const char *core = luaL_optstring(L, 1, openblas_get_corename());
  const char *advice = nm_blas_core_for(core);
  if (advice == NULL) lua_pushnil(L);
  else lua_pushstring(L, advice);
  return 1;
}

static const luaL_Reg module_funcs[] = {
  {"threads", f_threads}, {"pool_counts", f_pool_counts}, {"blas_core", f_blas_core},
  {"blas_core_advice", f_blas_core_advice},
  {"mm", f_mm}, {"mv", f_mv}, {"outer", f_outer}, {"dot", m_dot},
  {"bench_direct_gemm", f_bench_direct_gemm}, {"ulp_scan", f_ulp_scan},
  {NULL, NULL}
};

static const op_reg metamethods[] = {
  {"__add", mt_arith, NM_ADD}, {"__sub", mt_arith, NM_SUB},
  {"__div", mt_arith, NM_DIV}, {"__mul", mt_mul, 0}, {"__unm", mt_unm, 0},
  {NULL, NULL, 0}
};

static void set_ops(lua_State *L, int table, const op_reg *regs) {
  for (; regs->name != NULL; regs++) {
    lua_pushinteger(L, regs->op);
    lua_pushcclosure(L, regs->fn, 1);
    lua_setfield(L, table, regs->name);
  }
}

void nm_open_tensor_math(lua_State *L, int module, int methods) {
  set_ops(L, methods, op_methods);
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, plain_methods, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, module_funcs, 0);
  lua_pop(L, 1);
  nm_set_threads(nm_pool_threads());   /* OpenBLAS at one thread from the start */
  luaL_getmetatable(L, NM_TENSOR_T);
  set_ops(L, lua_gettop(L), metamethods);
  lua_pop(L, 1);
}

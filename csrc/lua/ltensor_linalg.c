/*
** ltensor_linalg.c: the linear algebra of nm_linalg (LAPACK) on tensors:
** nm.symeig(A[, vectors]) (also A:symeig([vectors])) and the exact
** reduced-rank-regression solver nm.rrr(X, Y, k[, rtol]).
*/
#include <stdio.h>
#include <string.h>

#include "lnm.h"
#include "nm_linalg.h"

/* A float64 copy of the tensor at arg when it is float32; else itself. */
static const nm_tensor *as_float64(lua_State *L, int arg) {
  const nm_tensor *t = nm_checktensor(L, arg);
  if (t->dtype == NM_FLOAT64) return t;
  nm_tensor *d = nm_newtensor(L, NM_FLOAT64, t->ndim, t->size);
  nm_tensor_copy(d, t);
  lua_replace(L, arg);
  return d;
}

/* symeig(A[, vectors]) -> eigenvalues ascending (float64 [p]) and, when
** `vectors` is true, V (float64 [p x p]) whose column i is eigenvector i.
** A must be symmetric (only its upper triangle is read). */
static int f_symeig(lua_State *L) {
  int want = lua_toboolean(L, 2);
  const nm_tensor *A = as_float64(L, 1);
  if (A->ndim != 2 || A->size[0] != A->size[1] || A->size[0] < 1)
    nm_shape_argerror(L, 1, "A", A, "a non-empty square matrix");
  int64_t p = A->size[0], vs[2] = {p, p};
  nm_tensor *w = nm_newtensor(L, NM_FLOAT64, 1, &p);
  nm_tensor *V = want ? nm_newtensor(L, NM_FLOAT64, 2, vs) : NULL;
  int st = nm_symeig(A, w, V);
  if (st == NM_ENONFINITE) return luaL_error(L, "symeig: matrix has non-finite entries or did not converge");
  if (st != NM_OK) return nm_status_error(L, st, "symeig");
  return want ? 2 : 1;
}

/* rrr(X, Y, k[, rtol]) -> table { objective, ols_objective, trace_cyy,
** rank, B [m x n], W1 [k x n], W2T [k x m], mu [m] } (tensors float64). */
static int f_rrr(lua_State *L) {
  const nm_tensor *X = nm_checktensor(L, 1), *Y = nm_checktensor(L, 2);
  lua_Integer k = luaL_checkinteger(L, 3);
  double rtol = luaL_optnumber(L, 4, 0);
  if (X->ndim != 2 || X->size[0] < 1 || (X->size[1] > 1 && X->stride[1] != 1))
    nm_shape_argerror(L, 1, "X", X, "a non-empty [T x n] matrix with contiguous rows");
  if (Y->ndim != 2 || Y->size[0] != X->size[0] || (Y->size[1] > 1 && Y->stride[1] != 1)) {
    char expect[96];
    snprintf(expect, sizeof expect, "a [%lld x m] matrix with contiguous rows",
             (long long)X->size[0]);
    nm_shape_argerror(L, 2, "Y", Y, expect);
  }
  const int64_t n = X->size[1], m = Y->size[1];
  if (n > 20000 || m > 20000) return luaL_error(L, "rrr: at most 20000 columns");
  if (k < 1 || k > m) {
    lua_pushfstring(L, "rank %I out of range [1, %I]", (LUAI_UACINT)k, (LUAI_UACINT)m);
    return luaL_argerror(L, 3, lua_tostring(L, -1));
  }
  lua_settop(L, 4);
  lua_createtable(L, 0, 8);
  int res_t = lua_gettop(L);
  int64_t bs[2] = {m, n}, ws[2] = {k, n}, vs[2] = {k, m};
  nm_tensor *B = nm_newtensor(L, NM_FLOAT64, 2, bs);
  lua_setfield(L, res_t, "B");
  nm_tensor *W1 = nm_newtensor(L, NM_FLOAT64, 2, ws);
  lua_setfield(L, res_t, "W1");
  nm_tensor *W2T = nm_newtensor(L, NM_FLOAT64, 2, vs);
  lua_setfield(L, res_t, "W2T");
  nm_tensor *mu = nm_newtensor(L, NM_FLOAT64, 1, &bs[0]);
  lua_setfield(L, res_t, "mu");
  nm_rrr_result r;
  memset(&r, 0, sizeof r);
  int st = nm_rrr_solve(X, Y, (int64_t)k, rtol, &r, B, W1, W2T, mu);
  if (st == NM_EINVAL)
    return luaL_error(L, "rrr: rank %d exceeds the rank of the problem (rank of X^T X: %d)",
                      (int)k, (int)r.rank);
  if (st == NM_ENONFINITE) return luaL_error(L, "rrr: data contain non-finite values");
  if (st != NM_OK) return nm_status_error(L, st, "rrr");
  lua_pushnumber(L, r.objective);
  lua_setfield(L, res_t, "objective");
  lua_pushnumber(L, r.ols_objective);
  lua_setfield(L, res_t, "ols_objective");
  lua_pushnumber(L, r.trace_cyy);
  lua_setfield(L, res_t, "trace_cyy");
  lua_pushinteger(L, (lua_Integer)r.rank);
  lua_setfield(L, res_t, "rank");
  return 1;
}

static const luaL_Reg linalg_funcs[] = {
  {"symeig", f_symeig},
  {"rrr", f_rrr},
  {NULL, NULL}
};

static const luaL_Reg linalg_methods[] = {
  {"symeig", f_symeig},
  {NULL, NULL}
};

void nm_open_tensor_linalg(lua_State *L, int module, int methods) {
  lua_pushvalue(L, module);
  luaL_setfuncs(L, linalg_funcs, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, linalg_methods, 0);
  lua_pop(L, 1);
}

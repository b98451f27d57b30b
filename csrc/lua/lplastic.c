/*
** lplastic.c: the fused plasticity kernels of nm_plastic.c (gated
** outer-product update, Oja's subspace rule) as nm.kernels.plastic_outer
** and nm.kernels.plastic_oja, and the Tensor methods adam_update and
** mul_dact.
*/
#include <stdint.h>

#include "lnm.h"
#include "nm_plastic.h"

/* Scratch memory lives in one userdata kept in upvalue 1 (a table), and
** is replaced only when a call needs more: steady-state loops allocate
** nothing. */
static void *scratch(lua_State *L, size_t elems, nm_dtype dt) {
  size_t bytes = elems * nm_dtype_size(dt);
  if (bytes == 0) return NULL;
  lua_rawgeti(L, lua_upvalueindex(1), 1);
  void *p = lua_touserdata(L, -1);
  size_t have = p != NULL ? lua_rawlen(L, -1) : 0;
  lua_pop(L, 1);
  if (have >= bytes) return p;
  p = lua_newuserdatauv(L, bytes, 0);
  lua_rawseti(L, lua_upvalueindex(1), 1);
  return p;
}

static const nm_tensor *opttensor(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? NULL : nm_checktensor(L, arg);
}

/* Raises "bad argument #arg to 'name' (msg, W [m x n], ...)". */
static int operand_error(lua_State *L, int arg, const char *msg, int n,
                         const char *const *names, const nm_tensor *const *ts) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, msg);
  for (int i = 0; i < n; i++) {
    char shape[96];
    if (ts[i] == NULL) continue;
    luaL_addstring(&b, i == 0 ? ": " : ", ");
    luaL_addstring(&b, names[i]);
    luaL_addchar(&b, ' ');
    luaL_addstring(&b, nm_shape_str(ts[i], shape, sizeof shape));
  }
  luaL_pushresult(&b);
  return luaL_argerror(L, arg, lua_tostring(L, -1));
}

/* nm.kernels.plastic_outer(W, alpha, post, pre [, gate [, mask [, bias]]]) -> W
** W += alpha ((post .* gate)^T pre) .* mask; bias += alpha colsum(post .* gate).
** Rows of 2-D post/pre are samples (summed); 1-D is one sample.
** Allocates nothing once its scratch is large enough. */
static int m_plastic_outer(lua_State *L) {
  const nm_tensor *W = nm_checktensor(L, 1);
  double alpha = luaL_checknumber(L, 2);
  const nm_tensor *post = nm_checktensor(L, 3);
  const nm_tensor *pre = nm_checktensor(L, 4);
  const nm_tensor *gate = opttensor(L, 5);
  const nm_tensor *mask = opttensor(L, 6);
  const nm_tensor *b = opttensor(L, 7);
  int which;
  const char *msg = nm_plastic_outer_check(W, post, gate, pre, mask, b, &which);
  if (msg != NULL) {
    static const int argof[6] = {1, 3, 5, 4, 6, 7};
    static const char *const names[6] = {"W", "post", "gate", "pre", "mask", "bias"};
    const nm_tensor *ts[6] = {W, post, gate, pre, mask, b};
    return operand_error(L, argof[which], msg, 6, names, ts);
  }
  {
    static const int args[6] = {1, 7, 3, 4, 5, 6};
    static const char *const names[6] = {"W", "bias", "post", "pre", "gate", "mask"};
    const nm_tensor *ts[6] = {W, b, post, pre, gate, mask};
    nm_check_disjoint(L, 2, 6, args, names, ts);
  }
  void *s = scratch(L, nm_plastic_outer_scratch(W, post, gate, mask), W->dtype);
  int st = nm_plastic_outer(W, alpha, post, gate, pre, mask, b, s);
  if (st != NM_OK) return nm_status_error(L, st, "plastic_outer");
  lua_settop(L, 1);
  return 1;
}

/* nm.kernels.plastic_oja(W, alpha, y, x [, mask]) -> W
** Oja's subspace rule summed over rows: W += alpha (Y^T X - Y^T Y W) .* mask.
** Allocates nothing once its scratch is large enough. */
static int m_plastic_oja(lua_State *L) {
  const nm_tensor *W = nm_checktensor(L, 1);
  double alpha = luaL_checknumber(L, 2);
  const nm_tensor *Y = nm_checktensor(L, 3);
  const nm_tensor *X = nm_checktensor(L, 4);
  const nm_tensor *mask = opttensor(L, 5);
  int which;
  const char *msg = nm_plastic_oja_check(W, Y, X, mask, &which);
  if (msg != NULL) {
    static const int argof[4] = {1, 3, 4, 5};
    static const char *const names[4] = {"W", "y", "x", "mask"};
    const nm_tensor *ts[4] = {W, Y, X, mask};
    return operand_error(L, argof[which], msg, 4, names, ts);
  }
  {
    static const int args[4] = {1, 3, 4, 5};
    static const char *const names[4] = {"W", "y", "x", "mask"};
    const nm_tensor *ts[4] = {W, Y, X, mask};
    nm_check_disjoint(L, 1, 4, args, names, ts);
  }
  void *s = scratch(L, nm_plastic_oja_scratch(W, Y), W->dtype);
  int st = nm_plastic_oja(W, alpha, Y, X, mask, s);
  if (st != NM_OK) return nm_status_error(L, st, "plastic_oja");
  lua_settop(L, 1);
  return 1;
}

/* p:adam_update(d, m, v, sign, beta1, beta2, eps, step, inv_sqrt_bc2) -> p
** One fused Adam step (see nm_adam_update); all four tensors contiguous,
** of one shape and dtype. Allocates nothing. nm.optim uses it. */
static int m_adam_update(lua_State *L) {
  const nm_tensor *p = nm_checktensor(L, 1);
  const nm_tensor *d = nm_checktensor(L, 2);
  const nm_tensor *m = nm_checktensor(L, 3);
  const nm_tensor *v = nm_checktensor(L, 4);
  double sign = luaL_checknumber(L, 5), b1 = luaL_checknumber(L, 6);
  double b2 = luaL_checknumber(L, 7), eps = luaL_checknumber(L, 8);
  double step = luaL_checknumber(L, 9), ibc2 = luaL_checknumber(L, 10);
  const nm_tensor *ops[3] = {d, m, v};
  for (int i = 0; i < 3; i++) {
    nm_check_same_shape(L, i + 2, p, ops[i]);
    nm_check_same_dtype(L, i + 2, p, ops[i]);
    luaL_argcheck(L, nm_is_contiguous(ops[i]), i + 2, "tensor must be contiguous");
  }
  luaL_argcheck(L, nm_is_contiguous(p), 1, "tensor must be contiguous");
  {
    /* d is read at each element before that element is written, so it
    ** may be any of the others; p, m and v are all written. */
    static const int args[3] = {1, 3, 4};
    static const char *const names[3] = {"p", "m", "v"};
    const nm_tensor *ts[3] = {p, m, v};
    nm_check_disjoint(L, 3, 3, args, names, ts);
  }
  int st = nm_adam_update(p, d, m, v, sign, b1, b2, eps, step, ibc2);
  if (st != NM_OK) return nm_status_error(L, st, "adam_update");
  lua_settop(L, 1);
  return 1;
}

/* E:mul_dact(A, Y, act [, beta]) -> E
** E .*= f'(A) for act "identity", "relu", "sigmoid", "tanh", "softplus"
** (beta, default 1), Y = f(A) from the forward pass (sigmoid and tanh
** read it). Contiguous tensors of one shape. Allocates nothing. */
static int m_mul_dact(lua_State *L) {
  static const char *const acts[] = {"identity", "relu", "sigmoid", "tanh", "softplus", NULL};
  const nm_tensor *E = nm_checktensor(L, 1);
  const nm_tensor *A = nm_checktensor(L, 2);
  const nm_tensor *Y = nm_checktensor(L, 3);
  int act = luaL_checkoption(L, 4, NULL, acts);
  double beta = luaL_optnumber(L, 5, 1.0);
  luaL_argcheck(L, beta > 0, 5, "beta must be positive");
  const nm_tensor *ops[2] = {A, Y};
  for (int i = 0; i < 2; i++) {
    nm_check_same_shape(L, i + 2, E, ops[i]);
    nm_check_same_dtype(L, i + 2, E, ops[i]);
    luaL_argcheck(L, nm_is_contiguous(ops[i]), i + 2, "tensor must be contiguous");
  }
  luaL_argcheck(L, nm_is_contiguous(E), 1, "tensor must be contiguous");
  int st = nm_mul_dact(E, A, Y, act, beta);
  if (st != NM_OK) return nm_status_error(L, st, "mul_dact");
  lua_settop(L, 1);
  return 1;
}

static const luaL_Reg plastic_kernels[] = {
  {"plastic_outer", m_plastic_outer},
  {"plastic_oja", m_plastic_oja},
  {NULL, NULL}
};

static const luaL_Reg plastic_methods[] = {
  {"adam_update", m_adam_update},
  {"mul_dact", m_mul_dact},
  {NULL, NULL}
};

/* The plasticity kernels are model kernels (nm.kernels.plastic_outer(W,
** ...)), sharing one scratch holder; Adam's step and the activation
** derivative are Tensor methods (p:adam_update, E:mul_dact). */
void nm_open_plastic(lua_State *L, int kernels, int methods) {
  lua_pushvalue(L, kernels);
  lua_newtable(L);                      /* the scratch holder */
  luaL_setfuncs(L, plastic_kernels, 1);
  lua_pop(L, 1);
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, plastic_methods, 0);
  lua_pop(L, 1);
}

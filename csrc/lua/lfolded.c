/*
** lfolded.c: nm.kernels.folded, the fused kernels of the energy-based folded
** autoencoder (nm_folded.c) for lua/nm/models/folded_ae.lua.
*/
#include "lnm.h"
#include "nm_folded.h"

static const nm_tensor *opttensor(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? NULL : nm_checktensor(L, arg);
}

/* Checks that t (at arg) has ref's shape and dtype, and ref is 1-D or 2-D. */
static void check_like(lua_State *L, int arg, const nm_tensor *ref, const nm_tensor *t) {
  if (t == NULL) return;
  nm_check_same_shape(L, arg, ref, t);
  nm_check_same_dtype(L, arg, ref, t);
}

static void check_rank(lua_State *L, int arg, const nm_tensor *t) {
  if (t->ndim < 1 || t->ndim > 2) {
    char shape[96];
    lua_pushfstring(L, "1-D or 2-D tensor expected, got %s", nm_shape_str(t, shape, sizeof shape));
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

/* folded.rates(r, d | nil, u, phi [, beta]) -> r
** r = phi(u), d = phi'(u) with one evaluation of phi per element; phi is
** "identity", "tanh", "sigmoid", "softplus" (beta > 0, default 1) or "relu".
** Allocates nothing. */
static int f_rates(lua_State *L) {
  static const char *const names[] = {"identity", "tanh", "sigmoid", "softplus", "relu", NULL};
  const nm_tensor *r = nm_checktensor(L, 1);
  const nm_tensor *d = opttensor(L, 2);
  const nm_tensor *u = nm_checktensor(L, 3);
  int phi = luaL_checkoption(L, 4, NULL, names);
  double beta = luaL_optnumber(L, 5, 1);
  check_rank(L, 1, r);
  check_like(L, 2, r, d);
  check_like(L, 3, r, u);
  luaL_argcheck(L, beta > 0, 5, "beta must be > 0");
  {  /* r and d are both written: one would overwrite the other */
    static const int args[] = {1, 2};
    static const char *const outs[] = {"r", "d"};
    const nm_tensor *ts[] = {r, d};
    nm_check_disjoint(L, 2, 2, args, outs, ts);
  }
  int st = nm_folded_rates(r, d, u, (nm_folded_phi)phi, beta);
  if (st != NM_OK) return nm_status_error(L, st, "rates");
  lua_settop(L, 1);
  return 1;
}

/* folded.mismatch(e, u, p) -> sum of e^2, with e = u - p written.
** Allocates nothing. */
static int f_mismatch(lua_State *L) {
  const nm_tensor *e = nm_checktensor(L, 1);
  const nm_tensor *u = nm_checktensor(L, 2);
  const nm_tensor *p = nm_checktensor(L, 3);
  check_rank(L, 1, e);
  check_like(L, 2, e, u);
  check_like(L, 3, e, p);
  double s = 0;
  int st = nm_folded_mismatch(e, u, p, &s);
  if (st != NM_OK) return nm_status_error(L, st, "mismatch");
  lua_pushnumber(L, s);
  return 1;
}

/* folded.velocity(v, ew | nil, a_w, eg | nil, a_g, n | nil, a_n, d | nil,
**                 back | nil, scale) -> max |v|
** v = scale (a_w ew + a_g eg + a_n n + d .* back), absent terms left out
** (d and back together). Allocates nothing. */
static int f_velocity(lua_State *L) {
  const nm_tensor *v = nm_checktensor(L, 1);
  const nm_tensor *ew = opttensor(L, 2);
  double a_w = luaL_checknumber(L, 3);
  const nm_tensor *eg = opttensor(L, 4);
  double a_g = luaL_checknumber(L, 5);
  const nm_tensor *n = opttensor(L, 6);
  double a_n = luaL_checknumber(L, 7);
  const nm_tensor *d = opttensor(L, 8);
  const nm_tensor *back = opttensor(L, 9);
  double scale = luaL_checknumber(L, 10);
  check_rank(L, 1, v);
  check_like(L, 2, v, ew);
  check_like(L, 4, v, eg);
  check_like(L, 6, v, n);
  check_like(L, 8, v, d);
  check_like(L, 9, v, back);
  luaL_argcheck(L, (d == NULL) == (back == NULL), d == NULL ? 8 : 9,
                "d and back must be given together");
  double m = 0;
  int st = nm_folded_velocity(v, ew, a_w, eg, a_g, n, a_n, d, back, scale, &m);
  if (st != NM_OK) return nm_status_error(L, st, "velocity");
  lua_pushnumber(L, m);
  return 1;
}

/* folded.step(u, m | nil, v, dt [, mom]) -> u
** u += dt v (m nil), or m = mom m + dt v; u += m. Allocates nothing. */
static int f_step(lua_State *L) {
  const nm_tensor *u = nm_checktensor(L, 1);
  const nm_tensor *m = opttensor(L, 2);
  const nm_tensor *v = nm_checktensor(L, 3);
  double dt = luaL_checknumber(L, 4);
  double mom = luaL_optnumber(L, 5, 0);
  check_rank(L, 1, u);
  check_like(L, 2, u, m);
  check_like(L, 3, u, v);
  {  /* u and m are both written */
    static const int args[] = {1, 2};
    static const char *const names[] = {"u", "m"};
    const nm_tensor *ts[] = {u, m};
    nm_check_disjoint(L, 2, 2, args, names, ts);
  }
  int st = nm_folded_step(u, m, v, dt, mom);
  if (st != NM_OK) return nm_status_error(L, st, "step");
  lua_settop(L, 1);
  return 1;
}

static const luaL_Reg folded_funcs[] = {
  {"rates", f_rates},
  {"mismatch", f_mismatch},
  {"velocity", f_velocity},
  {"step", f_step},
  {NULL, NULL}
};

void nm_open_folded(lua_State *L, int module, int methods) {
  (void)methods;
  luaL_newlib(L, folded_funcs);
  lua_setfield(L, module, "folded");
}

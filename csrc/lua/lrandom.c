/*
** lrandom.c: the neuromic.Generator Lua type (seeded xoshiro256**
** streams) and the random fills and constructors of tensors.
*/
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lnm.h"
#include "nm_random.h"

/* The userdata is a bare nm_rng, so other bindings may take a generator
** with luaL_checkudata(L, i, "neuromic.Generator") and use it directly. */
#define GENERATOR_T "neuromic.Generator"

#define checkgen(L, i) ((nm_rng *)luaL_checkudata(L, i, GENERATOR_T))

/* Pushes a new generator in a valid state (seed 0), then the caller sets
** its state. Allocates. */
static nm_rng *newgen(lua_State *L) {
  nm_rng *g = (nm_rng *)lua_newuserdatauv(L, sizeof(nm_rng), 0);
  nm_rng_seed(g, 0);
  luaL_setmetatable(L, GENERATOR_T);
  return g;
}

static double checkfinite(lua_State *L, int arg) {
  double v = luaL_checknumber(L, arg);
  if (!isfinite(v))
    luaL_argerror(L, arg, "finite number expected");
  return v;
}

/* Optional (a, b) pair at arg, arg+1: both or neither. */
static void optpair(lua_State *L, int arg, double *a, double *b) {
  if (lua_isnoneornil(L, arg) && lua_isnoneornil(L, arg + 1))
    return;
  *a = checkfinite(L, arg);
  *b = checkfinite(L, arg + 1);
}

static void checkinterval(lua_State *L, int arg, double a, double b) {
  if (a > b)
    luaL_argerror(L, arg, "interval [a, b) needs a <= b");
  if (!isfinite(b - a))
    luaL_argerror(L, arg, "interval too wide (b - a overflows)");
}

static void checkstd(lua_State *L, int arg, double std) {
  if (std < 0)
    luaL_argerror(L, arg, "standard deviation must be >= 0");
}

static double checkprob(lua_State *L, int arg, double def) {
  double p = luaL_optnumber(L, arg, def);
  if (!(p >= 0.0 && p <= 1.0))
    luaL_argerror(L, arg, "probability must be in [0, 1]");
  return p;
}

/* ------------------------------------------------------------ generator */

/* nm.generator(seed): a new generator; allocates. */
static int g_new(lua_State *L) {
  lua_Integer seed = luaL_checkinteger(L, 1);
  nm_rng *g = newgen(L);
  nm_rng_seed(g, (uint64_t)seed);
  return 1;
}

/* g:seed(seed): restarts g from a seed; returns g. */
static int g_seed(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  nm_rng_seed(g, (uint64_t)luaL_checkinteger(L, 2));
  lua_settop(L, 1);
  return 1;
}

/* g:uniform([a, b]): a number in [a, b) (default [0, 1)). */
static int g_uniform(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  double a = 0.0, b = 1.0;
  optpair(L, 2, &a, &b);
  checkinterval(L, 2, a, b);
  double v = a + (b - a) * nm_rng_uniform(g);
  lua_pushnumber(L, (v >= b && a < b) ? nextafter(b, a) : v);
  return 1;
}

/* g:normal([mean, std]): a normal deviate (default mean 0, std 1). */
static int g_normal(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  double mean = 0.0, std = 1.0;
  optpair(L, 2, &mean, &std);
  checkstd(L, 3, std);
  lua_pushnumber(L, mean + std * nm_rng_normal(g));
  return 1;
}

/* g:integer(lo, hi): an integer in [lo, hi]; g:integer(n): in [1, n]. */
static int g_integer(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  lua_Integer lo, hi;
  if (lua_isnoneornil(L, 3)) {
    lo = 1;
    hi = luaL_checkinteger(L, 2);
    luaL_argcheck(L, hi >= 1, 2, "interval is empty (n must be >= 1)");
  } else {
    lo = luaL_checkinteger(L, 2);
    hi = luaL_checkinteger(L, 3);
    luaL_argcheck(L, lo <= hi, 3, "interval is empty (needs lo <= hi)");
  }
  lua_pushinteger(L, (lua_Integer)nm_rng_integer(g, (int64_t)lo, (int64_t)hi));
  return 1;
}

/* g:bernoulli([p]): true with probability p (default 0.5). */
static int g_bernoulli(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  double p = checkprob(L, 2, 0.5);
  lua_pushboolean(L, nm_rng_bernoulli(g, p));
  return 1;
}

/* g:bits(): the next raw 64-bit output as a (wrapping) Lua integer. */
static int g_bits(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  uint64_t v = nm_rng_next(g);
  /* two's complement reinterpretation, avoiding implementation-defined casts */
  lua_Integer i = v <= (uint64_t)INT64_MAX ? (lua_Integer)v : -(lua_Integer)(~v) - 1;
  lua_pushinteger(L, i);
  return 1;
}

/* Checks a count argument and returns it; `limit` bounds it so that the
** int64 workspaces below cannot overflow size_t. */
static int64_t checkcount(lua_State *L, int arg, const char *what) {
  lua_Integer n = luaL_checkinteger(L, arg);
  if (n < 0 || (uint64_t)n > (SIZE_MAX / 4) / sizeof(int64_t)) {
    lua_pushfstring(L, "%s must be in [0, %I]", what,
                    (lua_Integer)((SIZE_MAX / 4) / sizeof(int64_t)));
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return (int64_t)n;
}

/* Pushes a 1-D float64 tensor holding idx[i] + 1. Allocates. */
static void push_indices(lua_State *L, const int64_t *idx, int64_t n) {
  int64_t size[1] = {n};
  nm_tensor *t = nm_newtensor(L, NM_FLOAT64, 1, size);
  double *out = (double *)t->data;
  for (int64_t i = 0; i < n; i++)
    out[i] = (double)(idx[i] + 1);
}

/* g:permutation(n): a float64 tensor holding 1..n in random order.
** Allocates the tensor and a temporary n-slot workspace. */
static int g_permutation(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  int64_t n = checkcount(L, 2, "n");
  int64_t *work = (int64_t *)lua_newuserdatauv(L, (size_t)n * sizeof(int64_t), 0);
  nm_rng_permutation(g, work, n);
  push_indices(L, work, n);
  return 1;
}

/* g:shuffle(list) -> list: list[1 .. #list] in random order, in place, by
** Fisher-Yates: for i = #list down to 2, swap list[i] and list[j] with j =
** g:integer(1, i) (the draws of g:permutation and of that loop written in
** Lua, so either gives the same order). Raw table access (no
** metamethods); allocates nothing. */
static int g_shuffle(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  for (lua_Integer i = n; i >= 2; i--) {
    lua_Integer j = (lua_Integer)nm_rng_integer(g, 1, (int64_t)i);
    lua_rawgeti(L, 2, i);
    lua_rawgeti(L, 2, j);
    lua_rawseti(L, 2, i);        /* list[i] = the old list[j] */
    lua_rawseti(L, 2, j);        /* list[j] = the old list[i] */
  }
  lua_settop(L, 2);
  return 1;
}

/* g:sample(n, k): a float64 tensor of k distinct values of 1..n in random
** order (sampling without replacement). Allocates the tensor and O(k)
** workspace, whatever n. */
static int g_sample(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  int64_t n = (int64_t)luaL_checkinteger(L, 2);
  int64_t k = checkcount(L, 3, "k");
  luaL_argcheck(L, n >= 0, 2, "n must be >= 0");
  luaL_argcheck(L, k <= n, 3, "k must not exceed n (sampling without replacement)");
  size_t slots = nm_rng_sample_workspace(k);
  int64_t *work = (int64_t *)lua_newuserdatauv(L, (slots + (size_t)k) * sizeof(int64_t), 0);
  int64_t *out = work + slots;
  nm_rng_sample(g, n, k, out, work);
  push_indices(L, out, k);
  return 1;
}

/* g:clone(): an independent generator in the same state. Allocates. */
static int g_clone(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  nm_rng *c = newgen(L);
  *c = *g;
  return 1;
}

/* g:jump(): advances g by 2^128 outputs (a non-overlapping substream);
** returns g. */
static int g_jump(lua_State *L) {
  nm_rng_jump(checkgen(L, 1));
  lua_settop(L, 1);
  return 1;
}

/* g:state(): the full state as a string, for checkpoints. */
static int g_state(lua_State *L) {
  char buf[NM_RNG_STATE_LEN];
  nm_rng_get_state(checkgen(L, 1), buf);
  lua_pushstring(L, buf);
  return 1;
}

/* g:set_state(s): restores a state made by g:state(); returns g. */
static int g_set_state(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  char err[160];
  if (nm_rng_set_state(g, s, len, err, sizeof err) != NM_OK) {
    lua_pushstring(L, err);
    luaL_argerror(L, 2, lua_tostring(L, -1));
  }
  lua_settop(L, 1);
  return 1;
}

static int g_tostring(lua_State *L) {
  lua_pushfstring(L, GENERATOR_T " (xoshiro256**): %p", lua_topointer(L, 1));
  return 1;
}

/* ---------------------------------------------------------- tensor fills */

/* t:uniform(g[, a, b]): fills t in place with uniforms in [a, b) (default
** [0, 1)); returns t. Allocates nothing. */
static int t_uniform(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  nm_rng *g = checkgen(L, 2);
  double a = 0.0, b = 1.0;
  optpair(L, 3, &a, &b);
  checkinterval(L, 3, a, b);
  int status = nm_rng_fill_uniform(g, t, a, b);
  if (status != NM_OK)
    return nm_status_error(L, status, "uniform");
  lua_settop(L, 1);
  return 1;
}

/* t:normal(g[, mean, std]): fills t in place with normal deviates;
** returns t. Allocates nothing. */
static int t_normal(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  nm_rng *g = checkgen(L, 2);
  double mean = 0.0, std = 1.0;
  optpair(L, 3, &mean, &std);
  checkstd(L, 4, std);
  int status = nm_rng_fill_normal(g, t, mean, std);
  if (status != NM_OK)
    return nm_status_error(L, status, "normal");
  lua_settop(L, 1);
  return 1;
}

/* t:bernoulli(g[, p]): fills t in place with 1 (probability p, default
** 0.5) or 0; returns t. Allocates nothing. */
static int t_bernoulli(lua_State *L) {
  nm_tensor *t = nm_checktensor(L, 1);
  nm_rng *g = checkgen(L, 2);
  double p = checkprob(L, 3, 0.5);
  int status = nm_rng_fill_bernoulli(g, t, p);
  if (status != NM_OK)
    return nm_status_error(L, status, "bernoulli");
  lua_settop(L, 1);
  return 1;
}

/* Sizes from arguments first..top (integers, or one table of them) and
** a trailing dtype string or {dtype = ...} table, as nm.zeros takes. */
static int checkdims(lua_State *L, int first, int64_t *size, nm_dtype *dt) {
  int top = lua_gettop(L), ndim = 0;
  *dt = NM_FLOAT32;
  if (top >= first && lua_type(L, top) == LUA_TSTRING)
    *dt = nm_optdtype(L, top--, NM_FLOAT32);
  else if (top > first && lua_istable(L, top) && lua_rawlen(L, top) == 0)
    *dt = nm_dtype_field(L, top--, NM_FLOAT32);
  if (top == first && lua_istable(L, first)) {
    lua_Unsigned n = lua_rawlen(L, first);
    luaL_argcheck(L, n <= NM_MAXDIM, first, "too many dimensions (at most 4)");
    for (int i = 0; i < (int)n; i++) {
      lua_rawgeti(L, first, i + 1);
      int isint;
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      luaL_argcheck(L, isint, first, "sizes must be integers");
      luaL_argcheck(L, v >= 0, first, "sizes must be non-negative");
      size[ndim++] = (int64_t)v;
      lua_pop(L, 1);
    }
    return ndim;
  }
  for (int i = first; i <= top; i++) {
    luaL_argcheck(L, ndim < NM_MAXDIM, i, "too many dimensions (at most 4)");
    lua_Integer v = luaL_checkinteger(L, i);
    luaL_argcheck(L, v >= 0, i, "size must be non-negative");
    size[ndim++] = (int64_t)v;
  }
  return ndim;
}

/* nm.rand(g, sizes...[, dtype]): a new tensor of uniforms in [0, 1).
** Allocates. */
static int t_rand(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  int64_t size[NM_MAXDIM];
  nm_dtype dt;
  int ndim = checkdims(L, 2, size, &dt);
  int status = nm_rng_fill_uniform(g, nm_newtensor(L, dt, ndim, size), 0.0, 1.0);
  if (status != NM_OK)
    return nm_status_error(L, status, "rand");
  return 1;
}

/* nm.randn(g, sizes...[, dtype]): a new tensor of standard normal
** deviates. Allocates. */
static int t_randn(lua_State *L) {
  nm_rng *g = checkgen(L, 1);
  int64_t size[NM_MAXDIM];
  nm_dtype dt;
  int ndim = checkdims(L, 2, size, &dt);
  int status = nm_rng_fill_normal(g, nm_newtensor(L, dt, ndim, size), 0.0, 1.0);
  if (status != NM_OK)
    return nm_status_error(L, status, "randn");
  return 1;
}

/* ------------------------------------------------------------- opening */

static const luaL_Reg random_funcs[] = {
  {"generator", g_new}, {"rand", t_rand}, {"randn", t_randn},
  {NULL, NULL}
};

static const luaL_Reg generator_meth[] = {
  {"seed", g_seed},           {"uniform", g_uniform},   {"normal", g_normal},
  {"integer", g_integer},     {"bernoulli", g_bernoulli}, {"bits", g_bits},
  {"permutation", g_permutation}, {"shuffle", g_shuffle}, {"sample", g_sample},
  {"clone", g_clone},
  {"jump", g_jump},           {"state", g_state},       {"set_state", g_set_state},
  {NULL, NULL}
};

static const luaL_Reg generator_metameth[] = {
  {"__tostring", g_tostring}, {"__index", NULL}, {NULL, NULL}
};

static const luaL_Reg tensor_random_meth[] = {
  {"uniform", t_uniform}, {"normal", t_normal}, {"bernoulli", t_bernoulli},
  {NULL, NULL}
};

void nm_open_random(lua_State *L, int module, int methods) {
  luaL_newmetatable(L, GENERATOR_T);
  luaL_setfuncs(L, generator_metameth, 0);
  luaL_newlib(L, generator_meth);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_setfield(L, module, "Generator");
  lua_pop(L, 1);
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, tensor_random_meth, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, random_funcs, 0);
  lua_pop(L, 1);
}

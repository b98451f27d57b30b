/*
** lsynth.c: Lua binding of nm_synth: teacher-network and low-rank
** regression generators (module functions nm.synth_*).
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lnm.h"
#include "nm_synth.h"

#define MAX_LAYERS 16

/* Shape text of t for error messages ("[3 x 4]"), pushed on the stack. */
static const char *pushshape(lua_State *L, const nm_tensor *t) {
  char buf[96];
  nm_shape_str(t, buf, sizeof buf);
  return lua_pushstring(L, buf);
}

static void check_matrix(lua_State *L, int arg, const nm_tensor *t, const char *what) {
  if (t->ndim != 2 || !nm_is_contiguous(t)) {
    lua_pushfstring(L, "%s must be a contiguous 2-D tensor, got %s%s", what,
                    pushshape(L, t), nm_is_contiguous(t) ? "" : " (strided)");
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

static void check_dtype(lua_State *L, int arg, const nm_tensor *t, nm_dtype dt,
                        const char *what) {
  if (t->dtype != dt) {
    lua_pushfstring(L, "%s is %s, expected %s like the others", what,
                    nm_dtype_name(t->dtype), nm_dtype_name(dt));
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

/* A field of the options table at `opts` (absent table: default). */
static double optnumber(lua_State *L, int opts, const char *key, double def) {
  if (!lua_istable(L, opts)) return def;
  lua_getfield(L, opts, key);
  double v = def;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tonumberx(L, -1, &ok);
    if (!ok || !isfinite(v)) {
      lua_pushfstring(L, "option '%s' must be a finite number", key);
      luaL_argerror(L, opts, lua_tostring(L, -1));
    }
  }
  lua_pop(L, 1);
  return v;
}

static int optchoice(lua_State *L, int opts, const char *key, const char *def,
                     const char *const names[]) {
  const char *name = def;
  if (lua_istable(L, opts)) {
    lua_getfield(L, opts, key);
    if (!lua_isnil(L, -1)) {
      name = lua_tostring(L, -1);
      if (name == NULL) {
        lua_pushfstring(L, "option '%s' must be a string", key);
        luaL_argerror(L, opts, lua_tostring(L, -1));
      }
    }
    lua_pop(L, 1);  /* the string stays valid: the options table holds it */
  }
  for (int i = 0; names[i]; i++)
    if (strcmp(names[i], name) == 0) return i;
  lua_pushfstring(L, "invalid option %s = '%s'", key, name);
  return luaL_argerror(L, opts, lua_tostring(L, -1));
}

/* Input distribution: input = "uniform" (a, b; default -1, 1) or
** "normal" (a = mean, b = std; default 0, 1). */
static nm_dist optdist(lua_State *L, int opts) {
  static const char *const names[] = {"uniform", "normal", NULL};
  nm_dist d;
  d.kind = optchoice(L, opts, "input", "uniform", names) ? NM_DIST_NORMAL : NM_DIST_UNIFORM;
  d.a = optnumber(L, opts, "a", d.kind == NM_DIST_NORMAL ? 0.0 : -1.0);
  d.b = optnumber(L, opts, "b", 1.0);
  if (d.kind == NM_DIST_UNIFORM ? !(d.a < d.b) : !(d.b >= 0))
    luaL_argerror(L, opts, d.kind == NM_DIST_UNIFORM ? "uniform input needs a < b"
                                                     : "normal input needs std b >= 0");
  return d;
}

/* The generator argument: lrandom.c owns the type, a full userdata that
** is one nm_rng. */
#define GENERATOR_T "neuromic.Generator"
#define checkrng(L, i) ((nm_rng *)luaL_checkudata(L, i, GENERATOR_T))

/* ------------------------------------------------------------ teacher */

/* nm.synth_teacher(g, X, Y, Ws [, opts]) -> Y
** Draws X from opts.input when g is a generator (nil: X is used as it is),
** then Y = phi(gain_L W_L ... phi(gain_1 W_1 x)) row by row. opts: gains
** (table, default all 1), phi ("identity", "sigmoid", "tanh", "relu",
** "softplus"; default "softplus"), gamma, beta, theta (softplus; default
** 1, 1, 0), input/a/b, hidden (table of N x n_l buffers for the hidden
** layers; allocated for this call when absent). */
static int synth_teacher(lua_State *L) {
  static const char *const phinames[] = {"identity", "sigmoid", "tanh", "relu", "softplus", NULL};
  static const nm_phi_kind phikinds[] = {NM_PHI_IDENTITY, NM_PHI_SIGMOID, NM_PHI_TANH,
                                         NM_PHI_RELU, NM_PHI_SOFTPLUS};
  nm_rng *g = lua_isnil(L, 1) ? NULL : checkrng(L, 1);
  nm_tensor *X = nm_checktensor(L, 2);
  nm_tensor *Y = nm_checktensor(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  int opts = 5;
  if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
  lua_settop(L, 5);
  check_matrix(L, 2, X, "X");
  check_matrix(L, 3, Y, "Y");
  check_dtype(L, 3, Y, X->dtype, "Y");
  if (Y->size[0] != X->size[0]) {
    lua_pushfstring(L, "row count mismatch, X %s vs Y %s", pushshape(L, X), pushshape(L, Y));
    luaL_argerror(L, 3, lua_tostring(L, -1));
  }
  lua_Integer nlayers = luaL_len(L, 4);
  if (nlayers < 1 || nlayers > MAX_LAYERS)
    luaL_argerror(L, 4, "expected a list of 1 to 16 weight matrices");

  const nm_tensor *W[MAX_LAYERS];
  const nm_tensor *hidden[MAX_LAYERS];
  double gain[MAX_LAYERS];
  int64_t width = X->size[1];
  int hidden_idx = 0;
  if (lua_istable(L, opts)) {
    lua_getfield(L, opts, "hidden");
    if (!lua_isnil(L, -1)) {
      luaL_argcheck(L, lua_istable(L, -1), opts, "option 'hidden' must be a table of tensors");
      hidden_idx = lua_gettop(L);
    } else lua_pop(L, 1);
    lua_getfield(L, opts, "gains");
    luaL_argcheck(L, lua_isnil(L, -1) || lua_istable(L, -1), opts,
                  "option 'gains' must be a table of numbers");
  } else lua_pushnil(L);
  int gains_idx = lua_gettop(L);
  /* Every weight and hidden buffer stays on the stack until the return:
  ** a list with an __index metamethod may hand out tensors it keeps
  ** nowhere else. */
  luaL_checkstack(L, 2 * MAX_LAYERS + 8, "synth_teacher");
  for (int l = 0; l < (int)nlayers; l++) {
    lua_geti(L, 4, l + 1);
    nm_tensor *w = nm_totensor(L, -1);
    if (w == NULL) {
      lua_pushfstring(L, "weight %d is not a tensor", l + 1);
      luaL_argerror(L, 4, lua_tostring(L, -1));
    }
    if (w->ndim != 2 || !nm_is_contiguous(w) || w->dtype != X->dtype || w->size[1] != width) {
      lua_pushfstring(L, "weight %d is %s %s, expected a contiguous %s [n x %d]", l + 1,
                      pushshape(L, w), nm_dtype_name(w->dtype), nm_dtype_name(X->dtype),
                      (int)width);
      luaL_argerror(L, 4, lua_tostring(L, -1));
    }
    W[l] = w;
    width = w->size[0];
    gain[l] = 1.0;
    if (!lua_isnil(L, gains_idx)) {
      lua_geti(L, gains_idx, l + 1);
      int ok;
      gain[l] = lua_tonumberx(L, -1, &ok);
      if (!ok || !isfinite(gain[l])) {
        lua_pushfstring(L, "gains[%d] must be a finite number", l + 1);
        luaL_argerror(L, opts, lua_tostring(L, -1));
      }
      lua_pop(L, 1);
    }
    if (l == nlayers - 1) break;
    nm_tensor *h = NULL;
    if (hidden_idx) {
      lua_geti(L, hidden_idx, l + 1);
      h = nm_totensor(L, -1);
      if (h == NULL || h->ndim != 2 || !nm_is_contiguous(h) || h->dtype != X->dtype ||
          h->size[0] != X->size[0] || h->size[1] != width) {
        lua_pushfstring(L, "hidden buffer %d must be a contiguous %s [%d x %d]", l + 1,
                        nm_dtype_name(X->dtype), (int)X->size[0], (int)width);
        luaL_argerror(L, opts, lua_tostring(L, -1));
      }
    } else {
      int64_t size[2] = {X->size[0], width};
      h = nm_newtensor(L, X->dtype, 2, size);  /* stays on the stack until return */
    }
    hidden[l] = h;
  }
  if (Y->size[1] != width) {
    lua_pushfstring(L, "size mismatch, Y is %s but the last layer has %d outputs",
                    pushshape(L, Y), (int)width);
    luaL_argerror(L, 3, lua_tostring(L, -1));
  }
  nm_phi phi;
  phi.kind = phikinds[optchoice(L, opts, "phi", "softplus", phinames)];
  phi.gamma = optnumber(L, opts, "gamma", 1.0);
  phi.beta = optnumber(L, opts, "beta", 1.0);
  phi.theta = optnumber(L, opts, "theta", 0.0);
  nm_dist dist = {NM_DIST_UNIFORM, -1.0, 1.0};
  if (g != NULL) dist = optdist(L, opts);
  {
    /* Written: the hidden buffers, Y, and X when it is drawn; each layer
    ** reads its weights and input while it writes its output. */
    const nm_tensor *ts[2 * MAX_LAYERS + 1];
    const char *names[2 * MAX_LAYERS + 1];
    int args[2 * MAX_LAYERS + 1], n = 0;
    char labels[2 * MAX_LAYERS][24];
    for (int l = 0; l + 1 < (int)nlayers; l++) {
      snprintf(labels[l], sizeof labels[l], "hidden[%d]", l + 1);
      ts[n] = hidden[l]; names[n] = labels[l]; args[n++] = opts;
    }
    ts[n] = Y; names[n] = "Y"; args[n++] = 3;
    ts[n] = X; names[n] = "X"; args[n++] = 2;
    int nout = g != NULL ? n : n - 1;
    for (int l = 0; l < (int)nlayers; l++) {
      snprintf(labels[MAX_LAYERS + l], sizeof labels[0], "weight %d", l + 1);
      ts[n] = W[l]; names[n] = labels[MAX_LAYERS + l]; args[n++] = 4;
    }
    nm_check_disjoint(L, nout, n, args, names, ts);
    /* The options were read through metamethods, which may close tensors. */
    nm_check_open(L, n, args, names, ts);
  }
  if (g != NULL) {
    int status = nm_synth_draw(g, X, dist);
    if (status != NM_OK) return nm_status_error(L, status, "synth_teacher");
  }
  int status = nm_synth_teacher_forward((int)nlayers, W, gain, &phi, X, hidden, Y);
  if (status != NM_OK) return nm_status_error(L, status, "synth_teacher");
  lua_pushvalue(L, 3);
  return 1;
}

/* ----------------------------------------------------------- low rank */

/* nm.synth_lowrank(g, A, k [, opts]) -> A, U, V
** A (m x n) = U diag(sv) V^T with orthonormal U (m x k), V (n x k).
** opts: sv (table of k singular values, default all 1), U, V (output
** tensors; allocated when absent). */
static int synth_lowrank(lua_State *L) {
  nm_rng *g = checkrng(L, 1);
  nm_tensor *A = nm_checktensor(L, 2);
  lua_Integer k = luaL_checkinteger(L, 3);
  int opts = 4;
  if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
  lua_settop(L, 4);
  check_matrix(L, 2, A, "A");
  int64_t m = A->size[0], n = A->size[1];
  if (k < 1 || k > m || k > n) {
    lua_pushfstring(L, "rank %I out of range [1, %I] for A %s", k,
                    (lua_Integer)(m < n ? m : n), pushshape(L, A));
    luaL_argerror(L, 3, lua_tostring(L, -1));
  }
  /* Singular values live in a userdata so an error cannot leak them. */
  double *sv = (double *)lua_newuserdatauv(L, (size_t)k * sizeof(double), 0);
  for (lua_Integer r = 0; r < k; r++) sv[r] = 1.0;
  if (lua_istable(L, opts)) {
    lua_getfield(L, opts, "sv");
    if (!lua_isnil(L, -1)) {
      luaL_argcheck(L, lua_istable(L, -1) && luaL_len(L, -1) == k, opts,
                    "option 'sv' must be a table of k singular values");
      for (lua_Integer r = 0; r < k; r++) {
        lua_geti(L, -1, r + 1);
        int ok;
        sv[r] = lua_tonumberx(L, -1, &ok);
        if (!ok || !isfinite(sv[r])) luaL_argerror(L, opts, "option 'sv' holds a non-number");
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  const char *names[2] = {"U", "V"};
  int64_t rows[2] = {m, n};
  nm_tensor *F[2];
  int fidx[2];
  for (int f = 0; f < 2; f++) {
    F[f] = NULL;
    if (lua_istable(L, opts)) {
      lua_getfield(L, opts, names[f]);
      if (lua_isnil(L, -1)) lua_pop(L, 1);
      else {
        F[f] = nm_totensor(L, -1);
        if (F[f] == NULL || F[f]->ndim != 2 || !nm_is_contiguous(F[f]) ||
            F[f]->dtype != A->dtype || F[f]->size[0] != rows[f] || F[f]->size[1] != k) {
          lua_pushfstring(L, "option '%s' must be a contiguous %s [%d x %d] tensor", names[f],
                          nm_dtype_name(A->dtype), (int)rows[f], (int)k);
          luaL_argerror(L, opts, lua_tostring(L, -1));
        }
      }
    }
    if (F[f] == NULL) {
      int64_t size[2] = {rows[f], k};
      F[f] = nm_newtensor(L, A->dtype, 2, size);
    }
    fidx[f] = lua_gettop(L);
  }
  {
    static const int args[3] = {2, 4, 4};
    static const char *const who[3] = {"A", "U", "V"};
    const nm_tensor *ts[3] = {A, F[0], F[1]};
    nm_check_disjoint(L, 3, 3, args, who, ts);
    nm_check_open(L, 3, args, who, ts);
  }
  int status = nm_synth_lowrank_matrix(g, A, k, sv, F[0], F[1]);
  if (status != NM_OK) return nm_status_error(L, status, "synth_lowrank");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, fidx[0]);
  lua_pushvalue(L, fidx[1]);
  return 3;
}

/* nm.synth_lowrank_sample(g, A, X, Y [, opts]) -> X, Y
** X drawn from opts.input (default U(-1, 1); "normal" for N(a, b^2)),
** Y = X A^T + opts.noise * N(0, 1) (noise std, default 0). */
static int synth_lowrank_sample(lua_State *L) {
  nm_rng *g = checkrng(L, 1);
  nm_tensor *A = nm_checktensor(L, 2);
  nm_tensor *X = nm_checktensor(L, 3);
  nm_tensor *Y = nm_checktensor(L, 4);
  int opts = 5;
  if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
  lua_settop(L, 5);
  check_matrix(L, 2, A, "A");
  check_matrix(L, 3, X, "X");
  check_matrix(L, 4, Y, "Y");
  check_dtype(L, 3, X, A->dtype, "X");
  check_dtype(L, 4, Y, A->dtype, "Y");
  if (X->size[1] != A->size[1] || Y->size[0] != X->size[0] || Y->size[1] != A->size[0]) {
    lua_pushfstring(L, "size mismatch, A %s, X %s, Y %s (want X [N x n], Y [N x m] for A [m x n])",
                    pushshape(L, A), pushshape(L, X), pushshape(L, Y));
    luaL_argerror(L, 3, lua_tostring(L, -1));
  }
  double noise = optnumber(L, opts, "noise", 0.0);
  luaL_argcheck(L, noise >= 0, opts, "option 'noise' must be >= 0");
  nm_dist dist = optdist(L, opts);
  {
    static const int args[3] = {3, 4, 2};
    static const char *const names[3] = {"X", "Y", "A"};
    const nm_tensor *ts[3] = {X, Y, A};
    nm_check_disjoint(L, 2, 3, args, names, ts);
    nm_check_open(L, 3, args, names, ts);
  }
  int status = nm_synth_lowrank_sample(g, A, dist, noise, X, Y);
  if (status != NM_OK) return nm_status_error(L, status, "synth_lowrank_sample");
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  return 2;
}

static const luaL_Reg synth_funcs[] = {
  {"synth_teacher", synth_teacher},
  {"synth_lowrank", synth_lowrank},
  {"synth_lowrank_sample", synth_lowrank_sample},
  {NULL, NULL}
};

void nm_open_synth(lua_State *L, int module, int methods) {
  (void)methods;
  lua_pushvalue(L, module);
  luaL_setfuncs(L, synth_funcs, 0);
  lua_pop(L, 1);
}

/*
** lnk.c: the nm.kernels.nk table: NK models (neuromic.NKModel) and the networks
** of Bull's neuron autoencoders with their random hill climber
** (neuromic.NKNet). C core in nm_nk.c.
*/
#include <math.h>
#include <string.h>

#include "lnm.h"
#include "nm_nk.h"

#define MODEL_T "neuromic.NKModel"
#define NET_T "neuromic.NKNet"
#define GENERATOR_T "neuromic.Generator"

/* The model userdata: the header, then partners and (maybe) the table. */
typedef struct lmodel {
  nm_nk m;
} lmodel;

/* The network userdata: the climber, then its arrays (nm_nkhc_bytes). */
typedef struct lnet {
  nm_nkhc c;
} lnet;

#define checkmodel(L, i) (&((lmodel *)luaL_checkudata(L, i, MODEL_T))->m)
#define checknet(L, i) (&((lnet *)luaL_checkudata(L, i, NET_T))->c)
#define checkgen(L, i) ((nm_rng *)luaL_checkudata(L, i, GENERATOR_T))

static const char *const kind_names[] = {"NN", "NAN", "ANN", NULL};
static const char *const group_names[] = {"hidden", "output", "decoder", NULL};

/* Integer field of an options table, or def when absent. */
static lua_Integer int_field(lua_State *L, int arg, const char *name, lua_Integer def,
                             int required) {
  lua_getfield(L, arg, name);
  int isint = 0;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (!isint) {
    if (!lua_isnil(L, -1) || required) {
      lua_pushfstring(L, "option '%s' must be an integer, got %s", name,
                      luaL_typename(L, -1));
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    v = def;
  }
  lua_pop(L, 1);
  return v;
}

/* The generator in field "generator" of the options table (required). */
static nm_rng *gen_field(lua_State *L, int arg) {
  lua_getfield(L, arg, "generator");
  nm_rng *g = (nm_rng *)luaL_testudata(L, -1, GENERATOR_T);
  if (g == NULL)
    luaL_argerror(L, arg, "option 'generator' must be a neuromic.Generator");
  lua_pop(L, 1);   /* the options table keeps it alive */
  return g;
}

/* ------------------------------------------------------------ models */

/* nm.kernels.nk.model{n =, k =, generator =, partners = "random"|"adjacent",
** table = "auto"|true|false}: a new NK model; allocates. */
static int model_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = int_field(L, 1, "n", 0, 1);
  lua_Integer k = int_field(L, 1, "k", 0, 1);
  if (n < 1 || n > NM_NK_MAXN || k < 0 || k > NM_NK_MAXK || k > n - 1) {
    const char *why = (n < 1 || n > NM_NK_MAXN) ? nm_nk_check(0, 0) : nm_nk_check((int)n, (int)k);
    lua_pushfstring(L, "%s (N = %I, K = %I)", why, n, k);
    return luaL_argerror(L, 1, lua_tostring(L, -1));
  }
  nm_rng *g = gen_field(L, 1);
  lua_getfield(L, 1, "partners");
  const char *partners = lua_isnil(L, -1) ? "random" : lua_tostring(L, -1);
  int adjacent;
  if (partners != NULL && strcmp(partners, "random") == 0) adjacent = 0;
  else if (partners != NULL && strcmp(partners, "adjacent") == 0) adjacent = 1;
  else return luaL_argerror(L, 1, "option 'partners' must be \"random\" or \"adjacent\"");
  lua_pop(L, 1);
  size_t entries = nm_nk_table_entries((int)n, (int)k);
  int store;
  lua_getfield(L, 1, "table");
  if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TSTRING &&
                           strcmp(lua_tostring(L, -1), "auto") == 0))
    store = entries <= NM_NK_TABLE_AUTO;
  else if (lua_isboolean(L, -1))
    store = lua_toboolean(L, -1);
  else
    return luaL_argerror(L, 1, "option 'table' must be \"auto\", true or false");
  lua_pop(L, 1);
  if (store && entries > NM_NK_TABLE_MAX)   /* refuse, use the hash */
    return luaL_argerror(L, 1, "option 'table': table too large to store (use false)");
  size_t bytes = sizeof(lmodel) + (size_t)n * (size_t)k * sizeof(int32_t);
  bytes = (bytes + 7) & ~(size_t)7;
  size_t keys_at = bytes;
  bytes += (size_t)n * sizeof(uint64_t);
  size_t table_at = bytes;
  if (store)
    bytes += entries * sizeof(double);
  lmodel *lm = (lmodel *)lua_newuserdatauv(L, bytes, 0);
  memset(&lm->m, 0, sizeof lm->m);   /* a valid empty model first */
  luaL_setmetatable(L, MODEL_T);
  char *base = (char *)lm;
  nm_nk_init(&lm->m, (int)n, (int)k, adjacent, g, (int32_t *)(void *)(base + sizeof(lmodel)),
             (uint64_t *)(void *)(base + keys_at), store ? (double *)(void *)(base + table_at) : NULL);
  return 1;
}

static int model_n(lua_State *L) {
  lua_pushinteger(L, checkmodel(L, 1)->n);
  return 1;
}

static int model_k(lua_State *L) {
  lua_pushinteger(L, checkmodel(L, 1)->k);
  return 1;
}

/* m:stored(): true when the table is held in memory. */
static int model_stored(lua_State *L) {
  lua_pushboolean(L, checkmodel(L, 1)->table != NULL);
  return 1;
}

/* m:seed(): the key of the table entries' hash (an integer). */
static int model_seed(lua_State *L) {
  uint64_t v = checkmodel(L, 1)->seed;
  lua_pushinteger(L, v <= (uint64_t)LUA_MAXINTEGER ? (lua_Integer)v : -(lua_Integer)(~v) - 1);
  return 1;
}

/* m:partners(i): gene i's partners (1-based) as a list. */
static int model_partners(lua_State *L) {
  nm_nk *m = checkmodel(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  luaL_argcheck(L, i >= 1 && i <= m->n, 2, "gene out of range");
  lua_createtable(L, m->k, 0);
  for (int j = 0; j < m->k; j++) {
    lua_pushinteger(L, m->partners[(size_t)(i - 1) * m->k + j] + 1);
    lua_rawseti(L, -2, j + 1);
  }
  return 1;
}

static uint32_t check_pattern(lua_State *L, const nm_nk *m, int arg) {
  lua_Integer p = luaL_checkinteger(L, arg);
  luaL_argcheck(L, p >= 0 && p < ((lua_Integer)1 << (m->k + 1)), arg,
                "pattern out of range [0, 2^(K+1))");
  return (uint32_t)p;
}

/* m:entry(i, pattern): table entry of gene i (1-based) for a pattern
** (gene i the most significant of its K+1 bits). */
static int model_entry(lua_State *L) {
  nm_nk *m = checkmodel(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  luaL_argcheck(L, i >= 1 && i <= m->n, 2, "gene out of range");
  lua_pushnumber(L, nm_nk_entry(m, (int)(i - 1), check_pattern(L, m, 3)));
  return 1;
}

/* m:hash_entry(i, pattern): the same entry computed from the hash even
** when the table is stored. */
static int model_hash_entry(lua_State *L) {
  nm_nk *m = checkmodel(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  luaL_argcheck(L, i >= 1 && i <= m->n, 2, "gene out of range");
  lua_pushnumber(L, nm_nk_hash_entry(m->seed, (int)(i - 1), check_pattern(L, m, 3)));
  return 1;
}

/* Reads a genome of N genes (tensor or list; a gene is 1 when > 0) into
** a userdata of N bytes pushed on the stack. */
static unsigned char *check_genome(lua_State *L, const nm_nk *m, int arg) {
  unsigned char *bits = (unsigned char *)lua_newuserdatauv(L, (size_t)m->n, 0);
  nm_tensor *t = nm_totensor(L, arg);
  if (t != NULL) {
    if (nm_numel(t) != m->n || t->ndim != 1) {
      char buf[64];
      lua_pushfstring(L, "genome must be a vector of %d genes, got %s", m->n,
                      nm_shape_str(t, buf, sizeof buf));
      luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    for (int j = 0; j < m->n; j++) {
      int64_t idx = j;
      bits[j] = nm_get(t, &idx) > 0;
    }
    return bits;
  }
  luaL_argexpected(L, lua_istable(L, arg), arg, "tensor or table");
  luaL_argcheck(L, luaL_len(L, arg) == m->n, arg, "genome length must be N");
  for (int j = 0; j < m->n; j++) {
    lua_rawgeti(L, arg, j + 1);
    bits[j] = lua_tonumber(L, -1) > 0;
    lua_pop(L, 1);
  }
  return bits;
}

/* m:fitness(genome): F(genome). */
static int model_fitness(lua_State *L) {
  nm_nk *m = checkmodel(L, 1);
  unsigned char *bits = check_genome(L, m, 2);
  lua_pushnumber(L, nm_nk_fitness(m, bits));
  return 1;
}

/* m:dataset(S, g[, dtype]): S random genomes as inputs X [S x N] (0 ->
** -1) and fitness F [S] (default float64); allocates. */
static int model_dataset(lua_State *L) {
  nm_nk *m = checkmodel(L, 1);
  lua_Integer s = luaL_checkinteger(L, 2);
  luaL_argcheck(L, s >= 1 && s <= (1 << 24), 2, "sample count must be in [1, 2^24]");
  nm_rng *g = checkgen(L, 3);
  nm_dtype dt = nm_optdtype(L, 4, NM_FLOAT64);
  int64_t xs[2] = {s, m->n}, fs[1] = {s};
  nm_tensor *x = nm_newtensor(L, dt, 2, xs);
  nm_tensor *f = nm_newtensor(L, dt, 1, fs);
  unsigned char *bits = (unsigned char *)lua_newuserdatauv(L, (size_t)m->n, 0);
  int st = nm_nk_dataset(m, g, x, f, bits);
  if (st != NM_OK)
    return nm_status_error(L, st, "dataset");
  lua_pop(L, 1);
  return 2;
}

static int model_tostring(lua_State *L) {
  nm_nk *m = checkmodel(L, 1);
  lua_pushfstring(L, MODEL_T " (N = %d, K = %d, %s partners, %s table)", m->n, m->k,
                  m->adjacent ? "adjacent" : "random", m->table ? "stored" : "hashed");
  return 1;
}

/* ---------------------------------------------------------- networks */

static void check_data(lua_State *L, int arg, const nm_tensor *x, const nm_tensor *f,
                       int n) {
  char b1[64], b2[64];
  if (x->ndim != 2 || x->size[1] != n) {
    lua_pushfstring(L, "inputs must be [S x %d], got %s", n, nm_shape_str(x, b1, sizeof b1));
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  if (f->ndim != 1 || f->size[0] != x->size[0]) {
    lua_pushfstring(L, "size mismatch, inputs %s vs targets %s (targets must be [%d])",
                    nm_shape_str(x, b1, sizeof b1), nm_shape_str(f, b2, sizeof b2),
                    (int)x->size[0]);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

static double range_field(lua_State *L, int arg) {
  lua_getfield(L, arg, "range");
  double r = lua_isnil(L, -1) ? 1.0 : lua_tonumber(L, -1);
  if (!(r > 0) || !isfinite(r) || r > 1e6)
    luaL_argerror(L, arg, "option 'range' must be a number in (0, 1e6]");
  lua_pop(L, 1);
  return r;
}

/* nm.kernels.nk.network{kind = "NN"|"NAN"|"ANN", x = X [S x N], f = F [S],
** generator = g, h = 10, range = 1.0, target = "input"|"binary",
** test_x = Xt [St x N], test_f = Ft [St]}: a network with weights U[-1, 1]
** drawn from g, a copy of the training set and of the test set when
** given (net:test_error() without arguments); allocates. */
static int net_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "kind");
  const char *kname = lua_tostring(L, -1);
  int kind = -1;
  for (int i = 0; kname != NULL && kind_names[i] != NULL; i++)
    if (strcmp(kname, kind_names[i]) == 0)
      kind = i;
  if (kind < 0)
    return luaL_argerror(L, 1, "option 'kind' must be \"NN\", \"NAN\" or \"ANN\"");
  lua_pop(L, 1);
  /* Plain options first, tensors and the generator last, kept on the stack:
  ** reading a field may run a metamethod that closes or drops a tensor. */
  lua_Integer h = int_field(L, 1, "h", 10, 0);
  double range = range_field(L, 1);
  lua_getfield(L, 1, "target");
  const char *target = lua_isnil(L, -1) ? "input" : lua_tostring(L, -1);
  int binary;
  if (target != NULL && strcmp(target, "input") == 0) binary = 0;
  else if (target != NULL && strcmp(target, "binary") == 0) binary = 1;
  else return luaL_argerror(L, 1, "option 'target' must be \"input\" or \"binary\"");
  lua_pop(L, 1);
  lua_getfield(L, 1, "generator");
  nm_rng *g = (nm_rng *)luaL_testudata(L, -1, GENERATOR_T);
  if (g == NULL)
    return luaL_argerror(L, 1, "option 'generator' must be a neuromic.Generator");
  lua_getfield(L, 1, "x");
  lua_getfield(L, 1, "f");
  nm_tensor *x = nm_totensor(L, -2);
  nm_tensor *f = nm_totensor(L, -1);
  if (x == NULL || f == NULL)
    return luaL_argerror(L, 1, "options 'x' and 'f' must be tensors");
  lua_getfield(L, 1, "test_x");
  lua_getfield(L, 1, "test_f");
  nm_tensor *tx = NULL, *tf = NULL;
  if (!lua_isnil(L, -2) || !lua_isnil(L, -1)) {
    tx = nm_totensor(L, -2);
    tf = nm_totensor(L, -1);
    if (tx == NULL || tf == NULL)
      return luaL_argerror(L, 1, "options 'test_x' and 'test_f' must be tensors (both or neither)");
  }
  if (x->ndim != 2) {
    char buf[64];
    lua_pushfstring(L, "inputs must be a matrix [S x N], got %s", nm_shape_str(x, buf, sizeof buf));
    return luaL_argerror(L, 1, lua_tostring(L, -1));
  }
  int n = (int)x->size[1];
  check_data(L, 1, x, f, n);
  const char *why = nm_nkhc_check(kind, n, h < 1 || h > 4096 ? 0 : (int)h,
                                  x->size[0] > (1 << 24) ? 0 : (int)x->size[0]);
  if (why != NULL)
    return luaL_argerror(L, 1, why);
  int s = (int)x->size[0], ts = 0;
  if (tx != NULL) {
    if (tx->ndim != 2 || tx->size[1] != n || tx->size[0] > (1 << 24))
      return luaL_argerror(L, 1, "option 'test_x' must be [St x N] like 'x', St <= 2^24");
    check_data(L, 1, tx, tf, n);
    ts = (int)tx->size[0];
  }
  size_t bytes = nm_nkhc_bytes(kind, n, (int)h, s, ts);
  lnet *ln = (lnet *)lua_newuserdatauv(L, sizeof(lnet) + bytes, 0);
  nm_nkhc_layout(&ln->c, kind, n, (int)h, s, ts, (char *)ln + sizeof(lnet));
  luaL_setmetatable(L, NET_T);
  if (nm_nkhc_set_data(&ln->c, x, f) != NM_OK)
    return luaL_argerror(L, 1, "inputs must be -1 or 1 (an NK data set)");
  if (tx != NULL && nm_nkhc_set_test(&ln->c, tx, tf) != NM_OK)
    return luaL_argerror(L, 1, "test inputs must be -1 or 1 (an NK data set)");
  ln->c.range = range;
  if (binary) {
    ln->c.t_scale = 0.5;   /* 0.5 x + 0.5: exactly 0 or 1 */
    ln->c.t_shift = 0.5;
  }
  nm_nkhc_init_weights(&ln->c, g);
  nm_nkhc_refresh(&ln->c);
  return 1;
}

/* net:step(cycles, g): runs the hill climber, scoring candidates from the
** caches (fused C kernel); returns the number of changes kept. */
static int net_step(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "cycle count must be >= 0");
  nm_rng *g = checkgen(L, 3);
  int64_t before = c->accepted;
  int st = nm_nkhc_step(c, g, n);
  if (st != NM_OK)
    return nm_status_error(L, st, "step");
  lua_pushinteger(L, c->accepted - before);
  return 1;
}

/* net:step_naive(cycles, g): the same cycles scored by full forward
** passes (the oracle and benchmark baseline). */
static int net_step_naive(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "cycle count must be >= 0");
  nm_rng *g = checkgen(L, 3);
  int64_t before = c->accepted;
  int st = nm_nkhc_step_naive(c, g, n);
  if (st != NM_OK)
    return nm_status_error(L, st, "step_naive");
  lua_pushinteger(L, c->accepted - before);
  return 1;
}

static int rec_count(const nm_nkhc *c) {
  return c->kind == NM_NK_NAN ? c->h : c->kind == NM_NK_ANN ? 1 : 0;
}

/* Pushes task, mean reconstruction error (nil for NN) and the list of
** reconstruction errors (per neuron for NAN). */
static int push_errors(lua_State *L, const nm_nkhc *c, double task, const double *rec) {
  int nr = rec_count(c);
  lua_pushnumber(L, task);
  if (nr == 0) {
    lua_pushnil(L);
    lua_newtable(L);
    return 3;
  }
  double mean = 0.0;
  for (int i = 0; i < nr; i++)
    mean += rec[i];
  lua_pushnumber(L, mean / nr);
  lua_createtable(L, nr, 0);
  for (int i = 0; i < nr; i++) {
    lua_pushnumber(L, rec[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 3;
}

/* net:errors(): training MSE, mean reconstruction error (nil for NN),
** list of reconstruction errors, as the climber keeps them. */
static int net_errors(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  if (c->dirty)
    nm_nkhc_refresh(c);
  return push_errors(L, c, c->task, c->rec);
}

/* net:naive(): the same three values from a full forward pass. */
static int net_naive(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  double task;
  double *rec = (double *)lua_newuserdatauv(L, sizeof(double) * (size_t)(c->h + 1), 0);
  nm_nkhc_naive(c, &task, rec);
  return push_errors(L, c, task, rec);
}

/* net:test_error(X, F): MSE of the output on another data set;
** net:test_error(): on the test set kept with the network (the same bits,
** in O(St H)). */
static int net_test_error(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  if (lua_isnoneornil(L, 2) && lua_isnoneornil(L, 3)) {
    if (c->ts == 0)
      return luaL_argerror(L, 2, "tensor expected: this network keeps no test set "
                                 "(test_x, test_f of nm.kernels.nk.network)");
    lua_pushnumber(L, nm_nkhc_test_mse(c));
    return 1;
  }
  nm_tensor *x = nm_checktensor(L, 2);
  nm_tensor *f = nm_checktensor(L, 3);
  check_data(L, 2, x, f, c->n);
  double mse;
  if (nm_nkhc_task_error(c, x, f, &mse) != NM_OK)
    return luaL_argerror(L, 2, "inputs must be -1 or 1 (an NK data set)");
  lua_pushnumber(L, mse);
  return 1;
}

/* Checks (group, i, j) at arg..arg+2 (1-based) and returns them 0-based. */
static int check_param(lua_State *L, const nm_nkhc *c, int arg, int *i, int *j) {
  int group = luaL_checkoption(L, arg, NULL, group_names);
  int rows, cols;
  nm_nkhc_group_shape(c, group, &rows, &cols);
  if (rows == 0)
    luaL_argerror(L, arg, "an NN network has no decoder");
  lua_Integer ii = luaL_checkinteger(L, arg + 1), jj = luaL_checkinteger(L, arg + 2);
  if (ii < 1 || ii > rows || jj < 1 || jj > cols) {
    lua_pushfstring(L, "index (%I, %I) out of range for %s [%d x %d]", ii, jj,
                    group_names[group], rows, cols);
    luaL_argerror(L, arg + 1, lua_tostring(L, -1));
  }
  *i = (int)ii - 1;
  *j = (int)jj - 1;
  return group;
}

/* net:get(group, i, j): one parameter. */
static int net_get(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  int i, j, group = check_param(L, c, 2, &i, &j);
  lua_pushnumber(L, nm_nkhc_get(c, group, i, j));
  return 1;
}

static double checkfinite(lua_State *L, int arg) {
  double v = luaL_checknumber(L, arg);
  luaL_argcheck(L, isfinite(v), arg, "finite number expected");
  return v;
}

/* net:set(group, i, j, v): sets one parameter (hidden ones rounded to
** the 2^-32 grid); the caches are rebuilt on the next use. */
static int net_set(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  int i, j, group = check_param(L, c, 2, &i, &j);
  nm_nkhc_set(c, group, i, j, checkfinite(L, 5));
  return 0;
}

/* net:perturb(group, i, j, delta): applies a mutation exactly as the
** kernel does; returns the old value (restore it with net:set). */
static int net_perturb(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  int i, j, group = check_param(L, c, 2, &i, &j);
  double delta = checkfinite(L, 5);
  luaL_argcheck(L, fabs(delta) <= 1e6, 5, "mutation too large");
  double old = nm_nkhc_get(c, group, i, j);
  nm_nkhc_set(c, group, i, j, nm_nkhc_mutated(c, group, i, j, delta));
  lua_pushnumber(L, old);
  return 1;
}

/* net:shape(group): rows, cols of a parameter group (0, 0: none). */
static int net_shape(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  int group = luaL_checkoption(L, 2, NULL, group_names);
  int rows, cols;
  nm_nkhc_group_shape(c, group, &rows, &cols);
  lua_pushinteger(L, rows);
  lua_pushinteger(L, cols);
  return 2;
}

/* net:weights(): {hidden = [H x N+1], output = [1 x H+1], decoder = ...}
** float64 copies (no decoder for NN); allocates. */
static int net_weights(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  lua_newtable(L);
  for (int group = 0; group < 3; group++) {
    int rows, cols;
    nm_nkhc_group_shape(c, group, &rows, &cols);
    if (rows == 0)
      continue;
    int64_t size[2] = {rows, cols};
    nm_tensor *t = nm_newtensor(L, NM_FLOAT64, 2, size);
    double *d = (double *)t->data;
    for (int i = 0; i < rows; i++)
      for (int j = 0; j < cols; j++)
        d[(size_t)i * cols + j] = nm_nkhc_get(c, group, i, j);
    lua_setfield(L, -2, group_names[group]);
  }
  return 1;
}

/* net:set_weights(t): the inverse of weights() (every group present). */
static int net_set_weights(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  for (int group = 0; group < 3; group++) {
    int rows, cols;
    nm_nkhc_group_shape(c, group, &rows, &cols);
    if (rows == 0)
      continue;
    lua_getfield(L, 2, group_names[group]);
    nm_tensor *t = nm_totensor(L, -1);
    char buf[64];
    if (t == NULL || t->ndim != 2 || t->size[0] != rows || t->size[1] != cols) {
      lua_pushfstring(L, "field '%s' must be a [%d x %d] tensor, got %s", group_names[group],
                      rows, cols, t ? nm_shape_str(t, buf, sizeof buf) : luaL_typename(L, -1));
      return luaL_argerror(L, 2, lua_tostring(L, -1));
    }
    for (int64_t i = 0; i < rows; i++)
      for (int64_t j = 0; j < cols; j++) {
        int64_t idx[2] = {i, j};
        double v = nm_get(t, idx);
        if (!isfinite(v))
          return luaL_argerror(L, 2, "weights must be finite");
      }
    for (int64_t i = 0; i < rows; i++)
      for (int64_t j = 0; j < cols; j++) {
        int64_t idx[2] = {i, j};
        nm_nkhc_set(c, group, (int)i, (int)j, nm_get(t, idx));
      }
    lua_pop(L, 1);
  }
  return 0;
}

/* net:counts(): cycles, kept changes, ties. */
static int net_counts(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  lua_pushinteger(L, c->cycles);
  lua_pushinteger(L, c->accepted);
  lua_pushinteger(L, c->ties);
  return 3;
}

/* net:set_counts(cycles, kept, ties): restores the counters. */
static int net_set_counts(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  lua_Integer a = luaL_checkinteger(L, 2), b = luaL_checkinteger(L, 3),
              t = luaL_checkinteger(L, 4);
  luaL_argcheck(L, a >= 0 && b >= 0 && t >= 0 && b <= a, 2, "counts must be >= 0, kept <= cycles");
  c->cycles = a;
  c->accepted = b;
  c->ties = t;
  return 0;
}

/* net:last(): the last cycle as {autoenc, group, i, j, delta, before,
** after, kept, tie} (1-based indices), or nil before the first. */
static int net_last(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  if (c->cycles == 0)
    return 0;
  lua_createtable(L, 0, 9);
  lua_pushboolean(L, c->last_autoenc);
  lua_setfield(L, -2, "autoenc");
  lua_pushstring(L, group_names[c->last_group]);
  lua_setfield(L, -2, "group");
  lua_pushinteger(L, c->last_i + 1);
  lua_setfield(L, -2, "i");
  lua_pushinteger(L, c->last_j + 1);
  lua_setfield(L, -2, "j");
  lua_pushnumber(L, c->last_delta);
  lua_setfield(L, -2, "delta");
  lua_pushnumber(L, c->last_before);
  lua_setfield(L, -2, "before");
  lua_pushnumber(L, c->last_after);
  lua_setfield(L, -2, "after");
  lua_pushboolean(L, c->last_accepted);
  lua_setfield(L, -2, "kept");
  lua_pushboolean(L, c->last_tie);
  lua_setfield(L, -2, "tie");
  return 1;
}

/* net:info(): {kind, n, h, s, range, target}. */
static int net_info(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, kind_names[c->kind]);
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, c->n);
  lua_setfield(L, -2, "n");
  lua_pushinteger(L, c->h);
  lua_setfield(L, -2, "h");
  lua_pushinteger(L, c->s);
  lua_setfield(L, -2, "s");
  lua_pushnumber(L, c->range);
  lua_setfield(L, -2, "range");
  lua_pushstring(L, c->t_shift != 0 ? "binary" : "input");
  lua_setfield(L, -2, "target");
  return 1;
}

/* net:state(): weights and counters, for checkpoints (the generator's
** state is saved separately with g:state()). */
static int net_state(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  lua_settop(L, 1);
  net_weights(L);
  lua_pushinteger(L, c->cycles);
  lua_setfield(L, -2, "cycles");
  lua_pushinteger(L, c->accepted);
  lua_setfield(L, -2, "accepted");
  lua_pushinteger(L, c->ties);
  lua_setfield(L, -2, "ties");
  return 1;
}

/* net:set_state(st): restores what state() returned. */
static int net_set_state(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer cy = int_field(L, 2, "cycles", 0, 1), ac = int_field(L, 2, "accepted", 0, 1),
              ti = int_field(L, 2, "ties", 0, 1);
  luaL_argcheck(L, cy >= 0 && ac >= 0 && ti >= 0 && ac <= cy, 2, "bad counters");
  lua_settop(L, 2);
  net_set_weights(L);
  c->cycles = cy;
  c->accepted = ac;
  c->ties = ti;
  nm_nkhc_refresh(c);
  return 0;
}

/* net:refresh(): rebuilds the caches now (they are rebuilt lazily anyway). */
static int net_refresh(lua_State *L) {
  nm_nkhc_refresh(checknet(L, 1));
  return 0;
}

static int net_tostring(lua_State *L) {
  nm_nkhc *c = checknet(L, 1);
  lua_pushfstring(L, NET_T " (%s, N = %d, H = %d, S = %d, %I cycles)", kind_names[c->kind],
                  c->n, c->h, c->s, (lua_Integer)c->cycles);
  return 1;
}

/* ------------------------------------------------------------ opener */

static const luaL_Reg model_meth[] = {
  {"n", model_n}, {"k", model_k}, {"stored", model_stored}, {"seed", model_seed}, {"partners", model_partners},
  {"entry", model_entry}, {"hash_entry", model_hash_entry}, {"fitness", model_fitness},
  {"dataset", model_dataset}, {NULL, NULL}
};

static const luaL_Reg net_meth[] = {
  {"step", net_step}, {"step_naive", net_step_naive}, {"errors", net_errors},
  {"naive", net_naive}, {"test_error", net_test_error}, {"get", net_get}, {"set", net_set},
  {"perturb", net_perturb}, {"shape", net_shape}, {"weights", net_weights},
  {"set_weights", net_set_weights}, {"counts", net_counts}, {"set_counts", net_set_counts},
  {"last", net_last}, {"info", net_info}, {"state", net_state},
  {"set_state", net_set_state}, {"refresh", net_refresh}, {NULL, NULL}
};

/* nm.kernels.nk.sigmoid(z): the networks' transfer function, z rounded to
** float32, the float32 result as a number (for tests and plots). */
static int nk_sigmoid(lua_State *L) {
  float z = (float)luaL_checknumber(L, 1);
  lua_pushnumber(L, (lua_Number)nm_nk_sigmoid(z));
  return 1;
}

static const luaL_Reg nk_funcs[] = {
  {"model", model_new}, {"network", net_new}, {"sigmoid", nk_sigmoid}, {NULL, NULL}
};

static void createmeta(lua_State *L, const char *name, const luaL_Reg *meth,
                       lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, meth, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

void nm_open_nk(lua_State *L, int module, int methods) {
  (void)methods;
  createmeta(L, MODEL_T, model_meth, model_tostring);
  createmeta(L, NET_T, net_meth, net_tostring);
  luaL_newlib(L, nk_funcs);
  lua_setfield(L, module, "nk");
}

/*
** lgather.c: the neuromic.Gather Lua type, a row gather run beside the
** caller. nm.gather(rows) makes one; g:start(idx, first, B1, X1, ...)
** checks its arguments as B:index_rows(X, idx, first) does, reads the
** indices, and hands the copies (B1 <- rows of X1, B2 <- rows of X2, ...)
** to a worker of the thread pool (nm_pool_start), so that they run while
** the caller goes on; g:wait() returns when they are done. data.batches
** gathers the next minibatch this way while the current one trains. The
** rows are those index_rows copies, whoever copies them. A gather of
** fewer than NM_PAR_ELEMS elements in all (a batch of one sample) is
** copied in the caller at start: handing it over would cost more than
** the copy, and would keep a worker spinning between the caller's
** short steps.
**
** While a gather runs, the userdata's user values keep the tensors and
** their storages alive, so that neither the collector nor a close frees
** memory the worker writes or reads; wait, __gc and __close wait for it.
*/
#include <stddef.h>
#include <string.h>

#include "lnm.h"
#include "nm_math.h"
#include "nm_pool.h"

#define GATHER_T "neuromic.Gather"
#define GATHER_PAIRS 4           /* destination and source pairs per start */
#define GATHER_MAX ((int64_t)1 << 26)

typedef struct gather {
  nm_task task;
  int64_t cap, rows;
  int64_t started, on_worker;    /* starts, and those a worker ran (a part of) */
  int64_t pos;                   /* the next row to copy, of pair `pair` */
  int npairs, running, pair;
  nm_tensor dst[GATHER_PAIRS], src[GATHER_PAIRS];   /* header copies */
  int64_t idx[];                 /* cap row indices, 0-based */
} gather;

/* User values: 1 .. 4 * GATHER_PAIRS, the tensors and their storages. */
enum { PINS = 4 * GATHER_PAIRS };

static void gather_run(gather *g) {
  for (int p = 0; p < g->npairs; p++)
    nm_copy_rows(&g->dst[p], 0, &g->src[p], g->idx, g->rows);
}

/* Rows per step: a few microseconds of copying, the longest a job started
** meanwhile waits for the worker. */
#define GATHER_STEP_BYTES 32768

/* One step of the copies (nm_pool_start_steps): the next rows of a pair. */
static int gather_step(void *ctx) {
  gather *g = (gather *)ctx;
  if (g->pair >= g->npairs) return 1;
  const nm_tensor *src = &g->src[g->pair];
  int64_t row_bytes = (int64_t)nm_dtype_size(src->dtype);
  for (int d = 1; d < src->ndim; d++) row_bytes *= src->size[d];
  int64_t n = row_bytes > 0 ? GATHER_STEP_BYTES / row_bytes : g->rows;
  if (n < 1) n = 1;
  if (n > g->rows - g->pos) n = g->rows - g->pos;
  nm_copy_rows(&g->dst[g->pair], g->pos, src, g->idx + g->pos, n);
  g->pos += n;
  if (g->pos >= g->rows) {
    g->pos = 0;
    g->pair++;
  }
  return g->pair >= g->npairs;
}

/* Waits for the running gather, then lets go of its tensors. */
static void gather_finish(lua_State *L, gather *g, int self) {
  if (!g->running) return;
  nm_pool_wait(&g->task);
  g->running = 0;
  g->on_worker += g->task.on_worker;
  for (int i = 1; i <= PINS; i++) {
    lua_pushnil(L);
    lua_setiuservalue(L, self, i);
  }
}

static gather *checkgather(lua_State *L, int arg) {
  return (gather *)luaL_checkudata(L, arg, GATHER_T);
}

/* nm.gather(rows) -> a gather of at most `rows` rows per start. */
static int gather_new(lua_State *L) {
  lua_Integer cap = luaL_checkinteger(L, 1);
  luaL_argcheck(L, cap >= 1 && cap <= GATHER_MAX, 1, "rows must be in [1, 2^26]");
  size_t bytes = offsetof(gather, idx) + (size_t)cap * sizeof(int64_t);
  gather *g = (gather *)lua_newuserdatauv(L, bytes, PINS);
  memset(g, 0, offsetof(gather, idx));
  nm_task_init(&g->task);
  g->cap = cap;
  luaL_setmetatable(L, GATHER_T);
  return 1;
}

/* g:start(idx, first, B1, X1 [, B2, X2 ...]) -> g
** Row i of each Bk = row idx[first + i - 1] of Xk, as Bk:index_rows(Xk,
** idx, first), for at most 4 pairs whose B have the same number of rows
** (at most the gather's rows); the copies run beside the caller until
** g:wait(). A gather still running is waited for first. Allocates nothing. */
static int gather_start(lua_State *L) {
  gather *g = checkgather(L, 1);
  gather_finish(L, g, 1);
  lua_Integer first = luaL_checkinteger(L, 3);
  int top = lua_gettop(L);
  int npairs = (top - 3) / 2;
  luaL_argcheck(L, top >= 5 && (top - 3) % 2 == 0 && npairs <= GATHER_PAIRS, top,
                "1 to 4 pairs of tensors B, X expected after idx and first");
  nm_tensor *it = NULL;
  int64_t rows = 0;
  for (int p = 0; p < npairs; p++) {
    int bi = 4 + 2 * p;
    int64_t r = nm_gather_check(L, bi, 2, first, &it);
    if (p == 0) rows = r;
    else if (r != rows) {
      lua_pushfstring(L, "B%d has %I rows, B1 %I", p + 1, (lua_Integer)r, (lua_Integer)rows);
      return luaL_argerror(L, bi, lua_tostring(L, -1));
    }
  }
  if (rows > g->cap) {
    lua_pushfstring(L, "%I rows, more than the gather's %I", (lua_Integer)rows,
                    (lua_Integer)g->cap);
    return luaL_argerror(L, 4, lua_tostring(L, -1));
  }
  /* No destination may overlap another pair's tensors (a pair's own were
  ** checked above). */
  {
    int args[2 * GATHER_PAIRS];
    const char *names[2 * GATHER_PAIRS];
    const nm_tensor *ts[2 * GATHER_PAIRS];
    static const char *const bn[GATHER_PAIRS] = {"B1", "B2", "B3", "B4"};
    static const char *const xn[GATHER_PAIRS] = {"X1", "X2", "X3", "X4"};
    for (int p = 0; p < npairs; p++) {
      args[p] = 4 + 2 * p;
      names[p] = bn[p];
      ts[p] = nm_checktensor(L, 4 + 2 * p);
      args[npairs + p] = 5 + 2 * p;
      names[npairs + p] = xn[p];
      ts[npairs + p] = nm_checktensor(L, 5 + 2 * p);
    }
    nm_check_disjoint(L, npairs, 2 * npairs, args, names, ts);
  }
  int64_t xrows = nm_checktensor(L, 5)->size[0];
  for (int p = 1; p < npairs; p++) {
    int64_t n = nm_checktensor(L, 5 + 2 * p)->size[0];
    if (n < xrows) xrows = n;
  }
  for (int64_t i = 0; i < rows; i++)
    g->idx[i] = nm_gather_index(L, 2, it, first + i, xrows);
  /* Reading a list index may run an __index metamethod: the headers are
  ** taken, and the tensors checked open, after the indices. */
  int64_t elems = 0;
  for (int p = 0; p < npairs; p++) {
    int args[2] = {4 + 2 * p, 5 + 2 * p};
    static const char *const names[2] = {"B", "X"};
    const nm_tensor *ts[2] = {nm_totensor(L, 4 + 2 * p), nm_totensor(L, 5 + 2 * p)};
    if (ts[0] == NULL || ts[1] == NULL)
      return luaL_error(L, "start: a tensor was closed during the call");
    nm_check_open(L, 2, args, names, ts);
    g->dst[p] = *ts[0];
    g->src[p] = *ts[1];
    elems += nm_numel(ts[0]);
  }
  g->npairs = npairs;
  g->rows = rows;
  g->started++;
  if (elems < NM_PAR_ELEMS) {            /* small: copied here and now */
    gather_run(g);
    lua_settop(L, 1);
    return 1;
  }
  for (int p = 0; p < npairs; p++) {
    for (int k = 0; k < 2; k++) {        /* pin the tensor and its storage */
      int arg = 4 + 2 * p + k, slot = 1 + 4 * p + 2 * k;
      lua_pushvalue(L, arg);
      lua_setiuservalue(L, 1, slot);
      lua_getiuservalue(L, arg, 1);
      lua_setiuservalue(L, 1, slot + 1);
    }
  }
  g->pos = 0;
  g->pair = 0;
  g->running = 1;
  nm_pool_start_steps(&g->task, gather_step, g);
  lua_settop(L, 1);
  return 1;
}

/* g:wait() -> g: returns when the gather started last is done. */
static int gather_wait(lua_State *L) {
  gather_finish(L, checkgather(L, 1), 1);
  lua_settop(L, 1);
  return 1;
}

/* g:rows() -> the most rows per start. */
static int gather_rows(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)checkgather(L, 1)->cap);
  return 1;
}

/* g:counts() -> starts so far, and how many of them a worker of the pool
** ran (the others ran in the caller: one thread, or no worker free before
** the caller needed the rows); a running gather is waited for first. */
static int gather_counts(lua_State *L) {
  gather *g = checkgather(L, 1);
  gather_finish(L, g, 1);
  lua_pushinteger(L, (lua_Integer)g->started);
  lua_pushinteger(L, (lua_Integer)g->on_worker);
  return 2;
}

/* __gc and __close: a running gather is waited for. */
static int gather_release(lua_State *L) {
  gather_finish(L, checkgather(L, 1), 1);
  return 0;
}

static int gather_tostring(lua_State *L) {
  gather *g = checkgather(L, 1);
  lua_pushfstring(L, "neuromic.Gather (%I rows%s)", (lua_Integer)g->cap,
                  g->running ? ", running" : "");
  return 1;
}

static const luaL_Reg gather_meth[] = {
  {"start", gather_start}, {"wait", gather_wait}, {"rows", gather_rows},
  {"counts", gather_counts}, {NULL, NULL}};
static const luaL_Reg gather_metameth[] = {
  {"__gc", gather_release}, {"__close", gather_release}, {"__tostring", gather_tostring},
  {NULL, NULL}};

void nm_open_gather(lua_State *L, int module, int methods) {
  (void)methods;
  luaL_newmetatable(L, GATHER_T);
  luaL_setfuncs(L, gather_metameth, 0);
  luaL_newlib(L, gather_meth);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, gather_new);
  lua_setfield(L, module, "gather");
}
